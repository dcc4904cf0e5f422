"""One train step sharded over 8 host CPU devices (data, FSDP and tensor parallel meshes)
equals the same step on one device; FSDP really splits parameters and optimiser state."""

import flax.linen as nn
import jax
import numpy as np
import pytest
from conftest import tiny_config

from vjax import parallel, train
from vjax.data.pipeline import TrainBatches

MESHES = {
    "data=8": "(('data', 8), ('fsdp', 1), ('tensor', 1))",
    "fsdp=8": "(('data', 1), ('fsdp', 8), ('tensor', 1))",
    "data=2,fsdp=2,tensor=2": "(('data', 2), ('fsdp', 2), ('tensor', 2))",
}
# Dropout and drop-path on, so the per-example random masks must agree across meshes too.
OVERRIDES = {
    "model.dropout_rate": "0.1",
    "model.drop_path_rate": "0.1",
    "optimizer.warmup_steps": "0",
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
    state = jax.device_get(train.create_state(single, seed=0))
    batch = TrainBatches(single.builder.as_data_source("train"), 8, seed=0)(0)
    new_state, metrics = _one_step(single, state, batch)
    return state, batch, jax.device_get(new_state), metrics


@pytest.mark.parametrize("mesh", list(MESHES))
def test_sharded_step_matches_one_device(data_dir, reference, mesh):
    assert jax.device_count() == 8
    state, batch, state1, metrics1 = reference
    exp = train.setup(tiny_config(data_dir, **OVERRIDES, **{"sharding.mesh": MESHES[mesh]}))
    assert exp.mesh.size == 8
    state8, metrics8 = _one_step(exp, state, batch)

    np.testing.assert_allclose(metrics1["loss"], metrics8["loss"], rtol=1e-5)
    np.testing.assert_allclose(metrics1["grad_norm"], metrics8["grad_norm"], rtol=1e-4)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
        state1.params,
        jax.device_get(state8.params),
    )
    assert int(state8.step) == 1
    changed = jax.tree.map(lambda a, b: not np.allclose(a, b), state.params, state1.params)
    assert any(jax.tree.leaves(changed))  # the step really moved the parameters


def test_batch_is_split_over_data_and_fsdp(data_dir, reference):
    _, batch, _, _ = reference
    exp = train.setup(tiny_config(data_dir, **{"sharding.mesh": MESHES["data=2,fsdp=2,tensor=2"]}))
    video = parallel.global_batch(batch, exp.batch_sharding)["video"]
    # 8 examples over data x fsdp = 4 shards: 2 per device, each shard on the 2 tensor devices.
    assert {s.data.shape[0] for s in video.addressable_shards} == {2}


def test_fsdp_holds_an_eighth_of_parameters_and_optimiser_state_per_device(data_dir):
    exp = train.setup(tiny_config(data_dir, **{"sharding.mesh": MESHES["fsdp=8"]}))
    state = train.create_state(exp, seed=0)
    arrays = [x for x in jax.tree.leaves((state.params, state.opt_state)) if x.ndim]
    total = sum(x.nbytes for x in arrays)
    replicated = sum(x.nbytes for x in arrays if x.sharding.is_fully_replicated)
    device = jax.devices()[0]
    on_device = sum(
        s.data.nbytes for x in arrays for s in x.addressable_shards if s.device == device
    )
    assert replicated < 0.05 * total  # only small tensors (e.g. per-head biases) stay whole
    assert on_device <= total / 8 + replicated
