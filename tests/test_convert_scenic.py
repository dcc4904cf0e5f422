"""scenic ViViT checkpoints -> vjax, for every attention type scenic ships.

There is no scenic package here, so this checks naming and shape fidelity to scenic's
published layout, not scenic's numerics: each test builds a vjax model with random weights,
writes its parameters in scenic's exact naming (the rules of ``projects/vivit/model.py`` and
``model_lib/layers/attention_layers.py``, spelt out independently in :func:`to_scenic`),
serialises them as a flax msgpack train state, converts that back and requires bitwise-equal
logits. (That the layers compute what scenic's compute is tested with the models.)
"""

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

from vjax.convert import ConversionError
from vjax.convert.scenic import from_scenic
from vjax.errors import NotFoundError
from vjax.models import build_model

D, HEADS, MLP, PATCH, IMAGE, FRAMES, TUBELET, CLASSES = 32, 2, 64, 16, 32, 4, 2, 3


def _block(block: dict, variant: str) -> dict:
    """One vjax encoder block in scenic's names (EncoderBlock or the factorised
    self-attention block)."""
    if variant == "factorised_self_attention":
        names = {
            "norm_time": "LayerNorm_time",
            "attention_time": "MultiHeadDotProductAttention_time",
            "norm1": "LayerNorm_space",
            "attention": "MultiHeadDotProductAttention_space",
            "norm2": "LayerNorm_mlp",
            "mlp": "MlpBlock",
        }
    else:
        names = {
            "norm1": "LayerNorm_0",
            "attention": "MultiHeadDotProductAttention_0",
            "norm2": "LayerNorm_1",
            "mlp": "MlpBlock_0",
        }
    out = {}
    for ours, theirs in names.items():
        p = block[ours]
        if ours.startswith("norm"):
            out[theirs] = {"scale": p["scale"], "bias": p["bias"]}
        elif ours == "mlp":
            out[theirs] = {"Dense_0": dict(p["fc1"]), "Dense_1": dict(p["fc2"])}
        else:  # flax MultiHeadDotProductAttention: query/key/value/out DenseGeneral
            out[theirs] = {
                part: {"kernel": p[f"{part}_kernel"], "bias": p[f"{part}_bias"]}
                for part in ("query", "key", "value", "out")
            }
    return out


def _transformer(params: dict, prefix: str, variant: str, cls_row: np.ndarray | None) -> dict:
    encoder = params[f"{prefix}encoder"]
    tree = {
        f"encoderblock_{int(name[5:])}": _block(block, variant)
        for name, block in encoder.items()
        if name.startswith("block")
    }
    tree["encoder_norm"] = dict(encoder["encoder_norm"])
    table = params[f"{prefix}pos_embedding"]
    if cls_row is not None:  # scenic adds its table after prepending the class token
        table = np.concatenate([cls_row, table], axis=1)
    tree["posembed_input"] = {"pos_embedding": table}
    return tree


def to_scenic(params: dict, variant: str, cls: bool, two_d: bool = False) -> dict:
    """vjax ViViT parameters in scenic's ``ViViT`` / ``SpaceTimeViViT`` naming."""
    params = jax.tree.map(np.asarray, params)
    kernel = params["embedding"]["conv"]["kernel"]
    out = {
        "embedding": {
            "kernel": kernel[0] if two_d else kernel,
            "bias": params["embedding"]["conv"]["bias"],
        },
        "output_projection": dict(params["classifier"]["head"]),
    }
    row = np.full((1, 1, D), 0.25, np.float32) if cls else None
    stages = (
        [
            ("", "SpatialTransformer", "cls_SpatialTransformer"),
            ("temporal_", "TemporalTransformer", "cls_TemporalTransformer"),
        ]
        if variant in ("factorised_encoder", "average_pool")
        else [("", "Transformer", "cls")]
    )
    for prefix, name, cls_name in stages:
        if f"{prefix}encoder" not in params:
            continue
        out[name] = _transformer(params, prefix, variant, row)
        if cls:  # the vjax class token is scenic's plus that row (exact: see dyadic())
            out[cls_name] = params[f"{prefix}cls"] - row
    return out


