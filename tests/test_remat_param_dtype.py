"""``model.remat`` and ``train.param_dtype``: a train step with either option computes what the
default one does (float32 tolerance for remat, bf16 tolerance for bf16 parameters over 3
steps), the options really apply (a remat in the gradient's jaxpr, bf16 leaves in the state
and the checkpoint), and a bad value is a ConfigError naming the valid ones."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import moved_below_the_head, randomized

from vjax import checkpoint
from vjax.bench_peers import synthetic_batch
from vjax.config_utils import ConfigError
from vjax.models import build_model
from vjax.preflight import check_config
from vjax.step import PARAM_DTYPES, make_init_state, make_train_step, round_stochastically

TINY = {"size": "Ti/8x2", "num_layers": 2, "hidden_size": 16, "num_heads": 2, "mlp_dim": 32}
CLIP = (4, 16, 16, 3)
NORM = {"mean": (0.45,) * 3, "std": (0.225,) * 3}


def _start(model_config, tx, param_dtype="float32"):
    """``(model, state)``: the initial train state with random parameters (from a fresh init
    the zero head passes no gradient below it, and only the head would show what the options
    change)."""
    model = build_model(model_config, 10)
    init = make_init_state(model, tx, CLIP, param_dtype)
    state = jax.jit(lambda key: nn.meta.unbox(init(key)))(jax.random.key(0))
    return model, state.replace(params=randomized({"params": state.params})["params"])


def _steps(model_config, tx, steps=1, param_dtype="float32", trace=False):
    """``(start, state, [loss per step], gradient jaxpr text)``: :func:`_start`'s state and
    the state after ``steps`` jitted train steps from it; the step's jaxpr only when
    ``trace`` (else None)."""
    model, start = _start(model_config, tx, param_dtype)
    state = start
    batch = synthetic_batch(2, CLIP[:3])
    batch["label"] = batch["label"] % 10
    step = make_train_step(model, tx, **NORM)
    jitted = jax.jit(step)
    losses = []
    for _ in range(steps):
        state, metrics = jitted(state, batch, jax.random.key(1))
        losses.append(float(metrics["loss"]))
    jaxpr = str(jax.make_jaxpr(step)(state, batch, jax.random.key(1))) if trace else None
    return start, state, losses, jaxpr


@pytest.mark.parametrize(
    "model_config,policies",
    [({"name": "vivit", **TINY}, ("block", "dots")),
     ({"name": "timesformer", **TINY, "size": "Ti/8"}, ("block",)),  # divided attention
     ({"name": "mbt", **TINY, "modalities": ("video",), "fusion_layer": 1}, ("block",))],
    ids=["vivit", "timesformer_divided", "mbt"],
)  # fmt: skip
def test_remat_computes_the_default_step(model_config, policies):
    sgd = optax.sgd(1.0)  # new params = params - gradients: the update shows the gradients
    start, base, base_loss, base_jaxpr = _steps(model_config, sgd, trace=True)
    assert moved_below_the_head(start.params, base.params)
    assert "remat" not in base_jaxpr and "checkpoint" not in base_jaxpr
    for policy in policies:
        _, state, loss, jaxpr = _steps({**model_config, "remat": policy}, sgd, trace=True)
        assert "checkpoint" in jaxpr or "remat" in jaxpr, policy
        assert loss == pytest.approx(base_loss, rel=1e-6)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
            state.params,
            base.params,
        )


def test_bf16_params_follow_the_float32_run(tmp_path):
    tx = optax.adamw(1e-3)
    config = {"name": "vivit", **TINY}
    start, base, base_losses, _ = _steps(config, tx, steps=3)
    _, state, losses, _ = _steps(config, tx, steps=3, param_dtype="bfloat16")
    assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.bfloat16)}
    mu = state.opt_state[0].mu
    assert {x.dtype for x in jax.tree.leaves(mu)} == {jnp.dtype(jnp.bfloat16)}
    # What the steps changed, not the values (which the tolerances of bf16 would pass from the
    # start): the losses' steps, and the parameters' drift along the float32 run's.
    np.testing.assert_allclose(np.diff(losses), np.diff(base_losses), rtol=5e-2)
    assert 0.9 < _drift_along({"float32": base, "bfloat16": state}, start.params) < 1.1
    manager = checkpoint.make_manager(str(tmp_path), 1, async_save=False)
    checkpoint.save(manager, 3, state, {})
    manager.wait_until_finished()
    saved = manager.item_metadata(3)["state"]
    assert {m.dtype for m in jax.tree.leaves(saved["params"])} == {jnp.dtype(jnp.bfloat16)}
    manager.close()


def test_bf16_params_keep_small_updates_on_average():
    """At a learning rate below half a bf16 step of the weights (late in a cosine, or a lower
    layer under layer decay) round-to-nearest dropped the updates (91% of the weights never
    moved in 20 steps; their drift along the float32 run's was 0.09 of it); rounded
    stochastically, the bf16 run drifts as the float32 one does."""
    tx = optax.adamw(1e-5, weight_decay=0.05)
    config = {"name": "vivit", **TINY}
    runs = {dtype: _steps(config, tx, steps=20, param_dtype=dtype) for dtype in PARAM_DTYPES}
    start = runs["float32"][0].params  # the float32 run's start
    assert 0.9 < _drift_along({dtype: run[1] for dtype, run in runs.items()}, start) < 1.1


def _drift_along(ends: dict, start) -> float:
    """How far the bfloat16 run's parameters moved from ``start`` along the float32 run's
    move (1: as far; each run from ``start`` in its own dtype)."""
    drift = {
        dtype: np.concatenate([
            (np.float32(end) - np.float32(np.asarray(begin, PARAM_DTYPES[dtype]))).ravel()
            for end, begin in zip(jax.tree.leaves(state.params), jax.tree.leaves(start),
                                  strict=True)
        ])
        for dtype, state in ends.items()
    }  # fmt: skip
    return drift["bfloat16"] @ drift["float32"] / (drift["float32"] @ drift["float32"])


def test_bf16_adamw_moments_follow_float32_over_thousands_of_steps():
    """AdamW at b2 = 0.999 moves its second moment by 0.1% a step, under half a bf16 step:
    rounded to nearest it stopped following the gradients (mean nu 0.82 against float32's
    0.094 after the gradients shrank tenfold; updates 3x too small). torch.optim.AdamW in
    float32 equals optax's float32 run here (tests of vjax.optim), the reference."""
    from vjax.optim import make_optimizer
    from vjax.step import update_optimizer

    opt = dict(name="adamw", lr=1e-3, end_lr=1e-3, warmup_steps=0, b1=0.9, b2=0.999,
               weight_decay=0.0, grad_clip_norm=0.0, layer_decay=1.0)  # fmt: skip
    tx = make_optimizer(opt, 10**6)
    steps, size = 3000, 1024
    scales = jnp.where(jnp.arange(steps) < 1000, 1.0, 0.1)
    noise = jax.random.normal(jax.random.key(0), (steps, size))
    grads = (noise * scales[:, None]).astype(jnp.bfloat16)  # the same values for both runs

    def run(dtype, update):
        params = {"kernel": jnp.zeros((size,), dtype)}

        def step(state, inputs):
            t, g = inputs
            updates, state = update(state, {"kernel": g.astype(dtype)}, params, t)
            return state, jnp.sqrt(jnp.mean(jnp.square(updates["kernel"].astype(jnp.float32))))

        state, rms = jax.lax.scan(step, tx.init(params), (jnp.arange(steps), grads))
        nu = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]
              if "nu" in jax.tree_util.keystr(path)]  # fmt: skip
        return jnp.mean(nu[0].astype(jnp.float32)), rms

    plain = lambda state, g, params, t: tx.update(g, state, params)  # noqa: E731
    rounded = lambda state, g, params, t: update_optimizer(  # noqa: E731
        tx, g, state, params, jax.random.fold_in(jax.random.key(1), t)
    )
    nu_f32, rms_f32 = jax.jit(lambda: run(jnp.float32, plain))()
    nu_bf16, rms_bf16 = jax.jit(lambda: run(jnp.bfloat16, rounded))()
    assert float(nu_bf16) == pytest.approx(float(nu_f32), rel=0.05)
    np.testing.assert_allclose(rms_bf16[-500:].mean(), rms_f32[-500:].mean(), rtol=0.05)


