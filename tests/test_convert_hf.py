"""Hugging Face ViViT / TimeSformer / VideoMAE -> vjax: the real ``transformers`` models with
random weights and non-default configs give the same logits (or, for base models, the same
last hidden state) as the converted vjax models; bad checkpoints name the parameter and both
shapes; the convert command round-trips a ``save_pretrained`` folder."""

from functools import partial

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is needed to run the transformers reference")
transformers = pytest.importorskip(
    "transformers", reason="transformers is the reference implementation of the HF models"
)

import vjax  # noqa: E402
from vjax.convert import ConversionError  # noqa: E402
from vjax.convert.hf import from_hf, vjax_model_config  # noqa: E402
from vjax.models import build_model  # noqa: E402

TOL = 1e-4
SMALL = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
SMALL.update(intermediate_size=64, image_size=32)

VIVIT = {
    "defaults": dict(SMALL, num_frames=4, tubelet_size=[2, 8, 8]),
    "wide_tubelet_no_bias": dict(
        SMALL,
        num_frames=3,
        tubelet_size=[1, 16, 16],
        hidden_size=48,
        num_attention_heads=3,
        num_hidden_layers=2,
        intermediate_size=40,
        hidden_act="gelu",
        layer_norm_eps=0.3,  # large enough that a norm ignoring it is off by more than TOL
        qkv_bias=False,
        num_channels=2,
    ),
    "long_tubelet_relu_wide_frames": dict(
        SMALL, num_frames=8, tubelet_size=[4, 8, 8], hidden_act="relu", image_size=[32, 48]
    ),
}
TIMESFORMER = {
    "divided": dict(SMALL, num_frames=4, patch_size=8, num_hidden_layers=2),
    "joint": dict(
        SMALL,
        num_frames=3,
        patch_size=16,
        attention_type="joint_space_time",
        hidden_act="quick_gelu",
        qkv_bias=False,
        layer_norm_eps=0.3,  # large enough that a norm ignoring it is off by more than TOL
    ),
    "space_only": dict(
        SMALL, num_frames=2, patch_size=8, attention_type="space_only", hidden_act="silu"
    ),
}
VIDEOMAE = {
    "mean_pooling": dict(SMALL, num_frames=4, patch_size=8, tubelet_size=2),
    "first_token_no_bias": dict(
        SMALL,
        num_frames=3,
        patch_size=16,
        tubelet_size=1,
        num_hidden_layers=2,
        use_mean_pooling=False,
        qkv_bias=False,  # transformers 5 stores it as qv_bias, 4.x as qkv_bias
        hidden_act="gelu_new",
        layer_norm_eps=1e-6,
        hidden_size=48,
        num_attention_heads=4,
    ),
    # eps large enough that a norm ignoring it is off by more than TOL
    "long_tubelet": dict(SMALL, num_frames=8, patch_size=8, tubelet_size=4, layer_norm_eps=0.3),
}


def randomized(model: "torch.nn.Module", seed: int = 0) -> "torch.nn.Module":
    """Random values in every tensor (HF initialises layer norms to 1/0 and ViViT's class
    token and position table to 0, which would hide a mix-up), in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("norm.weight") or "layernorm" in name and name.endswith("weight"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            elif tensor.ndim <= 1 or "embeddings" in name and tensor.ndim == 3:
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.3)
            else:  # kernels: variance 1 / fan_in
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * tensor[0].numel() ** -0.5)
    return model.eval()


def build(cls_name: str, config_cls: str, fields: dict, num_labels: int = 5):
    config = getattr(transformers, config_cls)(**fields, num_labels=num_labels)
    return randomized(getattr(transformers, cls_name)(config))


def random_video(config) -> np.ndarray:
    """A (B, T, H, W, C) clip of the HF config's size."""
    rng = np.random.default_rng(1)
    size = config.image_size
    height, width = (size, size) if isinstance(size, int) else size
    shape = (2, config.num_frames, height, width, config.num_channels)
    return rng.standard_normal(shape).astype(np.float32)


