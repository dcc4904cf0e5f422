"""Optimiser from config: schedule shape, decay mask, clipping, SGD; the loss helpers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import DEMO_CONFIG

from vjax.config_utils import load_config
from vjax.optim import decay_mask, learning_rate_schedule, make_optimizer
from vjax.step import cross_entropy, topk_correct

# The demo config's optimiser section, with round numbers the assertions below rely on.
OPT = {
    **load_config(DEMO_CONFIG).optimizer.to_dict(),
    **dict(name="adamw", lr=1e-3, end_lr=1e-5, warmup_steps=10, weight_decay=0.1),
    **dict(grad_clip_norm=1.0, label_smoothing=0.0, momentum=0.9),
}
PARAMS = {
    "dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones((2,))},
    "norm": {"scale": jnp.ones((2,)), "bias": jnp.ones((2,))},
    "pos_embedding": jnp.ones((1, 4, 2)),
    "cls": jnp.ones((1, 1, 2)),
}


def test_schedule_warms_up_linearly_then_decays_by_cosine():
    schedule = learning_rate_schedule(OPT, num_steps=110)
    assert float(schedule(0)) == 0.0
    assert float(schedule(5)) == pytest.approx(5e-4)
    assert float(schedule(10)) == pytest.approx(1e-3)
    # Cosine from step 10 to 110: halfway (step 60) is the mean of peak and end.
    assert float(schedule(60)) == pytest.approx((1e-3 + 1e-5) / 2, rel=1e-4)
    assert float(schedule(110)) == pytest.approx(1e-5)
    # A warmup not shorter than the run (10 of 10 steps) is clipped to 10% of it: 1 step.
    short = learning_rate_schedule(OPT, num_steps=10)
    assert float(short(0)) == 0.0 and float(short(1)) == pytest.approx(1e-3)
    assert float(short(10)) == pytest.approx(1e-5)
    assert float(learning_rate_schedule({**OPT, "warmup_steps": 0}, 10)(0)) == pytest.approx(1e-3)


def test_weight_decay_applies_to_kernels_only():
    mask = decay_mask(PARAMS)
    assert mask == {
        "dense": {"kernel": True, "bias": False},
        "norm": {"scale": False, "bias": False},
        "pos_embedding": False,
        "cls": False,
    }
    # With zero gradients only decay moves parameters: kernels shrink, nothing else changes.
    opt = {**OPT, "warmup_steps": 0, "grad_clip_norm": 0.0}
    tx = make_optimizer(opt, num_steps=100)
    zeros = jax.tree.map(jnp.zeros_like, PARAMS)
    updates, _ = tx.update(zeros, tx.init(PARAMS), PARAMS)
    new = optax.apply_updates(PARAMS, updates)
    assert float(new["dense"]["kernel"][0, 0]) == pytest.approx(1 - 1e-3 * 0.1)
    for path in (("dense", "bias"), ("norm", "scale"), ("norm", "bias")):
        np.testing.assert_array_equal(new[path[0]][path[1]], 1.0)
    np.testing.assert_array_equal(new["pos_embedding"], 1.0)


def test_gradients_are_clipped_by_global_norm():
    opt = {**OPT, "name": "sgd", "momentum": 0.0, "weight_decay": 0.0, "warmup_steps": 0}
    tx = make_optimizer(opt, num_steps=100)
    grads = jax.tree.map(lambda p: 100.0 * jnp.ones_like(p), PARAMS)
    updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
    # SGD update = -lr * clipped gradient, and the clipped gradient has global norm 1.
    assert float(optax.tree_utils.tree_norm(updates)) == pytest.approx(1e-3, rel=1e-5)


def test_sgd_momentum_accumulates():
    opt = {**OPT, "name": "sgd", "weight_decay": 0.0, "grad_clip_norm": 0.0, "warmup_steps": 0}
    tx = make_optimizer(opt, num_steps=10**9)  # lr ~ constant over two steps
    grads = jax.tree.map(jnp.ones_like, PARAMS)
    state = tx.init(PARAMS)
    first, state = tx.update(grads, state, PARAMS)
    second, _ = tx.update(grads, state, PARAMS)
    assert float(second["cls"][0, 0, 0]) == pytest.approx(1.9 * float(first["cls"][0, 0, 0]))


def test_unknown_optimizer_is_an_error():
    with pytest.raises(ValueError, match="'adam'.*adamw, sgd"):
        make_optimizer({**OPT, "name": "adam"}, num_steps=100)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"lr": float("nan")}, "optimizer.lr must be finite, got nan"),  # trained to NaN
        ({"grad_clip_norm": float("inf")}, "optimizer.grad_clip_norm must be finite"),
        ({"b1": "0.9"}, "optimizer.b1 must be a number, got '0.9'"),  # failed in optax's update
        ({"weight_decay": None}, "optimizer.weight_decay must be a number, got None"),
        ({"end_lr": ...}, r"optimizer.end_lr is missing \(the recipes in configs/ set it\)"),
    ],
)
def test_a_setting_that_is_not_a_finite_number_is_named(setting, message):
    opt = {k: v for k, v in {**OPT, **setting}.items() if v is not ...}
    with pytest.raises(ValueError, match=message):
        make_optimizer(opt, num_steps=10)
    make_optimizer({**OPT, "lr": jnp.float32(1e-3), "b1": np.float32(0.9)}, num_steps=10)


def test_label_smoothed_cross_entropy_matches_numpy():
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]], np.float32)
    labels = np.array([0, 2])
    smoothing = 0.1
    targets = np.eye(3)[labels] * (1 - smoothing) + smoothing / 3
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -(targets * log_probs).sum(-1)
    np.testing.assert_allclose(cross_entropy(logits, labels, smoothing), expected, rtol=1e-6)


def test_topk_correct():
    logits = jnp.array([[0.1, 0.9, 0.5], [0.8, 0.1, 0.2]])
    labels = jnp.array([2, 0])
    np.testing.assert_array_equal(topk_correct(logits, labels, 1), [0.0, 1.0])
    np.testing.assert_array_equal(topk_correct(logits, labels, 2), [1.0, 1.0])
    np.testing.assert_array_equal(topk_correct(logits, labels, 5), [1.0, 1.0])


# A constant learning rate of 0.1, no clipping, momentum or layer decay: updates a NumPy
# optimiser can follow step by step.
CONSTANT_LR = dict(
    lr=0.1,
    end_lr=0.1,
    warmup_steps=0,
    b1=0.9,
    b2=0.999,
    momentum=0.0,
    nesterov=False,
    grad_clip_norm=0.0,
    layer_decay=1.0,
)


def _numpy_adamw(p, grads, lr, b1, b2, wd, eps=1e-8, scale=1.0):
    m = v = 0.0
    for t, g in enumerate(grads, 1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        update = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps) + wd * p
        p = p - lr * scale * update
    return p


def test_adamw_three_steps_match_numpy_and_layer_decay_scales_the_whole_update():
    from vjax.optim import make_optimizer

    params = {
        "encoder": {
            "block00": {"kernel": jnp.full((2,), 1.0)},
            "block01": {"kernel": jnp.full((2,), 1.0)},
        },
        "head": {"kernel": jnp.full((2,), 1.0)},
    }
    grads = [0.3, -1.0, 0.5]
    for layer_decay in (1.0, 0.5):
        tx = make_optimizer(
            {**CONSTANT_LR, "name": "adamw", "weight_decay": 0.05, "layer_decay": layer_decay},
            num_steps=100,
        )
        state, p = tx.init(params), params
        for g in grads:
            gradient = jax.tree.map(lambda x, g=g: jnp.full_like(x, g), p)
            updates, state = tx.update(gradient, state, p)
            p = optax.apply_updates(p, updates)
        # block00 is layer 1 of 2: decay ** (2 + 1 - 1); the head is 1.
        for path, scale in (
            (("encoder", "block00"), layer_decay**2),
            (("encoder", "block01"), layer_decay),
            (("head",), 1.0),
        ):
            got = p
            for k in path:
                got = got[k]
            want = _numpy_adamw(1.0, grads, 0.1, 0.9, 0.999, 0.05, scale=scale)
            np.testing.assert_allclose(got["kernel"], want, rtol=1e-5, err_msg=str(path))


def test_frozen_parameters_keep_their_values_and_the_rest_train_as_if_alone():
    """optimizer.freeze: the frozen block gets no update (not even weight decay) and no
    optimiser state, its gradient (100, which would dominate) takes no part in the clipping
    norm, and layer decay scales the other blocks as it does without freezing."""
    from vjax.optim import make_optimizer

    params = {
        "encoder": {
            "block00": {"kernel": jnp.full((2,), 1.0)},
            "block01": {"kernel": jnp.full((2,), 1.0)},
        },
        "head": {"kernel": jnp.full((2,), 1.0)},
    }
    opt = {**CONSTANT_LR, "name": "adamw", "weight_decay": 0.05, "layer_decay": 0.5,
           "grad_clip_norm": 1.0, "freeze": "block00"}  # fmt: skip
    tx = make_optimizer(opt, num_steps=100)
    grads = [0.3, -1.0, 0.5]
    state, p = tx.init(params), params
    for g in grads:
        gradient = jax.tree.map(lambda x, g=g: jnp.full_like(x, g), p)
        gradient["encoder"]["block00"]["kernel"] = jnp.full((2,), 100.0)
        updates, state = tx.update(gradient, state, p)
        p = optax.apply_updates(p, updates)
    np.testing.assert_array_equal(p["encoder"]["block00"]["kernel"], 1.0)
    clipped = [g * min(1.0, 1.0 / np.sqrt(4 * g * g)) for g in grads]  # 4 trained numbers
    for path, scale in ((("encoder", "block01"), 0.5), (("head",), 1.0)):
        got = p
        for k in path:
            got = got[k]
        want = _numpy_adamw(1.0, clipped, 0.1, 0.9, 0.999, 0.05, scale=scale)
        np.testing.assert_allclose(got["kernel"], want, rtol=1e-5, err_msg=str(path))
    assert sum(x.size for x in jax.tree.leaves(state) if x.ndim) == 2 * 4  # Adam's m and v
    # The top block frozen: the depth still counts it (block00 at decay ** 2, as unfrozen).
    tx = make_optimizer({**opt, "freeze": "block01", "grad_clip_norm": 0.0}, num_steps=100)
    state, p = tx.init(params), params
    for g in grads:
        updates, state = tx.update(jax.tree.map(lambda x, g=g: jnp.full_like(x, g), p), state, p)
        p = optax.apply_updates(p, updates)
    np.testing.assert_array_equal(p["encoder"]["block01"]["kernel"], 1.0)
    want = _numpy_adamw(1.0, grads, 0.1, 0.9, 0.999, 0.05, scale=0.25)
    np.testing.assert_allclose(p["encoder"]["block00"]["kernel"], want, rtol=1e-5)


def test_sgd_weight_decay_spares_biases_and_norms():
    from vjax.optim import make_optimizer

    params = {
        "dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))},
        "norm": {"scale": jnp.ones((2,))},
    }
    tx = make_optimizer({**CONSTANT_LR, "name": "sgd", "weight_decay": 0.1}, num_steps=100)
    zeros = jax.tree.map(jnp.zeros_like, params)
    new = optax.apply_updates(params, tx.update(zeros, tx.init(params), params)[0])
    np.testing.assert_allclose(new["dense"]["kernel"], 1 - 0.1 * 0.1)
    np.testing.assert_array_equal(new["dense"]["bias"], 1.0)
    np.testing.assert_array_equal(new["norm"]["scale"], 1.0)


def test_timesformer_time_embedding_is_layer_zero():
    from vjax.optim import layer_decay_scales

    params = {"time_embedding": jnp.ones(2), "encoder": {"block00": {"k": jnp.ones(2)}}}
    assert float(layer_decay_scales(params, 0.5)["time_embedding"]) == 0.25
