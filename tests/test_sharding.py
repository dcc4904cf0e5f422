"""One train step sharded over 8 host CPU devices (data, FSDP and tensor parallel meshes)
equals the same step on one device; FSDP really splits parameters and optimiser state."""

import flax.linen as nn
import jax
import numpy as np
import pytest
from conftest import moved_below_the_head, randomized, tiny_config

from vjax import parallel, train
from vjax.data.pipeline import TrainBatches

MESHES = {
    "data=8": "(('data', 8), ('fsdp', 1), ('tensor', 1))",
    "fsdp=8": "(('data', 1), ('fsdp', 8), ('tensor', 1))",
    "data=2,fsdp=2,tensor=2": "(('data', 2), ('fsdp', 2), ('tensor', 2))",
}
# Dropout and drop-path on, so the per-example random masks must agree across meshes too.
# SGD: the update is the gradient times the rate (Adam's first one is about lr * sign(g), which
# the summation order flips for a gradient near its eps).
OVERRIDES = {
    "model.dropout_rate": "0.1",
    "model.drop_path_rate": "0.1",
    "optimizer.warmup_steps": "0",
    "optimizer.name": "sgd",
    "optimizer.lr": "0.1",
}


def _one_step(exp, state, batch):
    train_step, _ = train.compile_steps(exp)
    state = jax.device_put(state, exp.state_shardings)
    batch = parallel.global_batch(batch, exp.batch_sharding)
    with jax.set_mesh(exp.mesh), nn.logical_axis_rules(exp.rules):
        new_state, metrics = train_step(state, batch, jax.random.key(1))
    return new_state, jax.device_get(metrics)


@pytest.fixture(scope="module")
def reference(data_dir):
    """The initial state, a batch, and the state and metrics after one step on one device."""
    single = train.setup(tiny_config(data_dir, **OVERRIDES), devices=jax.devices()[:1])
    state = with_random_params(jax.device_get(train.create_state(single, seed=0)))
    batch = TrainBatches(single.builder.as_data_source("train"), 8, seed=0)(0)
    new_state, metrics = _one_step(single, state, batch)
    return state, batch, jax.device_get(new_state), metrics


def with_random_params(state):
    """``state`` with random parameters (conftest.randomized): from a fresh init the zero head
    passes no gradient below it, and a sharded step's backward would go unchecked."""
    return state.replace(params=randomized({"params": state.params})["params"])


@pytest.mark.parametrize("mesh", list(MESHES))
def test_sharded_step_matches_one_device(data_dir, reference, mesh):
    assert jax.device_count() == 8
    state, batch, state1, metrics1 = reference
    exp = train.setup(tiny_config(data_dir, **OVERRIDES, **{"sharding.mesh": MESHES[mesh]}))
    assert exp.mesh.size == 8
    state8, metrics8 = _one_step(exp, state, batch)
    assert_same_step((state1, metrics1), (state8, metrics8), state)
    assert moved_below_the_head(state.params, state1.params)  # the gradient reached the encoder


def assert_same_step(one: tuple, many: tuple, before) -> dict:
    """Asserts that two ``(state, metrics)`` after one step from the state ``before`` agree
    (loss, gradient norm, every parameter); returns which parameters the step changed."""
    (state1, metrics1), (state8, metrics8) = one, many
    np.testing.assert_allclose(metrics1["loss"], metrics8["loss"], rtol=1e-5)
    np.testing.assert_allclose(metrics1["grad_norm"], metrics8["grad_norm"], rtol=1e-4)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
        state1.params,
        jax.device_get(state8.params),
    )
    assert int(state8.step) == 1
    return jax.tree.map(lambda a, b: not np.allclose(a, b), before.params, state1.params)