def hf_forward(hf, video: np.ndarray):
    with torch.no_grad():  # HF's pixel_values are (B, T, C, H, W)
        return hf(pixel_values=torch.from_numpy(video.transpose(0, 1, 4, 2, 3)))


def vjax_apply(config, variables, video, capture: bool = False):
    model = build_model(config.model, len(config.class_names))
    if not capture:
        return np.asarray(jax.jit(partial(model.apply, train=False))(variables, video))
    capture_encoder = partial(
        model.apply,
        train=False,
        capture_intermediates=lambda mdl, method: mdl.name == "encoder",
        mutable=["intermediates"],
    )
    _, state = jax.jit(capture_encoder)(variables, video)
    return np.asarray(state["intermediates"]["encoder"]["__call__"][0])


def check_logits(cls_name: str, config_cls: str, fields: dict, per_frame: bool = False):
    hf = build(cls_name, config_cls, fields)
    video = random_video(hf.config)
    expected = hf_forward(hf, video).logits.numpy()
    if per_frame:  # HF's space_only classifies every frame; vjax averages those logits
        expected = expected.reshape(video.shape[0], video.shape[1], -1).mean(axis=1)
    config, variables = from_hf(hf.state_dict(), hf.config)
    logits = vjax_apply(config, variables, video)
    assert logits.shape == expected.shape
    np.testing.assert_allclose(logits, expected, atol=TOL, rtol=0)
    assert list(config.input.clip) == [*video.shape[1:]]
    return config


@pytest.mark.parametrize("name", list(VIVIT))
def test_vivit_logits_match(name):
    config = check_logits("VivitForVideoClassification", "VivitConfig", VIVIT[name])
    assert config.model.activation == VIVIT[name].get("hidden_act", "gelu_fast")


@pytest.mark.parametrize("name", list(TIMESFORMER))
def test_timesformer_logits_match(name):
    per_frame = TIMESFORMER[name].get("attention_type") == "space_only"
    check_logits(
        "TimesformerForVideoClassification",
        "TimesformerConfig",
        TIMESFORMER[name],
        per_frame=per_frame,
    )


@pytest.mark.parametrize("name", list(VIDEOMAE))
def test_videomae_logits_match(name):
    check_logits("VideoMAEForVideoClassification", "VideoMAEConfig", VIDEOMAE[name])


