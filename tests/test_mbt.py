"""MBT and AST (vjax.models.mbt / ast) and the multi-modal input through the step: the
bottleneck property, the paper's logit averaging, missing audio, the sharded train step
against one device, checkpoints and ``vjax.load`` of an MBT, AST's surgery from an image ViT,
and the start-up error of an audio model on data without audio."""

import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import REPO
from flax import traverse_util
from test_sharding import _one_step, assert_same_step

import vjax
from vjax import checkpoint, parallel, train
from vjax.config_utils import ConfigError, apply_overrides, config_to_json, load_config
from vjax.convert import pretrained_config, save_converted
from vjax.convert.surgery import token_grid
from vjax.distill import load_teacher
from vjax.flops import count_params
from vjax.models import build_model, model_modalities
from vjax.models.layers import TubeletEmbed
from vjax.parity import PublishedSize, format_table, measure
from vjax.preflight import check_config
from vjax.step import model_input

CONFIG = os.path.join(REPO, "configs", "mbt.py")
CLIP = (4, 16, 16, 3)  # the demo's tiny clip
CLASSES = ["a", "b", "c", "d"]
# Width 16, two layers; 2x8x8 tubelets (8 video tokens), 8x8 spectrogram patches (4 tokens).
TINY = dict(size="Ti/8x2", hidden_size=16, num_layers=2, num_heads=2, mlp_dim=32)


def _mbt(**fields):
    return build_model({"name": "mbt", **TINY, **fields}, 4)


def _inputs(seed: int, batch: int = 2) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "video": jnp.asarray(rng.normal(size=(batch, *CLIP)), jnp.float32),
        "audio": jnp.asarray(rng.normal(size=(batch, 16, 16)), jnp.float32),
    }


@functools.lru_cache
def _runner(model, train_mode, key):
    """The jitted apply of ``_run``, one per model (modules compare by their fields) and mode:
    calls of the same shapes reuse its compiled program."""

    @jax.jit
    def run(variables, inputs):
        return model.apply(
            variables, inputs, train=train_mode, capture_intermediates=True,
            rngs={"dropout": jax.random.key(key)},
        )  # fmt: skip

    return run


def _run(model, variables, inputs, train_mode=False, key=0):
    """``(logits, {module path: output})`` with every module's output captured (jitted)."""
    out, state = _runner(model, train_mode, key)(variables, inputs)
    flat = traverse_util.flatten_dict(state["intermediates"], sep="/")
    return out, {k.rsplit("/", 1)[0]: v[0] for k, v in flat.items()}


def _init(model, inputs):
    return jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(inputs)


def _random_params(model, inputs, seed=0):
    """Random parameters of init's shapes (test_transformers': N(0, 0.2), 1 + N(0, 0.2) for
    norm scales), for checks that need values of no particular kind: no init to compile, whose
    random number generation is most of an MBT's compile time."""
    import test_transformers as tt

    return tt._random_params(model, inputs, seed=seed, train=False)


@pytest.fixture(scope="module")
def pair():
    """Two inputs that differ only in their audio, and a different-audio check."""
    first = _inputs(0)
    second = dict(first, audio=first["audio"] + 1.0)
    return first, second


