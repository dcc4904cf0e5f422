"""One train step sharded over 8 host CPU devices equals the same step on one device."""

import jax
import numpy as np
from conftest import tiny_config

from vjax import parallel, train
from vjax.data.pipeline import TrainBatches


def _one_step(exp, state, batch):
    train_step, _ = train.compile_steps(exp)
    state = jax.device_put(state, exp.state_shardings)
    batch = parallel.global_batch(batch, exp.batch_sharding)
    with jax.set_mesh(exp.mesh):
        import flax.linen as nn

        with nn.logical_axis_rules(exp.rules):
            new_state, metrics = train_step(state, batch, jax.random.key(1))
    return jax.device_get(new_state), jax.device_get(metrics)


def test_eight_device_step_matches_one_device(data_dir):
    assert jax.device_count() == 8
    config = tiny_config(
        data_dir,
        **{
            "model.dropout_rate": "0.1",
            "model.drop_path_rate": "0.1",
            "optimizer.warmup_steps": "0",
        },
    )
    single = train.setup(config, devices=jax.devices()[:1])
    sharded = train.setup(config)
    assert dict(sharded.mesh.shape) == {"data": 8} and dict(single.mesh.shape) == {"data": 1}

    state = jax.device_get(train.create_state(single, seed=0))
    batch = TrainBatches(single.builder.as_data_source("train"), 8, seed=0)(0)
    state1, metrics1 = _one_step(single, state, batch)
    state8, metrics8 = _one_step(sharded, state, batch)

    # The batch really was split: each device held one example.
    placed = parallel.global_batch(batch, sharded.batch_sharding)["video"]
    assert {s.data.shape[0] for s in placed.addressable_shards} == {1}
    np.testing.assert_allclose(metrics1["loss"], metrics8["loss"], rtol=1e-5)
    np.testing.assert_allclose(metrics1["grad_norm"], metrics8["grad_norm"], rtol=1e-4)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
        state1.params,
        state8.params,
    )
    assert int(state8.step) == 1
    # And the step did change the parameters.
    changed = jax.tree.map(lambda a, b: not np.allclose(a, b), state.params, state8.params)
    assert any(jax.tree.leaves(changed))