def random_params(model, video, seed: int = 0) -> dict:
    """Random weights for ``model`` (NumPy, from ``jax.eval_shape``: no slow init), every
    one a multiple of 1/64 so that the class-token row folding, ``(cls - row) + row``, is
    exact in float32 and the logits can be compared bitwise."""
    rng = np.random.default_rng(seed)
    shapes = nn.meta.unbox(
        jax.eval_shape(lambda: model.init(jax.random.key(0), video, train=False))
    )["params"]

    def draw(path, leaf):
        name = path[-1].key
        scale = np.prod(leaf.shape[:-1]) ** -0.5 if "kernel" in name else 0.3
        value = rng.standard_normal(leaf.shape) * scale + (name == "scale")
        return (np.round(value * 64) / 64).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def scenic_config(attention: dict, classifier: str, spatial_temporal: bool = False, **model):
    size = {"num_heads": HEADS, "num_layers": 1, "mlp_dim": MLP}
    config = {
        "model": {
            "hidden_size": D,
            "patches": {"size": (PATCH, PATCH, TUBELET)},
            "attention_config": attention,
            "classifier": classifier,
            "representation_size": None,
            "temporal_encoding_config": {"method": "3d_conv"},
            **model,
        },
        "dataset_configs": {"num_frames": FRAMES, "crop_size": IMAGE},
    }
    if spatial_temporal:
        config["model"]["spatial_transformer"] = size
        config["model"]["temporal_transformer"] = dict(size, num_layers=2)
    else:
        config["model"].update(size)
    return config


CASES = {
    "spacetime_token": ({"type": "spacetime"}, "token", {"variant": "spacetime"}),
    "spacetime_gap": ({"type": "spacetime"}, "gap", {"variant": "spacetime", "pooling": "gap"}),
    "factorised_encoder": (
        {"type": "factorized_encoder"},
        "token",
        {"variant": "factorised_encoder", "temporal_layers": 2},
    ),
    "average_pool": (
        {"type": "factorized_encoder", "spatial_only_baseline": True},
        "gap",
        {"variant": "average_pool", "pooling": "gap"},
    ),
    "self_attention_time_space": (
        {"type": "factorized_self_attention_block", "attention_order": "time_space"},
        "gap",
        {"variant": "factorised_self_attention"},
    ),
    "self_attention_space_time": (
        {"type": "factorized_self_attention_block", "attention_order": "space_time"},
        "gap",
        {"variant": "factorised_self_attention", "attention_order": "space_time"},
    ),
    "dot_product": (
        {"type": "factorized_dot_product_attention"},
        "gap",
        {"variant": "factorised_dot_product"},
    ),
}


def vjax_model(fields: dict, tubelet: int = TUBELET, num_classes=CLASSES):
    model = {
        "name": "vivit",
        "size": f"B/{PATCH}x{tubelet}",
        "hidden_size": D,
        "num_layers": 1,
        "num_heads": HEADS,
        "mlp_dim": MLP,
        "activation": "gelu_tanh",
        **fields,
    }
    if fields["variant"] == "factorised_encoder":
        model["temporal_layers"] = 2
    return build_model(model, num_classes)


def roundtrip(tmp_path, fields, config, two_d=False):
    model = vjax_model(fields, 1 if two_d else TUBELET)
    video = np.random.default_rng(1).standard_normal((2, FRAMES, IMAGE, IMAGE, 3))
    video = video.astype(np.float32)
    params = random_params(model, video)
    cls = model.resolved_pooling == "cls"
    state = {
        "global_step": 7,
        "optimizer": {"target": to_scenic(params, fields["variant"], cls, two_d)},
    }
    path = tmp_path / "checkpoint_7"
    path.write_bytes(serialization.msgpack_serialize(state))
    config_out, variables = from_scenic(str(path), config)
    converted = build_model(config_out.model, CLASSES)
    expected = jax.jit(partial(model.apply, train=False))({"params": params}, video)
    logits = jax.jit(partial(converted.apply, train=False))(variables, video)
    np.testing.assert_array_equal(logits, expected)
    assert list(config_out.input.clip) == [FRAMES, IMAGE, IMAGE, 3]
    return config_out


@pytest.mark.parametrize("case", list(CASES))
def test_every_scenic_attention_type_converts_exactly(tmp_path, case):
    attention, classifier, fields = CASES[case]
    spatial_temporal = attention["type"] == "factorized_encoder"
    config = scenic_config(attention, classifier, spatial_temporal)
    out = roundtrip(tmp_path, fields, config)
    assert out.model.variant == fields["variant"]


def test_temporal_sampling_reads_2d_patches(tmp_path):
    """scenic's temporal_sampling embeds 2D patches: its patches.size is (h, w) (it refuses
    three numbers), and so do we."""
    config = scenic_config({"type": "spacetime"}, "token")
    config["model"]["temporal_encoding_config"] = {
        "method": "temporal_sampling",
        "n_sampled_frames": FRAMES,
    }
    config["model"]["patches"]["size"] = (PATCH, PATCH)
    roundtrip(tmp_path, {"variant": "spacetime"}, config, two_d=True)
    config["model"]["patches"]["size"] = (PATCH, PATCH, 1)
    with pytest.raises(ConversionError, match=r"temporal_sampling takes patches.size \(h, w\)"):
        roundtrip(tmp_path, {"variant": "spacetime"}, config, two_d=True)