def _video_cls_pair(model, first, second):
    """The variables' shapes, and the video cls token (after the final norm) and every
    module's output on two inputs, from random parameters, in one compiled function."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), first, train=False))
    params = _random_params(model, first)

    @jax.jit
    def run(params, first, second):
        return [
            model.apply({"params": params}, x, train=False, capture_intermediates=True)[1]
            for x in (first, second)
        ]

    states = run(params, first, second)
    outs = [
        {k.rsplit("/", 1)[0]: v[0] for k, v in traverse_util.flatten_dict(
            state["intermediates"], sep="/").items()}
        for state in states
    ]  # fmt: skip
    return shapes, [o["video_encoder_norm"][:, 0] for o in outs], outs


@pytest.mark.parametrize(
    "fields, reaches",
    [
        # Bottlenecks: the video layer that first sees the audio is the one after the first
        # fusion layer (each fusion layer reads the bottlenecks the layer before wrote).
        (dict(num_layers=3, fusion_layer=1, num_bottlenecks=2), 2),
        (dict(fusion_layer=1, num_bottlenecks=0), None),  # nothing to cross through
        (dict(fusion_layer=2, num_bottlenecks=2), None),  # late fusion
        (dict(fusion_layer=1, fusion="cross"), 1),  # vanilla cross-attention: at once
    ],
)
def test_audio_reaches_the_video_only_through_fusion(pair, fields, reaches):
    """Changing only the audio changes the video tokens from layer ``reaches`` on (None:
    never, the video cls token included). Unreached tokens are equal up to float32 rounding
    (with init's values, jaxlib 0.10.0 rounded 3 of 288 values 1 ulp apart; 0.10.2 gave equal
    bits; these random parameters are checked to 1e-6 as well); reached
    ones move by more than 1e-4."""
    model = _mbt(**fields)
    shapes, (before, after), (outs, outs2) = _video_cls_pair(model, *pair)
    assert not np.allclose(outs["audio_block00"], outs2["audio_block00"])
    for layer in range(model.num_layers):
        name = f"video_block{layer:02d}"
        if reaches is None or layer < reaches:
            np.testing.assert_allclose(outs[name], outs2[name], rtol=0, atol=1e-6)
        else:
            assert np.abs(np.asarray(outs[name] - outs2[name])).max() > 1e-4
    if reaches is None:
        np.testing.assert_allclose(before, after, rtol=0, atol=1e-6)
    else:
        assert np.abs(np.asarray(before - after)).max() > 1e-4
    bottleneck = shapes["params"].get("bottleneck")
    if fields.get("fusion") == "cross" or fields["fusion_layer"] == model.num_layers:
        assert bottleneck is None
    else:
        assert bottleneck.value.shape == (1, fields["num_bottlenecks"], 16)


def test_logits_average_one_classifier_over_both_cls_tokens():
    model = _mbt(fusion_layer=1, num_bottlenecks=2)
    inputs = _inputs(1)
    params = _random_params(model, inputs)
    # A non-zero classifier (it is zero-initialised), so the check has something to compare.
    rng = np.random.default_rng(2)
    params["classifier"]["head"]["kernel"] = jnp.asarray(rng.normal(size=(16, 4)), jnp.float32)
    logits, outs = _run(model, {"params": params}, inputs)
    head = params["classifier"]["head"]
    per_modality = [
        outs[f"{m}_encoder_norm"][:, 0] @ head["kernel"] + head["bias"] for m in ("video", "audio")
    ]
    np.testing.assert_allclose(logits, (per_modality[0] + per_modality[1]) / 2, rtol=1e-5)

    # An example without audio: the video branch's logits alone, whatever its audio holds.
    for audio in (inputs["audio"], -inputs["audio"]):
        missing = dict(inputs, audio=audio, has_audio=jnp.array([False, True]))
        out, outs_m = _run(model, {"params": params}, missing)
        video_only = outs_m["video_encoder_norm"][:, 0] @ head["kernel"] + head["bias"]
        np.testing.assert_allclose(out[0], video_only[0], rtol=1e-5)
        if audio is inputs["audio"]:
            first = out
    np.testing.assert_allclose(out[0], first[0], rtol=1e-5)
    assert not np.allclose(out[1], first[1])


def test_training_loss_averages_one_loss_per_modality_as_scenic():
    """scenic's MBT trainer scores each modality's logits against the labels and averages
    the losses, while the model predicts with the averaged logits; an example without audio
    is scored on its video's logits alone. Per-modality logits computed here by hand from each
    cls token and the shared classifier."""
    from vjax import objectives

    model = _mbt(fusion_layer=1, num_bottlenecks=2)
    inputs = _inputs(4)
    params = _random_params(model, inputs)
    rng = np.random.default_rng(5)
    params["classifier"]["head"]["kernel"] = jnp.asarray(rng.normal(size=(16, 4)), jnp.float32)
    head = params["classifier"]["head"]
    labels = jnp.array([1, 3])
    loss_fn = objectives.get("classification").loss

    def per_example_ce(logits):
        return np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, labels))

    for has_audio in (None, jnp.array([False, True])):
        batch_inputs = inputs if has_audio is None else dict(inputs, has_audio=has_audio)
        logits, outs = _run(model, {"params": params}, batch_inputs, train_mode=True)
        video, audio = (
            per_example_ce(outs[f"{m}_encoder_norm"][:, 0] @ head["kernel"] + head["bias"])
            for m in ("video", "audio")
        )
        if has_audio is not None:
            audio = np.where(has_audio, audio, video)
        value, metrics, state = jax.jit(loss_fn, static_argnums=0)(
            model, {"params": params}, {"label": labels}, batch_inputs, jax.random.key(0)
        )
        np.testing.assert_allclose(value, ((video + audio) / 2).mean(), rtol=1e-5)
        assert abs(value - per_example_ce(logits).mean()) > 1e-3  # not the averaged logits'
        assert metrics["loss"] == value and state == {}
        assert metrics["top1"] == np.mean(np.argmax(logits, -1) == labels)


def test_multi_task_mbt_logs_per_task_losses_that_add_up_to_its_loss():
    """Epic-Kitchens' verb + noun: each task's logged loss is per-modality averaged too."""
    from vjax import objectives

    model = build_model({"name": "mbt", **TINY, "fusion_layer": 1, "num_bottlenecks": 2},
                        {"verb": 3, "noun": 5})  # fmt: skip
    inputs = _inputs(6)
    rng = np.random.default_rng(7)
    variables = jax.tree.map(
        lambda p: p + 0.5 * rng.standard_normal(p.shape).astype(np.float32),
        {"params": _random_params(model, inputs)},
    )
    batch = {"label": jnp.array([[1, 4], [2, 0]])}
    loss_fn = objectives.get("classification").loss  # (the model's dict field is unhashable)
    loss, metrics, _ = jax.jit(lambda v, b, x: loss_fn(model, v, b, x, jax.random.key(1)))(
        variables, batch, inputs
    )
    np.testing.assert_allclose(metrics["loss_verb"] + metrics["loss_noun"], loss, rtol=1e-5)
    assert metrics["loss"] == loss


def test_audio_dropout_drops_audio_in_training_only(pair):
    model = _mbt(fusion_layer=1, num_bottlenecks=2, audio_dropout=0.999)
    params = _random_params(model, pair[0])
    params["classifier"]["head"]["kernel"] = jnp.ones((16, 4)) * 0.1
    train_out = [_run(model, {"params": params}, x, train_mode=True)[0] for x in pair]
    eval_out = [_run(model, {"params": params}, x)[0] for x in pair]
    np.testing.assert_allclose(train_out[0], train_out[1], rtol=1e-6)
    assert not np.allclose(eval_out[0], eval_out[1])


def test_single_modality_baselines_take_one_array():
    inputs = _inputs(3)
    for modality, other in (("video", "audio"), ("audio", "video")):
        model = _mbt(modalities=(modality,), fusion_layer=1)
        assert model_modalities(model) == (modality,)
        # Tree keys and shapes only: traced, not compiled.
        init = functools.partial(model.init, train=False)
        variables = jax.eval_shape(init, jax.random.key(0), inputs[modality])
        names = set(variables["params"])
        assert not any(n.startswith(other) for n in names) and "bottleneck" not in names
        apply = functools.partial(model.apply, train=False)
        assert jax.eval_shape(apply, variables, inputs[modality]).shape == (2, 4)
    with pytest.raises(ValueError, match="fusion_layer"):
        jax.eval_shape(lambda: _mbt(fusion_layer=3).init(jax.random.key(0), inputs, train=False))


def test_ast_and_mbt_start_from_an_image_vit(tmp_path, capsys):
    """``train.init_from`` of the tiny AST recipe and a tiny MBT from a tiny random image ViT
    (the single-frame model on one 16x16 RGB frame, 4x4 patches) saved as a convert folder."""
    fields = {"size": "Ti/4", "hidden_size": 32, "num_layers": 2, "num_heads": 2, "mlp_dim": 64}
    vit = build_model({"name": "single_frame", **fields, "pooling": "cls"}, 10)
    variables = {"params": _random_params(vit, jnp.zeros((1, 1, 16, 16, 3)))}
    variables = jax.tree.map(lambda x: x + 0.5, variables)  # not an initial value
    path = str(tmp_path / "vit")
    config = pretrained_config(
        {"name": "single_frame", **fields}, (1, 16, 16, 3), list("0123456789")
    )
    save_converted(path, config, variables)

    exp = _experiment(_config(recipe="ast_audioset_mini"), jax.devices()[:1])
    # 16 frames x 16 mel bins in overlapping 4x4 patches every 2 bins: 7 x 7 tokens.
    assert exp.input_shapes == (8, 16, 16) and token_grid(exp.model, (8, 16, 16)) == (1, 7, 7)
    with pytest.raises(ValueError, match="smaller than one 4x4 patch"):
        exp.model.check_input((2, 3, 16))
    state = train.init_from_pretrained(exp, train.create_state(exp, seed=0), path)
    params, source = jax.device_get(state.params), nn.meta.unbox(variables["params"])
    kernel = source["embedding"]["conv"]["kernel"]
    np.testing.assert_allclose(params["embedding"]["conv"]["kernel"], kernel.sum(3, keepdims=True))
    np.testing.assert_array_equal(params["encoder"]["block01"]["mlp"]["fc1"]["kernel"],
                                  source["encoder"]["block01"]["mlp"]["fc1"]["kernel"])  # fmt: skip
    np.testing.assert_array_equal(params["cls"], source["cls"])
    # The 4x4 table resized linearly (corners aligned) to AST's 7x7 patch grid.
    table = source["pos_embedding"].reshape(4, 4, 32)
    pos = params["pos_embedding"].reshape(7, 7, 32)
    np.testing.assert_allclose(pos[::2, ::2], table, rtol=1e-6)
    np.testing.assert_allclose(pos[1, 0], (table[0, 0] + table[1, 0]) / 2, rtol=1e-6)
    out = capsys.readouterr().out
    assert "summed embedding/conv/kernel" in out and "reset classifier" in out
    # The summed kernel embeds a spectrogram as the ViT embeds it repeated on 3 channels.
    image = jnp.asarray(np.random.default_rng(5).normal(size=(1, 1, 12, 16, 1)), jnp.float32)
    embed = TubeletEmbed(32, (1, 4, 4))
    one, three = jax.jit(
        lambda summed, rgb, x: (
            embed.apply({"params": summed}, x),
            embed.apply({"params": rgb}, jnp.repeat(x, 3, axis=-1)),
        )
    )(params["embedding"], source["embedding"], image)
    np.testing.assert_allclose(one, three, rtol=1e-5, atol=1e-5)
    audio = np.random.default_rng(6).normal(size=(2, 16, 16)).astype(np.float32)
    logits = _run(exp.model, {"params": params}, audio)[0]
    assert logits.shape == (2, 4) and np.isfinite(logits).all()

    # MBT: the ViT onto each modality's encoder (video tubelets inflated over 2 frames,
    # "central"; the audio patches summed over RGB), the bottlenecks as initialised.
    config = _config()
    with config.unlocked():
        config.model.size = "Ti/4x2"
    exp = _experiment(config, jax.devices()[:1])
    initial = jax.device_get(train.create_state(exp, seed=0))
    state = train.init_from_pretrained(exp, initial, path)
    params = jax.device_get(state.params)
    np.testing.assert_array_equal(params["bottleneck"], initial.params["bottleneck"])
    video_kernel = params["video_embedding"]["conv"]["kernel"]  # (2, 4, 4, 3, 32)
    np.testing.assert_array_equal(video_kernel[1], kernel[0])
    assert not video_kernel[0].any()
    np.testing.assert_allclose(
        params["audio_embedding"]["conv"]["kernel"], kernel.sum(3, keepdims=True)
    )
    fc1 = source["encoder"]["block01"]["mlp"]["fc1"]["kernel"]
    for modality in ("video", "audio"):
        np.testing.assert_array_equal(params[f"{modality}_block01"]["mlp"]["fc1"]["kernel"], fc1)
        np.testing.assert_array_equal(
            params[f"{modality}_encoder_norm"]["scale"], source["encoder"]["encoder_norm"]["scale"]
        )
    # Video: the 4x4 table tiled over 2 tubelet steps; audio: 4x4 mel x time patches, as is.
    video_pos = params["video_pos_embedding"].reshape(2, 4, 4, 32)
    np.testing.assert_allclose(video_pos[1], table, rtol=1e-6)
    np.testing.assert_allclose(params["audio_pos_embedding"].reshape(4, 4, 32), table, rtol=1e-6)
    assert "kept the initial bottleneck" in capsys.readouterr().out


def _width():
    return {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "mlp_dim": 32}


def _config(mesh: str = "(('data', -1), ('fsdp', 1), ('tensor', 1))", recipe="mbt_vggsound"):
    config = load_config(f"{CONFIG}:{recipe},tiny")
    # SGD (the paper's): updates linear in the gradients, so meshes compare to round-off
    # (Adam's first step is ~lr * sign(g), which magnifies round-off where g is near 0).
    overrides = {"optimizer.name": "sgd", "optimizer.lr": "0.1", "optimizer.warmup_steps": "0"}
    apply_overrides(config, {"sharding.mesh": mesh, **overrides})
    with config.unlocked():  # dropout and drop-path on: their masks must agree across meshes
        config.model.update(dropout_rate=0.1, drop_path_rate=0.1)
    return config


def _experiment(config, devices=None):
    mesh = check_config(config, devices)
    multi_label = config.train.objective == "multi_label"  # data made to fit the recipe
    return train.build_experiment(config, mesh, None, CLIP, CLASSES, multi_label)


def _batch(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "video": rng.integers(0, 256, (8, *CLIP), dtype=np.uint8),
        "audio": rng.normal(size=(8, 16, 16)).astype(np.float32),
        "has_audio": np.arange(8) % 3 != 0,
        "label": rng.integers(0, 4, 8).astype(np.int32),
    }


def _step(exp, state, batch):
    """test_sharding's one step, then the validation logits of the new state."""
    new_state, metrics = _one_step(exp, state, batch)
    _, eval_step = train.compile_steps(exp)  # jitted lazily: only the eval step compiles
    with jax.set_mesh(exp.mesh), nn.logical_axis_rules(exp.rules):
        logits = eval_step(new_state.variables, parallel.global_batch(batch, exp.batch_sharding))
    return new_state, metrics, np.asarray(logits)