def _time_major(hidden: np.ndarray, frames: int) -> np.ndarray:
    """HF TimeSformer orders tokens (space, time) after its class token; vjax (time, space)."""
    batch, length, dim = hidden.shape
    grid = hidden[:, 1:].reshape(batch, (length - 1) // frames, frames, dim).transpose(0, 2, 1, 3)
    return np.concatenate([hidden[:, :1], grid.reshape(batch, length - 1, dim)], axis=1)


@pytest.mark.parametrize(
    "cls_name, config_cls, fields",
    [
        ("VivitModel", "VivitConfig", VIVIT["wide_tubelet_no_bias"]),
        ("TimesformerModel", "TimesformerConfig", TIMESFORMER["divided"]),
        ("VideoMAEModel", "VideoMAEConfig", VIDEOMAE["mean_pooling"]),
        ("VideoMAEModel", "VideoMAEConfig", VIDEOMAE["first_token_no_bias"]),
    ],
)
def test_base_model_hidden_state_matches(cls_name, config_cls, fields):
    hf = build(cls_name, config_cls, fields)
    video = random_video(hf.config)
    expected = hf_forward(hf, video).last_hidden_state.numpy()
    if cls_name == "TimesformerModel":
        expected = _time_major(expected, video.shape[1])
    config, variables = from_hf(hf.state_dict(), hf.config)
    hidden = vjax_apply(config, variables, video, capture=True)
    np.testing.assert_allclose(hidden, expected, atol=TOL, rtol=0)
    assert "base model" in config.source
    # The zero classifier a base model gets predicts uniform logits.
    np.testing.assert_array_equal(vjax_apply(config, variables, video), 0.0)


def _legacy_names(state_dict: dict) -> dict:
    """transformers 4.x names (those of the Hub checkpoints) of a 5.x ViViT/VideoMAE dict."""
    renames = [
        ("layers.", "encoder.layer."),
        ("attention.q_proj", "attention.attention.query"),
        ("attention.k_proj", "attention.attention.key"),
        ("attention.v_proj", "attention.attention.value"),
        ("attention.o_proj", "attention.output.dense"),
        ("mlp.fc1", "intermediate.dense"),
        ("mlp.fc2", "output.dense"),
        ("attention.attention.query.bias", "attention.attention.q_bias"),
        ("attention.attention.value.bias", "attention.attention.v_bias"),
    ]
    out = {}
    for key, value in state_dict.items():
        for old, new in renames:
            key = key.replace(old, new)
        out[key] = value
    return out


@pytest.mark.parametrize(
    "cls_name, config_cls, fields",
    [
        ("VivitForVideoClassification", "VivitConfig", VIVIT["defaults"]),
        ("VideoMAEForVideoClassification", "VideoMAEConfig", VIDEOMAE["mean_pooling"]),
    ],
)
def test_transformers_4_names_convert_the_same(cls_name, config_cls, fields):
    hf = build(cls_name, config_cls, fields)
    legacy = _legacy_names(hf.state_dict())
    if legacy.keys() == hf.state_dict().keys():
        pytest.skip("the installed transformers already uses the 4.x names (tested throughout)")
    video = random_video(hf.config)
    config, variables = from_hf(legacy, hf.config.to_dict())
    np.testing.assert_allclose(
        vjax_apply(config, variables, video), hf_forward(hf, video).logits.numpy(), atol=TOL
    )


def test_bad_checkpoints_name_the_parameter_and_both_shapes():
    hf = build("VivitForVideoClassification", "VivitConfig", VIVIT["defaults"])
    state = dict(hf.state_dict())
    missing = {k: v for k, v in state.items() if k != "vivit.layers.0.mlp.fc1.bias"}
    with pytest.raises(ConversionError, match=r"layers\.0\.mlp\.fc1\.bias: missing"):
        from_hf(missing, hf.config)
    wider = dict(VIVIT["defaults"], intermediate_size=80)
    with pytest.raises(
        ConversionError,
        match=r"mlp\.fc1\.weight \(for encoder/block00/mlp/fc1/kernel\): source has shape "
        r"\(64, 32\), model expects \(80, 32\)",
    ):
        from_hf(state, transformers.VivitConfig(**wider, num_labels=5))
    with pytest.raises(ConversionError, match=r"attention/query_bias: not in the model"):
        from_hf(state, transformers.VivitConfig(**VIVIT["defaults"], qkv_bias=False, num_labels=5))
    extra = dict(state, **{"vivit.layers.0.extra.weight": torch.zeros(3)})
    with pytest.raises(ConversionError, match=r"layers\.0\.extra\.weight"):
        from_hf(extra, hf.config)
    other = build("TimesformerForVideoClassification", "TimesformerConfig", TIMESFORMER["divided"])
    with pytest.raises(ConversionError, match="missing from the checkpoint"):
        from_hf(other.state_dict(), hf.config)


def test_unsupported_hf_options_are_named():
    vivit = transformers.VivitConfig(**VIVIT["defaults"]).to_dict()
    with pytest.raises(ConversionError, match="hidden_act='mish' has no vjax equivalent"):
        vjax_model_config(dict(vivit, hidden_act="mish"))
    with pytest.raises(ConversionError, match="patch 8x16 is not square"):
        vjax_model_config(dict(vivit, tubelet_size=[2, 8, 16]))
    with pytest.raises(ConversionError, match="unsupported HF model_type 'bert'"):
        from_hf({}, {"model_type": "bert"})


def test_convert_command_round_trips_a_saved_model(tmp_path, capsys):
    from vjax.convert.cli import main
    from vjax.deploy.signature import sampling

    hf = build("TimesformerForVideoClassification", "TimesformerConfig", TIMESFORMER["divided"])
    hf.config.id2label = {i: f"action_{i}" for i in range(5)}
    hf.save_pretrained(str(tmp_path / "hf"))
    out = str(tmp_path / "vjax")
    assert main(["--from=hf", f"--src={tmp_path / 'hf'}", f"--out={out}"]) == 0
    assert "does not say how the model's frames were sampled" in capsys.readouterr().out
    config, model, variables = vjax.load(out)
    assert sampling(config, [4, 16, 16, 3])["frame_stride"] == 1  # what HF's config implies
    # How the weights were trained, given: what vjax predict and eval then cut clips by.
    flags = ["--frame_stride=4", "--fps=30", "--sampling=random"]
    assert main(["--from=hf", f"--src={tmp_path / 'hf'}", f"--out={out}_4", *flags]) == 0
    assert "4 frames at stride 4, 30 fps" in capsys.readouterr().out
    recorded = sampling(vjax.load(f"{out}_4")[0], [2, 16, 16, 3])
    assert (recorded["frame_stride"], recorded["fps"], recorded["sampling"]) == (4, 30, "random")
    main(["--from=hf", f"--src={tmp_path / 'hf'}", f"--out={out}_tsn", "--sampling=tsn"])
    assert "one per equal part of the video" in capsys.readouterr().out
    assert sampling(vjax.load(f"{out}_tsn")[0], [2, 16, 16, 3])["sampling"] == "tsn"
    assert list(config.class_names) == [f"action_{i}" for i in range(5)]
    video = random_video(hf.config)
    logits = jax.jit(partial(model.apply, train=False))(variables, video)
    np.testing.assert_allclose(logits, hf_forward(hf, video).logits.numpy(), atol=TOL, rtol=0)
    with pytest.raises(ConversionError, match="--arch=VivitModel but the checkpoint"):
        main(["--from=hf", "--arch=VivitModel", f"--src={tmp_path / 'hf'}", f"--out={out}2"])


def test_every_weight_file_format_converts_alike(tmp_path):
    from safetensors.torch import save_file

    hf = build("VideoMAEForVideoClassification", "VideoMAEConfig", VIDEOMAE["mean_pooling"])
    state = hf.state_dict()
    _, expected = from_hf(state, hf.config)
    save_file(dict(state), str(tmp_path / "weights.safetensors"))
    torch.save(state, str(tmp_path / "pytorch_model.bin"))
    hf.save_pretrained(str(tmp_path / "sharded"), max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    numpy_state = {k: v.numpy() for k, v in state.items()}
    for source, config in (
        (str(tmp_path / "weights.safetensors"), hf.config),
        (str(tmp_path / "pytorch_model.bin"), hf.config.to_dict()),
        (str(tmp_path / "sharded"), None),
        (numpy_state, hf.config),
    ):
        _, variables = from_hf(source, config)
        jax.tree.map(np.testing.assert_array_equal, variables, expected)


def test_videomae_pretraining_checkpoint_gives_its_encoder():
    hf = build("VideoMAEForPreTraining", "VideoMAEConfig", VIDEOMAE["mean_pooling"])
    video = random_video(hf.config)
    expected = hf_forward(hf.videomae, video).last_hidden_state.numpy()
    config, variables = from_hf(hf.state_dict(), hf.config)
    assert "decoder.*, encoder_to_decoder.*, mask_token*" in config.source
    hidden = vjax_apply(config, variables, video, capture=True)
    np.testing.assert_allclose(hidden, expected, atol=TOL, rtol=0)


def test_videomae_with_a_learned_key_bias_converts(tmp_path):
    """Some transformers 5 releases give VideoMAE's key projection a learned bias (the
    installed one may not: the model is built that way here); the folder it saves converts
    into vjax's full q/k/v bias with equal logits."""
    hf = build("VideoMAEForVideoClassification", "VideoMAEConfig", VIDEOMAE["mean_pooling"])
    gen = torch.Generator().manual_seed(3)
    for layer in hf.videomae.encoder.layer:
        key = layer.attention.attention.key
        if key.bias is None:  # the installed transformers' key has no bias: give it one
            biased = torch.nn.Linear(key.in_features, key.out_features, bias=True)
            biased.weight = key.weight
            layer.attention.attention.key = key = biased
        with torch.no_grad():
            key.bias.copy_(torch.randn(key.out_features, generator=gen))
    hf.save_pretrained(str(tmp_path / "hf"))
    config, variables = from_hf(str(tmp_path / "hf"))  # what vjax convert --from=hf reads
    assert config.model.qkv_bias == "qkv"
    hf_bias = hf.videomae.encoder.layer[0].attention.attention.key.bias.detach().numpy()
    key_bias = variables["params"]["encoder"]["block00"]["attention"]["key_bias"]
    np.testing.assert_array_equal(np.asarray(key_bias).reshape(-1), hf_bias)
    video = random_video(hf.config)
    expected = hf_forward(hf, video).logits.numpy()
    np.testing.assert_allclose(vjax_apply(config, variables, video), expected, atol=TOL, rtol=0)


PRETRAINING = {
    "tubelet_2_normalised_targets": dict(
        VIDEOMAE["mean_pooling"],
        decoder_hidden_size=16,
        decoder_num_hidden_layers=2,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=24,
    ),
    "tubelet_1_raw_pixels_encoder_norm": dict(
        VIDEOMAE["first_token_no_bias"],
        num_hidden_layers=1,
        norm_pix_loss=False,
        decoder_hidden_size=24,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=3,
        decoder_intermediate_size=40,
    ),
}


@pytest.mark.parametrize("name", list(PRETRAINING))
def test_videomae_pretraining_loss_and_pixels_match(name, tmp_path):
    from vjax.convert.cli import main
    from vjax.convert.common import IMAGENET_MEAN, IMAGENET_STD
    from vjax.objectives import masked_pixel_losses

    hf = build("VideoMAEForPreTraining", "VideoMAEConfig", PRETRAINING[name])
    hf.save_pretrained(str(tmp_path / "hf"))
    assert main(["--from=hf", f"--src={tmp_path / 'hf'}", f"--out={tmp_path / 'mae'}"]) == 0
    config, model, variables = vjax.load(str(tmp_path / "mae"))
    assert config.model.name == "videomae_pretraining"
    assert config.model.norm_pix_loss == hf.config.norm_pix_loss

    video = random_video(hf.config)  # normalised input; HF's targets un-normalise it
    tokens = (video.shape[1] // hf.config.tubelet_size) * (32 // hf.config.patch_size) ** 2
    hidden = tokens * 3 // 4
    rng = np.random.default_rng(2)
    mask = np.stack([rng.permutation(tokens) < hidden for _ in range(len(video))])
    with torch.no_grad():
        out = hf(
            pixel_values=torch.from_numpy(video.transpose(0, 1, 4, 2, 3)),
            bool_masked_pos=torch.from_numpy(mask),
        )
    pixels = video * np.float32(IMAGENET_STD) + np.float32(IMAGENET_MEAN)
    losses, predicted, _ = jax.jit(
        lambda v, x, p, m: masked_pixel_losses(model, v, x, p, m, hidden=hidden)
    )(variables, video, pixels, mask)
    np.testing.assert_allclose(predicted, out.logits.numpy(), atol=TOL, rtol=0)
    np.testing.assert_allclose(losses.mean(), out.loss.item(), atol=TOL, rtol=0)

    # The same folder converts to an encoder-only classifier for fine-tuning.
    argv = ["--from=hf", "--arch=VideoMAEModel", f"--src={tmp_path / 'hf'}", f"--out={tmp_path}/c"]
    assert main(argv) == 0
    config, _, variables = vjax.load(str(tmp_path / "c"))
    expected = hf_forward(hf.videomae, video).last_hidden_state.numpy()
    hidden_state = vjax_apply(config, variables, video, capture=True)
    np.testing.assert_allclose(hidden_state, expected, atol=TOL, rtol=0)


def test_videomae_norms_take_hugging_faces_epsilons():
    """HF's VideoMAE fc_norm and decoder norm are nn.LayerNorm(size): torch's 1e-5, not the
    encoder's layer_norm_eps (values no logits test of random weights can tell apart)."""
    sizes = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                 image_size=16, patch_size=8, num_frames=2, tubelet_size=2)  # fmt: skip
    config = transformers.VideoMAEConfig(**sizes, num_labels=3)
    hf = transformers.VideoMAEForVideoClassification(config).eval()
    assert from_hf(hf.state_dict(), hf.config)[0].model.fc_norm_eps == hf.fc_norm.eps == 1e-5
    decoder = dict(decoder_hidden_size=16, decoder_num_hidden_layers=1,
                   decoder_num_attention_heads=2, decoder_intermediate_size=32)  # fmt: skip
    config = transformers.VideoMAEConfig(**sizes, **decoder, norm_pix_loss=False)
    hf = transformers.VideoMAEForPreTraining(config).eval()
    converted = from_hf(hf.state_dict(), hf.config, pretraining=True)[0]
    assert converted.model.decoder_norm_eps == hf.decoder.norm.eps == 1e-5
    assert converted.model.norm_pix_loss is False  # the checkpoint's choice


def test_timesformer_is_normalised_as_its_checkpoints():
    """TimeSformer's configs (DATA.MEAN 0.45, DATA.STD 0.225, as the HF checkpoints'
    preprocessor_config.json), not ImageNet's statistics."""
    config = transformers.TimesformerConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        image_size=16, patch_size=8, num_frames=2, num_labels=3,
    )  # fmt: skip
    hf = transformers.TimesformerForVideoClassification(config).eval()
    converted = from_hf(hf.state_dict(), hf.config)[0]
    np.testing.assert_allclose(converted.input.mean, [0.45] * 3)
    np.testing.assert_allclose(converted.input.std, [0.225] * 3)


def _layer_norm_epsilons(model, *inputs, **kwargs):
    """{LayerNorm name: epsilon} of every layer norm the model applies (traced only)."""
    import flax.linen as nn
    import jax

    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), *inputs, **kwargs))
    seen = {}

    def record(next_fun, args, kw, context):
        if isinstance(context.module, nn.LayerNorm):
            seen.setdefault(context.module.name, set()).add(context.module.epsilon)
        return next_fun(*args, **kw)

    with nn.intercept_methods(record):
        jax.eval_shape(lambda v: model.apply(v, *inputs, **kwargs), variables)
    return seen


