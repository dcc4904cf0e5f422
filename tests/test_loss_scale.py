"""float16 training: dynamic loss scaling skips overflowing steps, halves and grows the scale,
and checkpoints it so a resumed run continues exactly; bf16 parameters keep a bf16 state."""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DEMO_CONFIG

from vjax import checkpoint
from vjax.config_utils import load_config
from vjax.loss_scale import INITIAL_SCALE, initial_loss_scale
from vjax.optim import make_optimizer
from vjax.step import TrainState, make_init_state, make_train_step

CLIP = (2, 4, 4, 3)


class TinyHalf(nn.Module):
    """A float16 model with BatchNorm, as small as a train step allows (the model zoo's
    float16 einsums and convolutions do not run, or crawl, on CPU)."""

    dtype = jnp.float16

    @nn.compact
    def __call__(self, video, *, train):
        x = nn.Dense(8, dtype=self.dtype)(video.reshape(video.shape[0], -1))
        x = nn.BatchNorm(use_running_average=not train, dtype=self.dtype)(x)
        return nn.Dense(3, dtype=self.dtype)(nn.relu(x))


def _unboxed(tree):
    return jax.tree.map(
        lambda x: getattr(x, "value", x), tree, is_leaf=lambda x: hasattr(x, "unbox")
    )


def _float16_run(param_dtype: str = "float32") -> tuple[TrainState, Callable, Callable]:
    """``(state, jitted train step, init)`` of the float16 model with AdamW, parameters stored
    as ``param_dtype``; the scale of the state grows after 2 finite steps."""
    model = TinyHalf()
    opt = load_config(DEMO_CONFIG).optimizer.to_dict()
    tx = make_optimizer({**opt, "warmup_steps": 0}, num_steps=100)
    init = make_init_state(model, tx, CLIP, param_dtype)
    scale = initial_loss_scale(jnp.float16, growth_interval=2)
    state = jax.jit(lambda key: _unboxed(init(key)).replace(loss_scale=scale))(jax.random.key(0))
    state = jax.device_put(state, jax.devices()[0])  # committed, like a restored state
    step = jax.jit(make_train_step(model, tx, mean=(0.5,) * 3, std=(0.25,) * 3))
    return state, step, init


@pytest.fixture(scope="module")
def setup():
    """State, jitted train step and batch of the float16 model with AdamW (float32
    parameters), and its init."""
    state, step, init = _float16_run()
    rng = np.random.default_rng(0)
    batch = {"video": rng.integers(0, 256, (4, *CLIP), np.uint8), "label": np.arange(4) % 3}
    return state, step, batch, init


def _with_scale(state, scale: float):
    """``state`` with its loss scale set to ``scale`` (placed like the old one, so the
    jitted step is not compiled again)."""
    value = jax.device_put(jnp.float32(scale), state.loss_scale.scale.sharding)
    return state.replace(loss_scale=state.loss_scale.replace(scale=value))


def _scale(state) -> tuple[float, int]:
    return float(state.loss_scale.scale), int(state.loss_scale.fin_steps)


def test_only_float16_gets_a_loss_scale(setup):
    _, _, _, init = setup
    abstract = jax.eval_shape(init, jax.random.key(0)).loss_scale
    assert (abstract.scale.dtype, abstract.fin_steps.dtype) == (jnp.float32, jnp.int32)
    fresh = initial_loss_scale(jnp.float16)
    assert (float(fresh.scale), int(fresh.fin_steps)) == (INITIAL_SCALE, 0)
    assert initial_loss_scale(jnp.bfloat16) is None and initial_loss_scale(jnp.float32) is None


def test_overflow_is_skipped_and_halves_the_scale_then_finite_steps_grow_it(setup, tmp_path):
    state, step, batch, _ = setup
    key = jax.random.key(1)
    # A scale of 2^40 overflows float16's backward pass (its largest number is 65504).
    huge = _with_scale(state, 2.0**40)
    after, metrics = step(huge, batch, key)
    assert float(metrics["skipped"]) == 1.0 and float(metrics["loss_scale"]) == 2.0**40
    assert np.isfinite(float(metrics["loss"])) and float(metrics["grad_norm"]) == 0.0
    assert _scale(after) == (2.0**39, 0)
    for name in ("params", "opt_state", "model_state"):
        new, old = (jax.tree.leaves(getattr(s, name)) for s in (after, huge))
        for a, b in zip(new, old, strict=True):
            np.testing.assert_array_equal(a, b, err_msg=name)
    assert int(after.step) == 1  # the step count (dropout keys) still advances

    # From scale 1: the second finite step doubles the scale (growth_interval=2), as
    # PyTorch's GradScaler and jmp count (flax's own rule doubled on the third).
    state = _with_scale(state, 1.0)
    scales = []
    for _ in range(4):
        before = state.params
        state, metrics = step(state, batch, key)
        assert float(metrics["skipped"]) == 0.0
        assert not np.array_equal(jax.tree.leaves(state.params)[0], jax.tree.leaves(before)[0])
        scales.append(_scale(state))
    assert scales == [(1.0, 1), (2.0, 0), (2.0, 1), (4.0, 0)]

    # The scale is part of the checkpoint: a restored state continues exactly.
    manager = checkpoint.make_manager(str(tmp_path), max_to_keep=1)
    checkpoint.save(manager, 4, state, {"note": "float16"})
    manager.wait_until_finished()
    abstract = checkpoint.abstract_like(state, jax.tree.map(lambda x: x.sharding, state))
    restored, saved_step = checkpoint.restore_latest(manager, abstract)
    assert saved_step == 4 and _scale(restored) == (4.0, 0)
    continued, resumed = step(state, batch, key)[0], step(restored, batch, key)[0]
    for a, b in zip(jax.tree.leaves(continued), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    assert _scale(resumed) == (4.0, 1)


def test_bfloat16_params_keep_the_state_dtypes_so_the_step_compiles_once(setup):
    """float16 compute with ``train.param_dtype="bfloat16"``: the unscaled gradients come
    back in bf16, so AdamW's moments stay bf16. Each step returns a state of the type it
    took (the step compiles once, and a checkpoint matches the state ``init`` builds to
    restore it into)."""
    batch = setup[2]
    state, step, _ = _float16_run("bfloat16")
    types = lambda tree: [jax.typeof(x) for x in jax.tree.leaves(tree)]  # noqa: E731
    initial = types(state)
    assert jnp.dtype(jnp.bfloat16) in {x.dtype for x in jax.tree.leaves(state.opt_state)}
    for _ in range(3):
        state, metrics = step(state, batch, jax.random.key(1))
        assert float(metrics["skipped"]) == 0.0
        assert types(state) == initial