@pytest.fixture(scope="module")
def one_device():
    """The tiny MBT recipe on one device: its experiment, initial state, a batch, and the
    state, metrics and validation logits after one step."""
    exp = _experiment(_config(), jax.devices()[:1])
    state = jax.device_get(train.create_state(exp, seed=0))
    # A non-zero classifier (it starts at zero), so every layer gets a gradient in one step.
    head = dict(state.params["classifier"]["head"])
    head["kernel"] = np.random.default_rng(3).normal(size=head["kernel"].shape).astype(np.float32)
    state = state.replace(params={**state.params, "classifier": {"head": head}})
    batch = _batch()
    new_state, metrics, logits = _step(exp, state, batch)
    return exp, state, batch, jax.device_get(new_state), metrics, logits


def test_mbt_step_on_8_devices_equals_one_device(one_device):
    """data=2 x fsdp=4: the batch (video, audio and has_audio) split 8 ways as under data=8,
    whose pure replication test_sharding checks on ViViT, and the parameters sharded too."""
    exp1, state, batch, state1, metrics1, logits1 = one_device
    assert exp1.input_shapes == {"video": (8, *CLIP), "audio": (8, 16, 16)}
    exp = _experiment(_config("(('data', 2), ('fsdp', 4), ('tensor', 1))"))
    assert exp.mesh.size == 8
    state8, metrics8, logits8 = _step(exp, state, batch)
    changed = assert_same_step((state1, metrics1), (state8, metrics8), state)
    np.testing.assert_allclose(logits1, logits8, rtol=1e-4, atol=1e-4)  # logits up to ~10
    assert all(jax.tree.leaves(changed["bottleneck"]))  # the fused tokens really trained