def test_videomae_models_apply_hugging_faces_norm_epsilons():
    """The converted VideoMAE nets apply HF's epsilons: fc_norm and the decoder norm are
    torch's nn.LayerNorm default (hf.fc_norm.eps, hf.decoder.norm.eps), the encoder's norms
    config.layer_norm_eps. (The config fields alone are in the suite; this checks the layers
    use them.)"""
    import jax.numpy as jnp
    import transformers

    from vjax.convert.hf import from_hf
    from vjax.models import build_model

    sizes = dict(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=16,
        patch_size=8,
        num_frames=2,
        tubelet_size=2,
        layer_norm_eps=1e-8,
    )
    video = jnp.zeros((1, 2, 16, 16, 3))
    hf = transformers.VideoMAEForVideoClassification(
        transformers.VideoMAEConfig(**sizes, num_labels=3)
    ).eval()
    config = from_hf(hf.state_dict(), hf.config)[0]
    eps = _layer_norm_epsilons(build_model(config.model, 3), video, train=False)
    assert eps.pop("fc_norm") == {hf.fc_norm.eps}
    assert set().union(*eps.values()) == {hf.config.layer_norm_eps}
    decoder = dict(
        decoder_hidden_size=16,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
    )
    hf = transformers.VideoMAEForPreTraining(
        transformers.VideoMAEConfig(**sizes, **decoder, norm_pix_loss=False)
    ).eval()
    config = from_hf(hf.state_dict(), hf.config, pretraining=True)[0]
    eps = _layer_norm_epsilons(build_model(config.model, 3), video, train=False)
    assert eps.pop("decoder_norm") == {hf.decoder.norm.eps}
    assert set().union(*eps.values()) == {hf.config.layer_norm_eps}