def test_batch_is_split_over_data_and_fsdp(data_dir, reference):
    _, batch, _, _ = reference
    exp = train.setup(tiny_config(data_dir, **{"sharding.mesh": MESHES["data=2,fsdp=2,tensor=2"]}))
    video = parallel.global_batch(batch, exp.batch_sharding)["video"]
    # 8 examples over data x fsdp = 4 shards: 2 per device, each shard on the 2 tensor devices.
    assert {s.data.shape[0] for s in video.addressable_shards} == {2}


def test_fsdp_holds_an_eighth_of_vivit_large_per_device(data_dir):
    """ViViT-L's layers (width 1024, 16 heads, MLP 4096; two of its 24, so 25M parameters +
    AdamW state, 0.3 GB): each device holds 1/8 of it. Every layer is split the same way, so
    the fraction is the full model's."""
    config = tiny_config(data_dir, **{"sharding.mesh": MESHES["fsdp=8"], "model.size": "L/16x2"})
    config.model.update(hidden_size=None, num_layers=2, num_heads=None, mlp_dim=None)
    exp = train.setup(config)
    state = train.create_state(exp, seed=0)
    tree = (state.params, state.opt_state)
    arrays = [x for x in jax.tree.leaves(tree) if x.ndim]
    total = sum(x.nbytes for x in arrays)
    block = state.params["encoder"]["block01"]["mlp"]["fc1"]["kernel"]
    assert block.shape == (1024, 4096) and block.sharding.spec[0] == "fsdp"
    assert sum(x.size for x in jax.tree.leaves(state.params)) > 25e6
    replicated = sum(x.nbytes for x in arrays if x.sharding.is_fully_replicated)
    held = parallel.bytes_per_device(tree)
    assert len(held) == 8
    assert replicated < 0.001 * total  # only small tensors (e.g. per-head biases) stay whole
    assert max(held.values()) <= total / 8 + replicated + 2**10
    report = parallel.memory_report(tree, exp.mesh, max_replicated_bytes=2**20)
    assert f"{max(held.values()) / 2**20:.1f} MiB max per device" in report

    # Initialisation never holds the whole model on one device (so a model larger than one
    # device initialises): XLA's own per-device accounting of the sharded init program.
    init = jax.jit(lambda k: nn.meta.unbox(exp.init_state(k)), out_shardings=exp.state_shardings)
    with jax.set_mesh(exp.mesh):
        stats = init.lower(jax.random.key(0)).compile().memory_analysis()
    assert stats.output_size_in_bytes <= total / 8 + replicated + 2**10
    assert stats.temp_size_in_bytes < total / 8


def test_accidentally_replicated_tensor_fails_loudly(data_dir):
    no_model_parallel = (
        "(('batch', ('data', 'fsdp')), ('time', None), ('tokens', None), ('embed', None), "
        "('heads', None), ('kv', None), ('mlp', None), ('classes', None))"
    )
    exp = train.setup(
        tiny_config(
            data_dir,
            **{"sharding.mesh": MESHES["fsdp=8"], "sharding.rules": no_model_parallel},
        )
    )
    state = train.create_state(exp, seed=0)
    with pytest.raises(parallel.ReplicationError, match=r"encoder/block00/mlp/fc1/kernel"):
        parallel.memory_report(state.params, exp.mesh, max_replicated_bytes=4096)
    # The same layout is fine on a pure data-parallel mesh: replication is the point there.
    data = train.setup(
        tiny_config(
            data_dir, **{"sharding.mesh": MESHES["data=8"], "sharding.rules": no_model_parallel}
        )
    )
    state = train.create_state(data, seed=0)
    assert "replicated" in parallel.memory_report(state.params, data.mesh, 4096)


def test_a_logical_name_without_rule_is_an_error_before_compiling(data_dir):
    rules = "(('batch', 'data'), ('time', None), ('tokens', None), ('embed', None), ('kv', None))"
    with pytest.raises(ValueError, match=r"no rule in config.sharding.rules: 'classes'.*'heads'"):
        train.setup(tiny_config(data_dir, **{"sharding.rules": rules}))