def test_mbt_checkpoint_restores_and_loads(one_device, tmp_path):
    exp, _, batch, state1, _, logits1 = one_device
    workdir = str(tmp_path)
    manager = checkpoint.make_manager(os.path.join(workdir, "checkpoints"), 1)
    metadata = train.checkpoint_metadata(exp, config_to_json(exp.config))
    checkpoint.save(manager, 1, jax.device_put(state1, exp.state_shardings), metadata)
    manager.wait_until_finished()
    restored, step = train.restore_state(exp, manager)
    assert step == 1
    jax.tree.map(np.testing.assert_array_equal, state1.params, jax.device_get(restored.params))
    # Evaluation's apply takes this process's batch and feeds the model its inputs only.
    apply = train._apply(exp, train.compile_steps(exp)[1], restored.variables)
    np.testing.assert_allclose(apply(batch), logits1, rtol=1e-5, atol=1e-6)

    loaded = vjax.load(workdir)
    assert loaded.modalities == ("video", "audio")
    assert loaded.input_shapes == {"video": list(CLIP), "audio": [16, 16]}
    inputs = {k: batch[k] for k in ("video", "audio", "has_audio")}
    # atol here and for the teacher: vjax.load's apply and a plain jit compile with XLA's
    # defaults (YNNPACK's kernels), the trainer's steps without YNNPACK
    # (vjax/compile_options.py): sums in another order, ~4e-6 apart.
    np.testing.assert_allclose(loaded(inputs), logits1, rtol=1e-5, atol=2e-5)
    with pytest.raises(vjax.errors.UserError, match="audio"):
        loaded(batch["video"])

    # An audio-visual teacher (train.distill) hears the student's batch too.
    teacher = load_teacher(workdir, CLASSES, CLIP, audio_shape=(16, 16))
    assert jax.tree.leaves(teacher.shardings(exp.mesh, exp.rules))
    teacher_logits = jax.jit(teacher.logits)(teacher.variables, batch)
    np.testing.assert_allclose(teacher_logits, logits1, rtol=1e-5, atol=2e-5)
    # A student whose data yields other spectrograms, or none, is told so at start-up.
    with pytest.raises(
        ConfigError, match=r"hears spectrograms of \(16, 16\).*yields spectrograms of \(32, 16\)"
    ):
        load_teacher(workdir, CLASSES, CLIP, audio_shape=(32, 16))
    with pytest.raises(ConfigError, match="no spectrograms"):
        load_teacher(workdir, CLASSES, CLIP)

    # train.init_from of an MBT onto an MBT takes every parameter by name (it was read as an
    # image ViT for each modality: nothing matched, and the run started from scratch).
    fresh = train.create_state(exp, seed=7)
    started = jax.device_get(train.init_from_pretrained(exp, fresh, workdir).params)
    jax.tree.map(np.testing.assert_array_equal, started, jax.device_get(state1.params))