def test_stochastic_rounding_picks_a_neighbour_in_proportion_to_its_distance():
    x = np.asarray([0.0137, -0.0137, 1.0 + 2**-10, -3.3e-5, 0.25, 1e30], np.float32)
    seeds = jax.random.bits(jax.random.key(0), (4000,), jnp.uint32)  # one per step
    rounded = np.float32(jax.vmap(lambda seed: round_stochastically(jnp.asarray(x), seed))(seeds))
    down = (x.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)  # toward zero
    up = ((x.view(np.uint32) & np.uint32(0xFFFF0000)) + np.uint32(0x10000)).view(np.float32)
    assert np.all((rounded == down) | (rounded == up))
    share_up = (np.abs(x) - np.abs(down)) / (np.abs(up) - np.abs(down))
    sigma = np.sqrt(share_up * (1 - share_up) / len(seeds))
    np.testing.assert_array_less(np.abs((rounded == up).mean(0) - share_up), 4 * sigma + 1e-9)
    assert (rounded == up).mean(0)[-2] == 0.0  # 0.25 is a bf16 value: never moved
    # Inf and NaN stay what they are (the carry turned NaN 0x7FFFFFFF, the GPU's, into -0.0).
    special = np.asarray([0x7FFFFFFF, 0xFFFFFFFF, 0x7F800001, 0x7F800000, 0xFF800000], np.uint32)
    out = np.float32(round_stochastically(jnp.asarray(special.view(np.float32)), seeds[0]))
    assert np.isnan(out[:3]).all() and list(out[3:]) == [np.inf, -np.inf]


def test_bad_values_are_config_errors_naming_the_valid_ones(data_dir):
    from conftest import tiny_config

    config = tiny_config(data_dir, **{"train.param_dtype": "float16"})
    with pytest.raises(ConfigError, match="train: unknown param_dtype 'float16'; valid: float32, "
                       "bfloat16"):  # fmt: skip
        check_config(config)
    config = tiny_config(data_dir, **{"train.dtype": "float64"})  # train's, not model's
    with pytest.raises(ConfigError, match="^config.train: unknown dtype 'float64'; valid: "
                       "float32, bfloat16, float16$"):  # fmt: skip
        check_config(config)
    config = tiny_config(data_dir, **{"model.remat": "all"})
    with pytest.raises(ConfigError, match="model: unknown remat 'all'; valid: none, block, dots"):
        check_config(config)
