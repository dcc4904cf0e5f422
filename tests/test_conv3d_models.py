"""The 3D-conv nets: registry names, input checks, logical axis names, BatchNorm (frozen,
sharded over 8 devices, precise), I3D inflation, C3D's size, a small R3D through train.py."""

import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from conftest import tiny_config
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vjax.models import available_models, build_model
from vjax.models.resnet3d import inflate_resnet50
from vjax.step import TrainState, make_train_step

CONV_MODELS = [
    "c3d",
    "r3d_18", "r3d_34", "r3d_50", "mc3_18", "r2plus1d_18", "r2plus1d_34",
    "slow_r50", "c2d_r50", "i3d_r50", "r2plus1d_r50", "csn_r101",
    "slowfast_r50", "slowfast_r50_4x16", "slowfast_r101",
    "x3d_xs", "x3d_s", "x3d_m", "x3d_l",
]  # fmt: skip
SMALL_R3D = {"name": "r3d_18", "layers": (1, 1, 1, 1), "width": 8}  # few convs: quick compiles


def init_shapes(model, shape):
    video = jax.ShapeDtypeStruct(shape, jnp.float32)
    return jax.eval_shape(lambda v: model.init(jax.random.key(0), v, train=False), video)


def test_every_conv_net_is_registered_and_checks_its_input():
    assert set(CONV_MODELS) <= set(available_models())
    for name in CONV_MODELS:
        model = build_model({"name": name}, 10)
        model.check_input((2, 16, 32, 32, 3))
        with pytest.raises(ValueError, match="expected video of shape"):
            model.check_input((16, 32, 32, 3))
    with pytest.raises(ValueError, match=r"frames \(10\) must be divisible by alpha \(4\)"):
        build_model({"name": "slowfast_r50"}, 10).check_input((1, 10, 32, 32, 3))
    with pytest.raises(ValueError, match="unknown conv_makers"):
        build_model({"name": "r3d_18", "conv_makers": ("3d", "4d", "3d", "3d")}, 10).check_input(
            (1, 4, 32, 32, 3)
        )
    with pytest.raises(ValueError, match="unknown config key 'model.width'"):
        build_model({"name": "x3d_m", "width": 3}, 10)


def test_parameters_carry_logical_axis_names():
    specs = nn.get_partition_spec(
        init_shapes(build_model({"name": "x3d_xs"}, 5), (1, 4, 32, 32, 3))
    )
    params, block = specs["params"], specs["params"]["stage1"]["block0"]
    assert block["conv_a"]["conv"]["kernel"] == PartitionSpec(
        None, None, None, "conv_in", "conv_out"
    )
    # depthwise: the kernel's input dim is 1, so it is not named (never sharded)
    assert block["conv_b"]["conv"]["kernel"] == PartitionSpec(None, None, None, None, "conv_out")
    assert block["conv_b"]["norm"]["scale"] == PartitionSpec("conv_out")
    assert block["se"]["reduce"]["kernel"] == PartitionSpec("conv_in", "conv_out")
    assert params["classifier"]["head"]["kernel"] == PartitionSpec("embed", "classes")
    assert params["head_proj"]["kernel"] == PartitionSpec("conv_in", "embed")
    leaves = jax.tree.leaves(specs["params"], is_leaf=lambda x: isinstance(x, PartitionSpec))
    assert all(any(name is not None for name in spec) for spec in leaves)


def random_variables(model, shape, seed: int = 0) -> dict:
    """Random values for every variable (positive, so BatchNorm variances are valid), without
    compiling ``init`` (its random number generation is slow to compile on CPU)."""
    rng = np.random.default_rng(seed)
    shapes = nn.meta.unbox(init_shapes(model, shape))
    return jax.tree.map(lambda s: rng.uniform(0.5, 1.0, s.shape).astype(np.float32), shapes)


def jitted(model, train: bool):
    """``apply`` compiled (on CPU one compile beats dispatching every op on its own)."""
    if train:
        return jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
    return jax.jit(lambda v, x: model.apply(v, x, train=False))


def test_frozen_batchnorm_keeps_running_statistics_while_training():
    video = jax.random.normal(jax.random.key(1), (2, 4, 16, 16, 3))
    model = build_model(SMALL_R3D, 5)
    frozen = build_model({**SMALL_R3D, "frozen_bn": True}, 5)
    variables = random_variables(model, video.shape)  # running statistics != the batch's
    eval_logits = jitted(frozen, False)(variables, video)

    logits, state = jitted(frozen, True)(variables, video)
    np.testing.assert_allclose(logits, eval_logits, atol=1e-6)
    jax.tree.map(np.testing.assert_array_equal, state["batch_stats"], variables["batch_stats"])

    logits, state = jitted(model, True)(variables, video)
    assert np.abs(logits - eval_logits).max() > 1e-3
    stem = state["batch_stats"]["stem"]["norm"]["mean"]
    assert np.abs(stem - variables["batch_stats"]["stem"]["norm"]["mean"]).max() > 1e-4