def test_a_checkpoint_folder_scenic_saves_with_orbax_converts(tmp_path):
    """scenic saves with flax.training.checkpoints, which writes a checkpoint_N folder (Orbax)
    with today's flax; the released models are msgpack files (the other tests)."""
    from flax.training import checkpoints

    model = vjax_model({"variant": "spacetime"})
    video = np.random.default_rng(1).standard_normal((2, FRAMES, IMAGE, IMAGE, 3)).astype("f4")
    params = random_params(model, video)
    state = {"global_step": 3, "optimizer": {"target": to_scenic(params, "spacetime", True)}}
    folder = checkpoints.save_checkpoint(str(tmp_path / "run"), state, step=3)
    config = scenic_config({"type": "spacetime"}, "token")
    expected = jax.jit(partial(model.apply, train=False))({"params": params}, video)
    for path in (folder, str(tmp_path / "run")):  # the step's folder, or the run's
        config_out, variables = from_scenic(path, config)
        converted = build_model(config_out.model, CLASSES)
        logits = jax.jit(partial(converted.apply, train=False))(variables, video)
        np.testing.assert_array_equal(logits, expected)
    with pytest.raises(NotFoundError, match="holds no checkpoint_N"):
        from_scenic(str(tmp_path), config)


def test_the_converted_folder_samples_frames_at_the_configs_stride(tmp_path):
    """``dataset_configs.stride`` (scenic's ViViT-B: 2) is what ``vjax predict`` cuts a file
    by; the folder recorded stride 1. Without it, 1."""
    from vjax.deploy.signature import sampling

    attention, classifier, fields = CASES["factorised_encoder"]
    config = scenic_config(attention, classifier, spatial_temporal=True)
    config["dataset_configs"]["stride"] = 2
    out = roundtrip(tmp_path, fields, config)
    assert sampling(out, list(out.input.clip))["frame_stride"] == 2
    del config["dataset_configs"]["stride"]
    assert roundtrip(tmp_path, fields, config).input.frame_stride == 1


def test_clip_is_inferred_from_the_tables_when_the_data_config_is_absent(tmp_path):
    attention, classifier, fields = CASES["factorised_encoder"]
    config = scenic_config(attention, classifier, spatial_temporal=True)
    del config["dataset_configs"]
    roundtrip(tmp_path, fields, config["model"])


def test_bad_checkpoints_and_options_are_named(tmp_path):
    model = vjax_model({"variant": "spacetime"})
    video = jnp.zeros((1, FRAMES, IMAGE, IMAGE, 3))
    params = random_params(model, video)
    tree = to_scenic(params, "spacetime", cls=True)
    config = scenic_config({"type": "spacetime"}, "token")
    wide = scenic_config({"type": "spacetime"}, "token", mlp_dim=80)
    wide["model"]["mlp_dim"] = 80
    with pytest.raises(
        ConversionError,
        match=r"mlp/fc1/kernel: source has shape \(32, 64\), "
        r"model expects \(32, 80\)",
    ):
        from_scenic(tree, wide)
    del tree["Transformer"]["encoderblock_0"]["MlpBlock_0"]["Dense_1"]["bias"]
    with pytest.raises(ConversionError, match=r"encoderblock_0/MlpBlock_0/Dense_1/bias: missing"):
        from_scenic({"params": tree}, config)
    for option, message in (
        ({"classifier": "gmp"}, "classifier='gmp'"),
        ({"representation_size": 16}, "representation_size"),
        ({"attention_config": {"type": "axial"}}, "type='axial'"),
    ):
        bad = scenic_config({"type": "spacetime"}, "token")
        bad["model"].update(option)
        with pytest.raises(ConversionError, match=message):
            from_scenic(tree, bad)


def test_convert_command_reads_the_scenic_config_file(tmp_path):
    from vjax.convert.scenic import from_cli

    attention, classifier, fields = CASES["self_attention_space_time"]
    config = scenic_config(attention, classifier)
    model = vjax_model(fields)
    params = random_params(model, np.zeros((1, FRAMES, IMAGE, IMAGE, 3), np.float32))
    path = tmp_path / "checkpoint_1"
    path.write_bytes(
        serialization.msgpack_serialize({"params": to_scenic(params, fields["variant"], False)})
    )
    (tmp_path / "scenic_config.py").write_text(
        f"import ml_collections\n\n\ndef get_config():\n"
        f"    return ml_collections.ConfigDict({config!r})\n"
    )
    converted, variables = from_cli(str(path), None, str(tmp_path / "scenic_config.py"))
    assert converted.model.attention_order == "space_time"
    jax.tree.map(np.testing.assert_array_equal, variables, {"params": params})