def test_model_input_normalises_video_and_passes_audio():
    model = _mbt()
    batch = _batch(1)
    inputs = model_input(model, batch, (0.5,) * 3, (0.25,) * 3)
    assert set(inputs) == {"video", "audio", "has_audio"}
    expected = (batch["video"] / 255.0 - 0.5) / 0.25
    np.testing.assert_allclose(inputs["video"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(inputs["audio"], batch["audio"])
    video_model = build_model({"name": "vivit", "size": "Ti/8x2", **_width()}, 4)
    assert model_input(video_model, batch, (0.5,) * 3, (0.25,) * 3).shape == (8, *CLIP)


@pytest.mark.parametrize("recipe", ["mbt_vggsound", "ast_audioset_mini"])
def test_audio_model_without_input_audio_is_a_config_error(recipe):
    config = _config(recipe=recipe)
    with config.unlocked():
        del config.input["audio"]
    with pytest.raises(ConfigError, match=r"model '(mbt|ast)' takes audio.*config\.input\.audio"):
        check_config(config)
    if recipe == "mbt_vggsound":  # the same MBT on video alone needs no audio
        with config.unlocked():
            config.model.modalities = ("video",)
        check_config(config)


@pytest.mark.parametrize("recipe", ["mbt_audioset_mini", "mbt_vggsound", "mbt_epic"])
def test_recipes_build_their_model_on_their_input(recipe):
    config = load_config(f"{CONFIG}:{recipe}")
    model = build_model(config.model, 5, config.train.dtype)
    cfg = config.input
    clip = (cfg.num_frames, cfg.crop_size, cfg.crop_size, 3)
    audio = (cfg.audio.frames, cfg.audio.mel_bins)
    model.check_input({"video": (1, *clip), "audio": (1, *audio)})
    assert (model.fusion_layer, model.num_bottlenecks) == (8, 4)
    single = load_config(f"{CONFIG}:{recipe},audio")
    assert tuple(single.model.modalities) == ("audio",)


def test_mbt_is_a_video_and_an_audio_encoder_in_parity():
    """Parameters of the tiny MBT = its video-only baseline (a ViViT model 1) + AST on the
    spectrogram - the shared classifier + the bottleneck tokens, counted through the parity
    module's audio-visual rows (abstractly: nothing is allocated)."""
    width = {**TINY, "num_layers": 2}
    clip, audio = (4, 16, 16, 3), (16, 16)
    vivit = count_params(build_model({"name": "vivit", **width}, 4), (1, *clip))
    ast = count_params(
        build_model({"name": "ast", **width, "size": "Ti/8"}, 4), (1, *audio)
    )  # fmt: skip
    classifier, bottlenecks = 16 * 4 + 4, 3 * 16
    row = PublishedSize("tiny", {"name": "mbt", **width, "fusion_layer": 1, "num_bottlenecks": 3},
                        clip, vivit + ast - classifier + bottlenecks, None, 4, audio)  # fmt: skip
    measured = measure(row, 0.0, 0.0)
    assert measured.params == row.params and measured.ok
    assert "4x16x16+16x16" in format_table([measured], "s", "n")


def test_mbt_drop_path_grows_linearly_over_depth_in_every_modality():
    """MBT (scenic projects/mbt, as ViViT): layer i of L drops its residual branches with
    probability rate * i / (L - 1), whole examples at once, in each modality's stream."""
    import flax.linen as nn
    import jax

    model = _mbt(num_layers=3, fusion_layer=1, num_bottlenecks=2, drop_path_rate=0.4)
    inputs = _inputs(0)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), inputs, train=False))
    seen = {}

    def record(next_fun, args, kwargs, context):
        module = context.module
        if isinstance(module, nn.Dropout) and module.broadcast_dims:
            seen.setdefault(module.scope.path[-2], set()).add(
                (round(module.rate, 6), tuple(module.broadcast_dims))
            )
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):  # traced only: the rates are set at trace time
        jax.eval_shape(
            lambda v: model.apply(v, inputs, train=True, rngs={"dropout": jax.random.key(1)}),
            variables,
        )
    assert seen == {
        f"{m}_block{i:02d}": {(round(0.4 * i / 2, 6), (1, 2))}
        for m in ("video", "audio")
        for i in range(3)
    }


