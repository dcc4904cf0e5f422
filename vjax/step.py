"""The pure train and eval steps, and the state they carry; no data, I/O or mesh code here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from vjax.loss_scale import initial_loss_scale, keep_if_finite, scaled_value_and_grad
from vjax.tasks import concat_classes, label_columns, split_classes, task_outputs


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue: the step, parameters, optimiser state, the model's
    other variable collections (``model_state``, e.g. BatchNorm's ``batch_stats``; empty for
    transformers) and, for float16 compute, the dynamic loss scale
    (:mod:`vjax.loss_scale`; None otherwise)."""

    step: jax.Array
    params: Any
    opt_state: Any
    model_state: Any = flax.struct.field(default_factory=dict)
    loss_scale: Any = None

    @property
    def variables(self) -> dict[str, Any]:
        """What ``model.apply`` takes: ``{"params": ..., **model_state}``."""
        return {"params": self.params, **self.model_state}


def make_init_state(
    model: nn.Module, tx: optax.GradientTransformation, clip_shape: Sequence[int]
) -> Callable[[jax.Array], TrainState]:
    """Returns ``init(key) -> TrainState`` for clips of ``clip_shape`` (T, H, W, C): step 0,
    the model's parameters and other collections, the optimiser's initial state, a loss scale
    when the model computes in float16. Parameters keep their logical-axis boxes, so
    ``jax.eval_shape`` of it gives the shardings."""

    def init(key: jax.Array) -> TrainState:
        dummy = jnp.zeros((1, *clip_shape), jnp.float32)
        variables = dict(model.init({"params": key}, dummy, train=False))
        params = variables.pop("params")
        return TrainState(
            jnp.zeros((), jnp.int32),
            params,
            tx.init(params),
            variables,
            initial_loss_scale(model.dtype),
        )

    return init


def normalize_video(
    video: jax.Array, mean: Sequence[float], std: Sequence[float], dtype: Any
) -> jax.Array:
    """uint8 frames -> float, per-channel standardised (done on device, so hosts ship uint8)."""
    video = video.astype(jnp.float32) / 255.0
    return ((video - jnp.asarray(mean)) / jnp.asarray(std)).astype(dtype)


def cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    label_smoothing: float,
    targets: jax.Array | None = None,
) -> jax.Array:
    """Per-example softmax cross-entropy against (optionally smoothed) one-hot labels, or
    against soft ``targets`` (mixup/cutmix's ``label_probs``) when given."""
    if targets is None:
        targets = jax.nn.one_hot(labels, logits.shape[-1])
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """1.0 where the label is among the k highest logits (ties broken by lower class index)."""
    k = min(k, logits.shape[-1])
    _, top = jax.lax.top_k(logits, k)
    return (top == labels[:, None]).any(axis=-1).astype(jnp.float32)