def test_sharded_batchnorm_train_step_matches_one_device():
    """Batch statistics under jit with the batch split over 8 devices are the global ones."""
    devices = jax.devices()
    assert len(devices) == 8
    model = build_model(SMALL_R3D, 5)
    video = jax.random.randint(jax.random.key(2), (8, 4, 16, 16, 3), 0, 255).astype(jnp.uint8)
    batch = {"video": video, "label": jnp.arange(8) % 5}
    variables = random_variables(model, (1, 4, 16, 16, 3))
    params = variables.pop("params")
    tx = optax.sgd(0.1)
    state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), variables)
    step = make_train_step(model, tx, mean=(0.5,) * 3, std=(0.25,) * 3)
    key = jax.random.key(3)

    single, single_metrics = jax.jit(step)(state, batch, key)
    mesh = Mesh(np.array(devices), ("data",))
    replicated = NamedSharding(mesh, PartitionSpec())
    split = NamedSharding(mesh, PartitionSpec("data"))
    sharded_step = jax.jit(step, in_shardings=(replicated, split, replicated))
    sharded, sharded_metrics = sharded_step(state, jax.device_put(batch, split), key)

    assert sharded.model_state["batch_stats"]["stem"]["norm"]["mean"].sharding.is_fully_replicated
    close = functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-5)
    jax.tree.map(close, sharded.model_state, single.model_state)
    jax.tree.map(close, sharded.params, single.params)
    jax.tree.map(close, sharded_metrics, single_metrics)
    # and the statistics really moved (momentum 0.1 towards the batch's)
    moved = single.model_state["batch_stats"]["layer1"]["block0"]["conv_1"]["norm"]["var"]
    assert np.abs(moved - 1.0).max() > 1e-3


def test_inflated_2d_kernels_see_a_static_video_as_the_image():
    """I3D inflation: repeat each 2D kernel over time, divided by k_t; on a video of identical
    frames an inflated conv answers like the 2D conv (away from the zero-padded ends)."""
    model = build_model({"name": "i3d_r50"}, 5)
    shapes = nn.meta.unbox(init_shapes(model, (1, 8, 32, 32, 3))["params"])
    rng = np.random.default_rng(0)

    def two_d(s):
        shape = s.shape[1:] if len(s.shape) == 5 else s.shape
        return rng.normal(size=shape).astype(np.float32)

    params_2d = jax.tree.map(two_d, shapes)
    params = inflate_resnet50(params_2d, shapes)
    stem_3d, stem_2d = params["stem"]["conv"]["kernel"], params_2d["stem"]["conv"]["kernel"]
    assert stem_3d.shape == (5, 7, 7, 3, 64)
    np.testing.assert_allclose(stem_3d.sum(axis=0), stem_2d, rtol=1e-5)
    np.testing.assert_array_equal(
        params["stem"]["norm"]["scale"], params_2d["stem"]["norm"]["scale"]
    )

    image = rng.normal(size=(1, 16, 16, 3)).astype(np.float32)
    video = np.repeat(image[:, None], 9, axis=1)
    conv3 = nn.Conv(64, (5, 7, 7), padding=[(2, 2), (3, 3), (3, 3)], use_bias=False)
    conv2 = nn.Conv(64, (7, 7), padding=[(3, 3), (3, 3)], use_bias=False)
    out3 = jax.jit(conv3.apply)({"params": {"kernel": stem_3d}}, video)
    out2 = jax.jit(conv2.apply)({"params": {"kernel": stem_2d}}, image)
    np.testing.assert_allclose(out3[:, 2:-2], np.repeat(out2[:, None], 5, axis=1), atol=1e-4)
    with pytest.raises(ValueError, match="does not inflate"):
        bad = jax.tree.map(lambda x: x, params_2d)
        bad["stem"]["conv"]["kernel"] = np.zeros((3, 3, 3, 64), np.float32)
        inflate_resnet50(bad, shapes)


@pytest.fixture(scope="module")
def precise_bn_run(data_dir, tmp_path_factory):
    """``(config, workdir, last validation)``: SMALL_R3D trained 4 steps with precise BN over
    3 train batches before its validation at step 4."""
    from vjax import train

    steps = {"train.num_steps": "4", "train.eval_every": "4", "train.checkpoint_every": "4",
             "train.precise_bn_batches": "3"}  # fmt: skip
    config = tiny_config(data_dir, **steps)
    with config.unlocked():
        config.model = ml_collections.ConfigDict(SMALL_R3D)
    workdir = tmp_path_factory.mktemp("precise_bn")
    return config, workdir, train.train(config, str(workdir))