def test_mbt_bottleneck_tokens_start_as_scenics():
    """scenic's MBT draws its fusion bottleneck tokens from N(0, 0.02) (from knowledge of
    projects/mbt/model.py); zeros would make every bottleneck token identical at step 0."""
    import flax.linen as nn

    model = _mbt(fusion_layer=1, num_bottlenecks=64)
    # Only the bottleneck leaves the compiled init: XLA drops the other parameters' draws.
    init = jax.jit(
        lambda x: nn.meta.unbox(model.init(jax.random.key(0), x, train=False))["params"][
            "bottleneck"
        ]
    )
    bottleneck = np.asarray(init(_inputs(0)))
    assert bottleneck.shape == (1, 64, 16)  # 1024 draws: std within 0.003 of 0.02
    assert abs(bottleneck.std() - 0.02) < 0.003 and abs(bottleneck.mean()) < 0.003


def test_cross_fusion_example_without_audio_ignores_the_audio():
    """Vanilla cross-attention fusion with has_audio False for one example: that example's
    video attends over the video alone, so its logits do not depend on the audio array it
    carries (the example with audio does)."""
    import jax.numpy as jnp
    import test_transformers as tt

    model = _mbt(fusion_layer=1, fusion="cross")
    first = dict(_inputs(0), has_audio=jnp.array([False, True]))
    second = dict(first, audio=first["audio"] + 1.0)
    params = tt._random_params(model, _inputs(0), train=False)
    out = [np.asarray(_run(model, {"params": params}, x)[0]) for x in (first, second)]
    np.testing.assert_allclose(out[0][0], out[1][0], rtol=1e-6, atol=1e-6)
    assert np.abs(out[0][1] - out[1][1]).max() > 1e-4