def task_losses(
    logits: jax.Array | dict[str, jax.Array],
    batch: dict[str, jax.Array],
    label_smoothing: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``(loss, metrics)`` of a batch: the sum over tasks of each task's mean cross-entropy
    (one task: just its loss), and ``top1`` = every task right (Epic-Kitchens' action
    accuracy for verb + noun). Several tasks add ``loss_<task>`` and ``top1_<task>``.

    ``batch["label"]``: ``(B,)`` or one column per task; ``batch["label_probs"]`` (mixup /
    cutmix soft targets, optional): concatenated over the tasks' classes."""
    outputs = task_outputs(logits)
    sizes = {task: out.shape[-1] for task, out in outputs.items()}
    labels = label_columns(batch["label"], sizes)
    soft = batch.get("label_probs")
    targets = split_classes(soft, sizes) if soft is not None else {}
    metrics, correct = {}, []
    for task, out in outputs.items():
        metrics[f"loss_{task}"] = cross_entropy(
            out, labels[task], label_smoothing, targets.get(task)
        ).mean()
        correct.append(topk_correct(out, labels[task], 1))
        metrics[f"top1_{task}"] = correct[-1].mean()
    loss = sum(metrics[f"loss_{task}"] for task in outputs)
    if len(outputs) == 1:
        metrics = {}
    return loss, {"loss": loss, "top1": jnp.stack(correct).min(axis=0).mean(), **metrics}


def multilabel_losses(
    logits: jax.Array, batch: dict[str, jax.Array], label_smoothing: float = 0.0
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``(loss, metrics)`` of multi-label data (``batch["label"]`` multi-hot ``(B, K)``): the
    sigmoid binary cross-entropy averaged over every (example, class), as PySlowFast's
    ``bce_logit`` for Charades; targets smoothed towards 1/2 by ``label_smoothing``; ``top1``
    = the top class is one of the video's. Same signature as :func:`task_losses`."""
    targets = batch["label"].astype(jnp.float32)
    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + 0.5 * label_smoothing
    loss = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), targets).mean()
    top = jnp.argmax(logits, axis=-1)
    hit = jnp.take_along_axis(batch["label"], top[:, None], axis=-1)[:, 0] > 0
    return loss, {"loss": loss, "top1": hit.astype(jnp.float32).mean()}


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    label_smoothing: float = 0.0,
    multi_label: bool = False,
) -> Callable[[TrainState, dict[str, jax.Array], jax.Array], tuple[TrainState, dict]]:
    """Returns ``step(state, batch, key) -> (state, metrics)``; dropout keys fold in the step.
    The loss is :func:`task_losses` (softmax cross-entropy per task), or
    :func:`multilabel_losses` for ``multi_label`` data.

    With a loss scale (float16) a step whose gradients overflow leaves parameters, optimiser
    and model state as they were, halves the scale and reports ``skipped`` 1 and
    ``grad_norm`` 0; ``loss_scale`` is the scale the step used."""
    losses = multilabel_losses if multi_label else task_losses

    def train_step(state: TrainState, batch: dict[str, jax.Array], key: jax.Array):
        video = normalize_video(batch["video"], mean, std, model.dtype)
        dropout_key = jax.random.fold_in(key, state.step)

        def loss_fn(params):
            logits, model_state = model.apply(
                {"params": params, **state.model_state},
                video,
                train=True,
                rngs={"dropout": dropout_key},
                mutable=list(state.model_state),
            )
            loss, metrics = losses(logits, batch, label_smoothing)
            return loss, (metrics, model_state)

        grad_fn = scaled_value_and_grad(loss_fn, state.loss_scale)
        loss_scale, finite, (_, (metrics, model_state)), grads = grad_fn(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics["grad_norm"] = optax.tree_utils.tree_norm(grads)
        model_state = dict(model_state)
        if loss_scale is not None:  # float16: an overflowing step only lowers the scale
            new = (params, opt_state, model_state)
            old = (state.params, state.opt_state, state.model_state)
            params, opt_state, model_state = keep_if_finite(finite, new, old)
            metrics["grad_norm"] = jnp.where(finite, metrics["grad_norm"], 0.0)
            metrics["skipped"] = 1.0 - finite.astype(jnp.float32)
            metrics["loss_scale"] = state.loss_scale.scale
        new_state = TrainState(state.step + 1, params, opt_state, model_state, loss_scale)
        return new_state, metrics

    return train_step


def make_eval_step(
    model: nn.Module, *, mean: Sequence[float], std: Sequence[float]
) -> Callable[[Any, dict[str, jax.Array]], jax.Array]:
    """Returns ``step(variables, batch) -> float32 logits`` of uint8 ``batch["video"]``
    (multi-task: concatenated over the tasks, :func:`vjax.tasks.concat_classes`);
    metrics are computed on the host from the gathered logits
    (:mod:`vjax.evaluate`).

    ``variables`` is ``{"params": ..., **model_state}`` (see :attr:`TrainState.variables`).
    """

    def eval_step(variables: Any, batch: dict[str, jax.Array]) -> jax.Array:
        video = normalize_video(batch["video"], mean, std, model.dtype)
        return concat_classes(model.apply(variables, video, train=False)).astype(jnp.float32)

    return eval_step