def test_multihead_checkpoint_becomes_one_head_per_split(tmp_path):
    """scenic's Epic-Kitchens model (``vivit_multihead_classification``): one
    ``output_projection`` over the concatenated splits (noun first in its config) -> vjax heads
    named by ``split_names``, saved and reopened by ``vjax.load`` with per-task class names."""
    import vjax
    from vjax.convert.common import save_converted

    attention, classifier, fields = CASES["factorised_encoder"]
    config = scenic_config(attention, classifier, spatial_temporal=True)
    config["dataset_configs"].update(class_splits=[4, 3], split_names=["noun", "verb"])
    model = vjax_model(fields, num_classes={"noun": 4, "verb": 3})
    video = np.random.default_rng(2).standard_normal((2, FRAMES, IMAGE, IMAGE, 3))
    video = video.astype(np.float32)
    params = random_params(model, video)
    heads = params["classifier"]
    single = {**params, "classifier": {"head": {
        k: np.concatenate([heads["noun"][k], heads["verb"][k]], axis=-1) for k in ("kernel", "bias")
    }}}  # fmt: skip
    tree = to_scenic(single, "factorised_encoder", cls=True)
    converted, variables = from_scenic(tree, config)
    assert dict(converted.class_names)["verb"] == ["verb_0", "verb_1", "verb_2"]
    multihead = build_model(converted.model, {"noun": 4, "verb": 3})
    got = jax.jit(partial(multihead.apply, train=False))(variables, video)
    want = jax.jit(partial(model.apply, train=False))({"params": params}, video)
    for task in ("noun", "verb"):
        np.testing.assert_array_equal(got[task], want[task])

    _, loaded, loaded_variables = vjax.load(
        save_converted(str(tmp_path / "out"), converted, variables)
    )
    heads = jax.eval_shape(partial(loaded.apply, train=False), loaded_variables, video)
    assert set(heads) == {"noun", "verb"}
    config["dataset_configs"]["class_splits"] = [4, 4]
    with pytest.raises(ConversionError, match=r"class_splits \[4, 4\].*7 outputs"):
        from_scenic(tree, config)


def test_factorised_self_attention_without_an_order_is_scenics_time_space(tmp_path):
    """scenic's EncoderFactorizedSelfAttentionBlock defaults attention_order to 'time_space'
    (projects/vivit/model.py): a config that leaves it out converts to time-then-space."""

    config = scenic_config({"type": "factorized_self_attention_block"}, "gap")
    out = roundtrip(
        tmp_path, {"variant": "factorised_self_attention", "attention_order": "time_space"}, config
    )
    assert out.model.attention_order == "time_space"


def test_factorized_self_attention_alias_is_model_3(tmp_path):
    """vjax accepts 'factorized_self_attention' as another spelling of scenic's
    'factorized_self_attention_block' (model 3): it must read model 3's weights, not model 4's."""

    config = scenic_config(
        {"type": "factorized_self_attention", "attention_order": "time_space"}, "gap"
    )
    out = roundtrip(tmp_path, {"variant": "factorised_self_attention"}, config)
    assert out.model.variant == "factorised_self_attention"


@pytest.mark.parametrize(
    "classifier, fields",
    [("token", {"variant": "spacetime"}), ("gap", {"variant": "spacetime", "pooling": "gap"})],
)
def test_frames_are_inferred_from_a_joint_table_and_the_crop(tmp_path, classifier, fields):
    """A model-1 config that names the crop but not num_frames: the table holds
    (T / t) * (crop / patch)^2 tokens (plus the class token), so T = t * tokens / grid
    (hand count: 4 frames, tubelet 2, 32 / 16 -> 2 x 4 = 8 tokens)."""

    config = scenic_config({"type": "spacetime"}, classifier)
    del config["dataset_configs"]["num_frames"]
    out = roundtrip(tmp_path, fields, config)  # asserts clip == [4, 32, 32, 3]
    assert list(out.input.clip) == [4, 32, 32, 3]


def test_converted_config_zero_centres_pixels_as_scenics_video_pipeline(tmp_path):
    """scenic's ViViT input pipeline (dmvr, zero_centering) maps pixels to [-1, 1]
    (from knowledge of scenic's video_tfrecord_dataset): black -> -1 and white -> +1
    through vjax's own normalize_video of uint8 frames."""
    import jax.numpy as jnp

    from vjax.step import normalize_video

    config = scenic_config({"type": "spacetime"}, "token")
    out = roundtrip(tmp_path, {"variant": "spacetime"}, config)
    frames = jnp.asarray(np.array([0, 255], np.uint8).reshape(2, 1, 1, 1, 1) * np.ones(3, np.uint8))
    got = np.asarray(normalize_video(frames, out.input.mean, out.input.std, jnp.float32))
    np.testing.assert_allclose(got[0], -1.0, atol=1e-6)
    np.testing.assert_allclose(got[1], 1.0, atol=1e-6)