def _np_mbt(p, video, audio, tubelet, patch, fusion_layer, num_layers):
    """MBT written from the paper (Nagrani et al. 2021, Sec. 3.2, bottleneck fusion): each
    modality's tokens [cls, patches + positions] go through its own layers; from
    ``fusion_layer`` on, layer l of modality m attends over [its tokens, the bottlenecks], and
    the bottlenecks passed on are the mean of the modalities' updates. Logits: one classifier
    on each modality's final-norm cls token, averaged. The spectrogram is an image with mel
    bins as height and time as width (AST, Gong et al. 2021)."""
    import test_transformers as tt

    def tokens(m, patches):
        conv = p[f"{m}_embedding"]["conv"]
        x = patches @ conv["kernel"].reshape(-1, conv["kernel"].shape[-1]) + conv["bias"]
        x = x + p[f"{m}_pos_embedding"]
        cls = np.broadcast_to(p[f"{m}_cls"], (x.shape[0], 1, x.shape[-1]))
        return np.concatenate([cls, x], 1)

    image = audio.transpose(0, 2, 1)[:, None, :, :, None]  # (b, 1, mel, time, 1)
    x = {
        "video": tokens("video", tt._np_patches(video, tubelet)),
        "audio": tokens("audio", tt._np_patches(image, (1, patch, patch))),
    }
    bottleneck = np.broadcast_to(p["bottleneck"], (video.shape[0], *p["bottleneck"].shape[1:]))
    for layer in range(num_layers):
        if layer < fusion_layer:
            x = {m: tt._np_block(t, p[f"{m}_block{layer:02d}"]) for m, t in x.items()}
            continue
        updates = []
        for m, t in x.items():
            y = tt._np_block(np.concatenate([t, bottleneck], 1), p[f"{m}_block{layer:02d}"])
            x[m], update = y[:, : t.shape[1]], y[:, t.shape[1] :]
            updates.append(update)
        bottleneck = np.mean(updates, axis=0)
    head = p["classifier"]["head"]
    logits = [
        tt._np_ln(x[m], p[f"{m}_encoder_norm"])[:, 0] @ head["kernel"] + head["bias"]
        for m in ("video", "audio")
    ]
    return np.mean(logits, axis=0)