def test_small_r3d_trains_through_the_same_loop_with_precise_bn(precise_bn_run):
    """The conv net trains through train.py unchanged; with ``train.precise_bn_batches=3`` the
    saved statistics are precise BN's over the 3 train batches after the last step."""
    import vjax
    from vjax import train
    from vjax.data.pipeline import TrainBatches
    from vjax.metric_writers import read_metrics
    from vjax.models.precise_bn import precise_batch_stats
    from vjax.step import normalize_video

    config, tmp_path, _ = precise_bn_run
    records = read_metrics(str(tmp_path))
    assert records and all(np.isfinite(r["loss"]) for r in records)
    _, model, variables = vjax.load(str(tmp_path))
    stats = variables["batch_stats"]["stem"]["norm"]
    assert np.abs(np.asarray(stats["mean"])).max() > 1e-4  # moved from its initial zeros
    assert np.abs(np.asarray(stats["var"]) - 1.0).max() > 1e-4  # and from its initial ones

    exp = train.setup(config)
    batches = TrainBatches(exp.builder.as_data_source("train"), 8, config.seed)
    mean, std = config.input.mean, config.input.std
    videos = [normalize_video(batches(4 + i)["video"], mean, std, jnp.float32) for i in range(3)]
    expected = precise_batch_stats(model, variables, videos)["batch_stats"]
    close = functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-6)
    jax.tree.map(close, variables["batch_stats"], jax.device_get(expected))


def test_sigterm_during_precise_bn_saves_that_step(precise_bn_run, tmp_path, monkeypatch):
    """Precise BN before a validation (200 batches in the SlowFast recipes) stops at the next
    batch on a preemption notice, and the step is saved with its running statistics, nothing
    validated: the notice waited for precise BN, the validation and one more step. The same
    command then validates that step, the run's last, with precise BN, and saves its
    statistics: the checkpoint and the validation are the uninterrupted run's."""
    import signal

    import vjax
    from vjax import train

    seen, made = [], train.normalize_video

    def signalling_normalize(*args):  # the loop's own steps normalise inside the jitted step
        if not seen:
            os.kill(os.getpid(), signal.SIGTERM)
        seen.append(1)
        return made(*args)

    config, whole_dir, whole = precise_bn_run
    cut = tmp_path / "cut"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train, "normalize_video", signalling_normalize)
        patch.setattr(train, "_apply", lambda *args: pytest.fail("validation ran"))
        assert train.train(config, str(cut)) == {"preempted_at": 4}
    assert len(seen) == 1  # of precise BN's 3 batches
    assert [e for e in os.listdir(cut / "checkpoints") if e.isdigit()] == ["4"]
    # A resume killed while it writes step 4 again with precise BN's statistics: the old
    # copy waits aside (it was deleted first: the run's only checkpoint lost) and comes back.
    from vjax import checkpoint

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed while saving")

    with pytest.MonkeyPatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(checkpoint, "save", killed)
        train.train(config, str(cut))
    assert sorted(os.listdir(cut / "checkpoints")) == ["4.replaced"]
    assert train.train(config, str(cut))["loss"] == pytest.approx(whole["loss"], rel=1e-6)
    assert [e for e in os.listdir(cut / "checkpoints") if e.isdigit()] == ["4"]
    saved, wanted = (vjax.load(str(path))[2]["batch_stats"] for path in (cut, whole_dir))
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-6), saved, wanted)


def test_precise_bn_on_frozen_batchnorm_is_a_config_error(data_dir):
    """Precise BN would overwrite the statistics frozen_bn keeps (the model evaluated would not
    be the one trained): refused before anything is prepared, naming both settings."""
    from vjax.config_utils import ConfigError
    from vjax.preflight import check_config

    config = tiny_config(data_dir, **{"train.precise_bn_batches": "2"})
    with config.unlocked():
        config.model = ml_collections.ConfigDict({**SMALL_R3D, "frozen_bn": True})
    with pytest.raises(ConfigError, match=r"precise_bn_batches.*frozen_bn.*=0 or .*=False"):
        check_config(config)
    with config.unlocked():  # a recurrent_over backbone's frozen_bn too
        config.model = ml_collections.ConfigDict(
            {"name": "recurrent_over", "backbone": {**SMALL_R3D, "frozen_bn": True}}
        )
    with pytest.raises(ConfigError, match=r"precise_bn_batches.*backbone's frozen_bn"):
        check_config(config)
    config.train.precise_bn_batches = 0
    check_config(config)