def test_a_dimension_the_mesh_does_not_divide_is_an_error_naming_it(data_dir):
    """The tiny ViViT's 2 heads on tensor=8 (as X3D's 54 channels on fsdp=4): one config error
    naming the tensor, its logical axis and the mesh axis, not jax's later IndivisibleError."""
    from vjax.config_utils import ConfigError

    mesh = "(('data', 1), ('fsdp', 1), ('tensor', 8))"
    named = r"key_kernel \(32, 2, 16\): 2 \('heads'\) over tensor=8; .* and 17 more"
    with pytest.raises(ConfigError, match=named):
        train.setup(tiny_config(data_dir, **{"sharding.mesh": mesh}))


def test_checkpoint_restores_onto_a_different_mesh(data_dir, tmp_path):
    """Saved sharded with fsdp=8, restored with data=2 x fsdp=2 x tensor=2: same values."""
    from vjax import checkpoint

    saved_exp = train.setup(tiny_config(data_dir, **{"sharding.mesh": MESHES["fsdp=8"]}))
    state = train.create_state(saved_exp, seed=3)
    manager = checkpoint.make_manager(str(tmp_path), max_to_keep=1)
    checkpoint.save(manager, 7, state, {"note": "fsdp=8"})
    manager.wait_until_finished()

    exp = train.setup(tiny_config(data_dir, **{"sharding.mesh": MESHES["data=2,fsdp=2,tensor=2"]}))
    restored, step = train.restore_state(exp, checkpoint.make_manager(str(tmp_path), 1))
    assert step == 7
    jax.tree.map(
        lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
        jax.device_get(state),
        jax.device_get(restored),
    )
    for array, sharding in zip(
        jax.tree.leaves(restored), jax.tree.leaves(exp.state_shardings), strict=True
    ):
        assert array.sharding.is_equivalent_to(sharding, array.ndim)
    kernel = restored.params["encoder"]["block00"]["mlp"]["fc1"]["kernel"]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")


# (vjax/parallel.py; needs the 8 host CPU devices conftest.py sets up)


# kills pa03
def test_process_rows_are_in_row_order_whatever_the_device_order():
    """process_rows gives this process's rows in global row order, even when the mesh's devices
    (and so the shards) are not in row order."""
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from vjax.parallel import process_rows

    if len(jax.devices()) < 8:
        pytest.skip("needs 8 devices")
    devices = np.asarray(jax.devices()[:8])[[3, 1, 0, 2, 7, 5, 4, 6]].reshape(2, 4)
    sharding = NamedSharding(Mesh(devices, ("data", "fsdp")), PartitionSpec(("fsdp", "data")))
    rows = jax.device_put(np.arange(16), sharding)
    np.testing.assert_array_equal(process_rows(rows), np.arange(16))


# kills pa06
def test_a_dimension_split_over_two_mesh_axes_must_divide_by_their_product():
    """A logical axis mapped to ("fsdp", "data") splits over 4 x 2 = 8: 12 does not divide."""
    import flax.linen as nn
    import jax
    from jax.sharding import Mesh

    from vjax.parallel import check_divisible

    if len(jax.devices()) < 8:
        pytest.skip("needs 8 devices")
    mesh = Mesh(np.asarray(jax.devices()[:8]).reshape(2, 4), ("data", "fsdp"))
    tree = {"w": nn.Partitioned(jax.ShapeDtypeStruct((12, 4), np.float32), ("embed", None))}
    with pytest.raises(ValueError, match=r"w \(12, 4\): 12 \('embed'\) over fsdpxdata=8"):
        check_divisible(tree, mesh, [("embed", ("fsdp", "data"))])


def test_mesh_axes_are_name_size_pairs_numpy_sizes_too():
    mesh = parallel.make_mesh([("data", np.int64(2)), ("fsdp", -1)])
    assert dict(mesh.shape) == {"data": 2, "fsdp": 4}
    with pytest.raises(ValueError, match=r"got the pair \('data', -1\) alone: write"):
        parallel.make_mesh(("data", -1))  # (("data", -1)) without its comma