def test_mbt_equals_a_numpy_mbt_written_from_the_paper():
    """Bottleneck fusion end to end against NumPy (the suite's MBT tests are properties:
    what reaches what, one classifier, parity of sizes; none computes MBT's numbers)."""
    import jax
    import test_transformers as tt

    model = _mbt(num_layers=3, fusion_layer=1, num_bottlenecks=2, activation="gelu")
    inputs = {k: np.asarray(v) for k, v in _inputs(0).items()}
    params = tt._random_params(model, inputs, train=False)
    got = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))(params, inputs)
    want = _np_mbt(
        jax.tree.map(np.asarray, params),
        inputs["video"],
        inputs["audio"],
        (2, 8, 8),
        8,
        fusion_layer=1,
        num_layers=3,
    )
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-4, atol=2e-5)


def test_audio_dropout_also_drops_audio_the_batch_marks_present():
    """MBT's modality dropout (audio_dropout) drops an example's audio whether or not the
    batch carries has_audio: present = kept AND has_audio. With has_audio all True and a drop
    rate of 0.999, training outputs must not depend on the audio (as without has_audio)."""
    import jax.numpy as jnp
    import test_transformers as tt

    model = _mbt(fusion_layer=1, num_bottlenecks=2, audio_dropout=0.999)
    first = dict(_inputs(0), has_audio=jnp.array([True, True]))
    second = dict(first, audio=first["audio"] + 1.0)
    params = tt._random_params(model, _inputs(0), train=False)
    out = [_run(model, {"params": params}, x, train_mode=True)[0] for x in (first, second)]
    np.testing.assert_allclose(out[0], out[1], rtol=1e-6)


def test_ast_patch_grid_is_mel_rows_by_time_columns_as_the_paper():
    """AST (Gong et al. 2021, Sec. 2.1): a 1024-frame x 128-bin spectrogram cut into 16x16
    patches with stride 10 gives 12 (frequency) x 101 (time) = 1212 patches; the grid is
    (1, mel rows, time columns), the layout of the tokens the embedding makes (mel bins as
    height), so a position table resized onto it keeps its frequency axis."""
    import jax
    import jax.numpy as jnp

    from vjax.models import build_model
    from vjax.models.ast import patch_grid

    assert patch_grid((1024, 128), 16, 10) == (1, 12, 101)
    assert patch_grid((2, 1024, 128), 16, 16) == (1, 8, 64)
    model = build_model(
        {
            "name": "ast",
            "size": "Ti/8",
            "hidden_size": 16,
            "num_layers": 1,
            "num_heads": 2,
            "mlp_dim": 32,
        },
        3,
    )
    audio = jnp.zeros((1, 48, 16))  # 48 frames, 16 mel bins: 2 x 6 patches of 8
    assert model.patch_grid(audio.shape) == (1, 2, 6)
    logits = jax.eval_shape(
        lambda: model.init_with_output(jax.random.key(0), audio, train=False)[0]
    )
    assert logits.shape == (1, 3)
