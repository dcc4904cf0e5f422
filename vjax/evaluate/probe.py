"""Linear probe: how much of the label a frozen model's features hold, the standard measure of
a self-supervised encoder (a multinomial logistic regression on the features its classifier
head receives; nothing else trains, so no fine-tuning luck enters the number).

>>> train = head_inputs(module, variables, train_inputs)    # (N, D), the head's input
>>> test = head_inputs(module, variables, test_inputs)
>>> linear_probe(train, train_labels, test, test_labels, num_classes=10)
{'top1': 0.38, 'l2': 0.01}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vjax.errors import UserError
from vjax.models.layers import ClassifierHead

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
"""The L2 strengths cross-validation chooses from (on standardised features, per clip)."""
_ITERATIONS = 300  # L-BFGS steps: within 2e-3 of scikit-learn's probabilities in the tests


def head_input_function(module: nn.Module) -> Callable[[Any, Any], jax.Array]:
    """``features(variables, inputs) -> (B, D) float32``: what ``module``'s
    :class:`ClassifierHead` receives for a batch of the model's prepared inputs, at evaluation
    (``train=False``); to be jitted by the caller (alone, or inside a sharded step)."""

    def features(variables, batch):
        captured = []

        def capture(next_fun, args, kwargs, context):
            if isinstance(context.module, ClassifierHead) and context.method_name == "__call__":
                captured.append(args[0])
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(capture):
            module.apply(variables, batch, train=False)
        if len(captured) != 1:
            raise UserError(  # a ValueError too; one line from the command line
                f"{type(module).__name__} has no single classifier head to probe (MBT has one "
                f"per modality)"
            )
        return captured[0].astype(jnp.float32)

    return features


def head_inputs(module: nn.Module, variables: Any, inputs: Any, batch_size: int = 64) -> np.ndarray:
    """``(N, D)``: :func:`head_input_function` for each of ``inputs`` (the model's prepared
    input, batched by ``batch_size``)."""
    apply = jax.jit(head_input_function(module))  # the weights an argument, not constants
    starts = range(0, len(jax.tree.leaves(inputs)[0]), batch_size)
    batches = (jax.tree.map(lambda x, i=i: x[i : i + batch_size], inputs) for i in starts)
    return np.concatenate([np.asarray(apply(variables, batch)) for batch in batches])


@jax.jit
def _fit(x: jax.Array, onehot: jax.Array, l2: jax.Array) -> tuple[jax.Array, jax.Array]:
    """L-BFGS on the regularised mean cross-entropy (compiled once per data shape)."""

    def loss(params):
        logits = x @ params[0] + params[1]
        cross_entropy = -(onehot * jax.nn.log_softmax(logits)).sum(-1).mean()
        return cross_entropy + 0.5 * l2 * jnp.sum(params[0] ** 2)

    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def step(carry, _):
        params, state = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = solver.update(grad, state, params, value=value, grad=grad, value_fn=loss)
        return (optax.apply_updates(params, updates), state), None

    params = (jnp.zeros((x.shape[1], onehot.shape[1])), jnp.zeros((onehot.shape[1],)))
    (params, _), _ = jax.lax.scan(step, (params, solver.init(params)), length=_ITERATIONS)
    return params


def fit_logistic(
    features: np.ndarray, labels: np.ndarray, num_classes: int, l2: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(weights (D, K), bias (K,))`` minimising the mean cross-entropy plus
    ``l2 / 2 * |weights|^2`` (the bias unpenalised: scikit-learn's ``LogisticRegression`` with
    ``C = 1 / (l2 * N)``), by L-BFGS in float32."""
    onehot = jax.nn.one_hot(jnp.asarray(labels), num_classes)
    weights, bias = _fit(jnp.asarray(features, jnp.float32), onehot, jnp.float32(l2))
    return np.asarray(weights), np.asarray(bias)


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Each array scaled by the training features' per-dimension mean and std."""
    mean, std = train.mean(0), train.std(0) + 1e-6
    return [(a - mean) / std for a in (train, *others)]


def _accuracy(weights, bias, features, labels) -> float:
    return float(np.mean(np.argmax(features @ weights + bias, axis=1) == labels))


def stratified_folds(labels: np.ndarray, folds: int) -> np.ndarray:
    """Each clip's fold ``0 .. folds - 1``, every class dealt out evenly (counts differ by at
    most one) in a fixed shuffled order: folds by position alone would follow a dataset whose
    labels cycle with the index (vjax_motion's ``index % classes``) and hold whole classes out."""
    labels = np.asarray(labels)
    order = np.lexsort((np.random.default_rng(0).permutation(len(labels)), labels))
    fold = np.empty(len(labels), int)
    fold[order] = np.arange(len(labels)) % folds
    return fold


def choose_l2(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    grid: Sequence[float] = L2_GRID,
    folds: int = 5,
) -> float:
    """The strength of ``grid`` with the best mean held-out top-1 over ``folds`` stratified
    folds of the training clips (ties: the stronger), so the test split never picks it; fewer
    clips than ``folds``: one fold per clip."""
    folds = min(folds, len(labels))
    if folds < 2:
        raise ValueError(
            f"choosing the L2 strength by cross-validation needs at least 2 training clips, got "
            f"{len(labels)}"
        )
    fold = stratified_folds(labels, folds)
    scores = []
    for l2 in grid:
        held_out = []
        for k in range(folds):
            train, test = _standardise(features[fold != k], features[fold == k])
            weights, bias = fit_logistic(train, labels[fold != k], num_classes, l2)
            held_out.append(_accuracy(weights, bias, test, labels[fold == k]))
        scores.append(np.mean(held_out))
    best = max(scores)
    return max(l2 for l2, score in zip(grid, scores, strict=True) if score == best)


def linear_probe(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    num_classes: int,
) -> dict[str, float]:
    """Test top-1 of a logistic regression on standardised features, its L2 strength chosen
    by :func:`choose_l2` on the training clips alone: ``{"top1", "l2"}``."""
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    l2 = choose_l2(train_features, train_labels, num_classes)
    train, test = _standardise(train_features, test_features)
    weights, bias = fit_logistic(train, train_labels, num_classes, l2)
    return {"top1": _accuracy(weights, bias, test, test_labels), "l2": l2}