def test_c3d_parameter_count_matches_the_hand_count():
    """C3D at 16x112x112 for UCF101: 3x3x3 convs with biases, 8192 -> 4096 -> 4096 -> 101."""
    from vjax.flops import count_params

    widths = [3, 64, 128, 256, 256, 512, 512, 512, 512]
    convs = sum(27 * a * b + b for a, b in zip(widths[:-1], widths[1:], strict=True))
    fcs = (8192 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 101 + 101)
    assert convs + fcs == 78_409_573  # 78.4M
    assert count_params(build_model({"name": "c3d"}, 101), (1, 16, 112, 112, 3)) == convs + fcs
    with pytest.raises(ValueError, match=r"frames \(8\) is below this model's minimum \(16\)"):
        build_model({"name": "c3d"}, 101).check_input((1, 8, 112, 112, 3))


def test_precise_batch_stats_average_each_layers_batch_statistics():
    """The stem's statistics are its conv output's population mean and variance over the
    batches (fvcore's update_bn_stats: the spread of the batch means included), computed here
    from the captured conv outputs."""
    from vjax.models.precise_bn import precise_batch_stats

    model = build_model({**SMALL_R3D, "frozen_bn": True}, 5)  # precise BN unfreezes for its pass
    variables = random_variables(model, (2, 4, 16, 16, 3))
    batches = [jax.random.normal(jax.random.key(i), (2, 4, 16, 16, 3)) for i in range(3)]
    precise = precise_batch_stats(model, variables, iter(batches))
    jax.tree.map(np.testing.assert_array_equal, precise["params"], variables["params"])

    capture = jax.jit(
        lambda v, x: model.apply(
            v, x, train=False, capture_intermediates=lambda m, _: m.name == "conv", mutable=True
        )[1]["intermediates"]["stem"]["conv"]["__call__"][0]
    )
    conv_outputs = [np.asarray(capture(variables, x)) for x in batches]
    pooled = np.concatenate(conv_outputs).reshape(-1, conv_outputs[0].shape[-1])
    stem = precise["batch_stats"]["stem"]["norm"]
    np.testing.assert_allclose(stem["mean"], pooled.mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stem["var"], pooled.var(axis=0), rtol=1e-4, atol=1e-5)
    # deeper layers changed too (their inputs are normalised with batch statistics)
    deep = precise["batch_stats"]["layer4"]["block0"]["conv_2"]["norm"]["var"]
    assert (
        np.abs(deep - variables["batch_stats"]["layer4"]["block0"]["conv_2"]["norm"]["var"]).max()
        > 1e-3
    )


def test_c3d_pool5_pads_height_and_width_by_one_on_both_sides(monkeypatch):
    """Caffe's C3D (and its PyTorch ports) pool5: MaxPool3d((2, 2, 2), stride 2, padding
    (0, 1, 1)). fc6 must read torch's pooling of the model's own conv5b output (narrow convs
    keep it fast; the pooling rule does not depend on the widths)."""
    torch = pytest.importorskip("torch")
    from vjax.models import c3d

    monkeypatch.setattr(c3d, "BLOCKS", tuple((n, tuple(4 for _ in w)) for n, w in c3d.BLOCKS))
    model = build_model({"name": "c3d", "hidden": 8, "dropout_rate": 0.0}, 3)
    video = jnp.asarray(np.random.default_rng(1).normal(size=(1, 16, 48, 48, 3)), jnp.float32)
    variables = jax.jit(lambda key: model.init(key, video, train=False))(jax.random.key(0))
    capture = lambda m, method: m.name in ("conv5b", "fc6")  # noqa: E731
    _, state = jax.jit(
        functools.partial(
            model.apply, train=False, mutable=["intermediates"], capture_intermediates=capture
        )
    )(variables, video)
    conv5b = np.asarray(state["intermediates"]["conv5b"]["__call__"][0])  # 2 x 3 x 3: odd
    pool = torch.nn.MaxPool3d((2, 2, 2), stride=(2, 2, 2), padding=(0, 1, 1))
    with torch.no_grad():  # torch is (N, C, T, H, W); vjax flattens (T, H, W, C)
        pooled = pool(torch.from_numpy(conv5b).permute(0, 4, 1, 2, 3)).permute(0, 2, 3, 4, 1)
    fc6 = nn.meta.unbox(variables["params"])["fc6"]
    expected = pooled.reshape(1, -1).numpy() @ np.asarray(fc6["kernel"]) + np.asarray(fc6["bias"])
    got = state["intermediates"]["fc6"]["__call__"][0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
