"""What the train step minimises, chosen by ``train.objective``: each objective is a small pure
function of the model, its variables and a batch, so :mod:`vjax.step` stays the one train step
and :mod:`vjax.train` the one loop (checkpoints, sharding, resume, metrics, evaluation
scheduling are shared).

* ``classification`` (default): cross-entropy against the labels (one task or several,
  :func:`vjax.step.task_losses`); validation scores logits against labels on the host.
* ``multi_label``: several classes per video (Charades): sigmoid binary cross-entropy
  against multi-hot labels, averaged over the classes as PySlowFast (:func:`multilabel_losses`);
  validation reports mAP. ``multi_label_sum``: the same summed over the classes, as scenic
  (MBT's AudioSet recipe), with label smoothing towards ``1/K``.
* ``reconstruction``: VideoMAE's masked-video objective for a masked autoencoder
  (``model.name="videomae_pretraining"``): a tube or random mask drawn from the step's key
  (so a resumed run sees the same masks), mean squared error between the predicted and the
  true pixels of the hidden tubelets (normalised per tubelet with ``norm_pix_loss``), or of
  their frame-to-frame change inside each tubelet with ``model.target="frame_difference"``.
  Labels are not read; validation reports this loss on the validation split with fixed masks.

Any labelled objective can be distilled from a teacher (``train.distill.teacher``,
:mod:`vjax.distill`), which wraps its loss.

>>> objective = get("reconstruction")
>>> loss, metrics, model_state = objective.loss(model, variables, batch, video, key)
>>> per_example = objective.evaluate(model, variables, batch, video)   # (B,) losses
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from vjax.models.layers import MODALITY_LOGITS
from vjax.models.masking import (
    draw_mask,
    patch_statistics,
    pixel_targets,
    split_tokens,
    take_tokens,
    target_clip,
    unpatchify,
)
from vjax.models.video_transformer import token_grid
from vjax.registration import KNOWN_ONCE_RUN, Registry
from vjax.tasks import concat_classes, label_columns, split_classes, task_outputs

Batch = dict[str, jax.Array]
_MASK_STREAM = 1  # the mask key: the step's dropout key folded with this
_EVAL_MASK_SEED = 0  # validation masks: fixed, so evaluations are comparable across steps


def _pixels(batch: Batch) -> jax.Array:
    """The batch's uint8 frames as pixels in [0, 1] (reconstruction targets)."""
    return jnp.asarray(batch["video"], jnp.float32) / 255.0


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
    logits: jax.Array,
    batch: dict[str, jax.Array],
    label_smoothing: float = 0.0,
    *,
    sum_classes: bool = False,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``(loss, metrics)`` of multi-label data (``batch["label"]`` multi-hot ``(B, K)``): the
    sigmoid binary cross-entropy averaged over every (example, class), as PySlowFast's
    ``bce_logit`` for Charades, against the mixed targets ``batch["label_probs"]`` where
    mixup/cutmix made them; targets smoothed towards 1/2 by ``label_smoothing``. With
    ``sum_classes`` scenic's instead (``weighted_sigmoid_cross_entropy``, MBT's AudioSet):
    summed over the classes, averaged over the examples, smoothed towards ``1/K``. ``top1`` =
    the top class is one of the video's. Same signature as :func:`task_losses`."""
    targets = batch.get("label_probs", batch["label"]).astype(jnp.float32)
    if label_smoothing:
        toward = 1.0 / logits.shape[-1] if sum_classes else 0.5
        targets = targets * (1.0 - label_smoothing) + toward * label_smoothing
    entries = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), targets)
    loss = entries.sum(axis=-1).mean() if sum_classes else entries.mean()
    top = jnp.argmax(logits, axis=-1)
    hit = jnp.take_along_axis(batch["label"], top[:, None], axis=-1)[:, 0] > 0
    return loss, {"loss": loss, "top1": hit.astype(jnp.float32).mean()}


def train_logits(
    model: nn.Module, variables: Any, inputs: Any, key: jax.Array, mutable: Sequence[str]
) -> tuple[Any, Any]:
    """``(logits, model_state)`` of a training forward pass (dropout keyed by ``key``) on the
    model input (:func:`vjax.step.model_input`: a video, or a dict of modalities)."""
    return model.apply(variables, inputs, train=True, rngs={"dropout": key}, mutable=list(mutable))


def in_task_order(logits: Any, model: nn.Module) -> Any:
    """A multi-task model's ``{task: logits}`` in the order of its ``num_classes`` (that of
    the label columns); a dict that crossed a transform (``jit``, ``remat``) is key-sorted."""
    num_classes = getattr(model, "num_classes", None)
    if isinstance(logits, Mapping) and isinstance(num_classes, Mapping):
        return task_outputs(logits, num_classes)
    return logits


def scored_logits(
    losses: Callable[..., tuple[jax.Array, dict[str, jax.Array]]],
    model: nn.Module,
    variables: Any,
    batch: Batch,
    inputs: Any,
    key: jax.Array,
    mutable: Sequence[str] = (),
    **options: Any,
) -> tuple[jax.Array, dict[str, jax.Array], Any, Any]:
    """``(loss, metrics, model_state, logits)`` of a training forward pass scored by
    ``losses(logits, batch, **options)``. A model of several modalities that sows each one's
    logits (MBT: :func:`vjax.models.layers.sow_modality_logits`) is scored on each and the
    losses averaged (every ``loss*`` metric too, a task's included), as scenic's MBT trainer
    does; ``logits`` and the other metrics (top-1) are those of the averaged logits it
    predicts with."""
    logits, state = train_logits(model, variables, inputs, key, (*mutable, MODALITY_LOGITS))
    state = dict(state)
    sown = traverse_util.flatten_dict(dict(state.pop(MODALITY_LOGITS, None) or {}))
    logits = in_task_order(logits, model)
    value, metrics = losses(logits, batch, **options)
    if sown:
        [(per_modality,)] = sown.values()
        scored = [losses(in_task_order(x, model), batch, **options) for x in per_modality]
        value = sum(v for v, _ in scored) / len(scored)
        for name in (k for k in metrics if k.startswith("loss")):
            metrics[name] = sum(m[name] for _, m in scored) / len(scored)
    return value, metrics, state, logits


def supervised(losses: Callable[..., tuple[jax.Array, dict[str, jax.Array]]]) -> Callable:
    """The training loss of an objective that scores the model's logits against
    ``batch["label"]`` with ``losses(logits, batch, label_smoothing)`` (:func:`scored_logits`)."""

    def loss(model, variables, batch, inputs, key, mutable=(), label_smoothing=0.0):
        scored = scored_logits(
            losses, model, variables, batch, inputs, key, mutable, label_smoothing=label_smoothing
        )
        return scored[:3]  # (loss, metrics, model_state)

    return loss


def classification_logits(model: nn.Module, variables: Any, batch: Batch, inputs: Any):
    """float32 logits ``(B, sum K)`` (concatenated over tasks), scored on the host."""
    del batch  # the labels are gathered beside the logits
    logits = model.apply(variables, inputs, train=False)
    return concat_classes(logits, model.num_classes).astype(jnp.float32)


def masked_pixel_losses(
    model: nn.Module,
    variables: Any,
    video: jax.Array,
    pixels: jax.Array,
    mask: jax.Array,
    *,
    train: bool = False,
    rngs: dict[str, jax.Array] | None = None,
    mutable: Sequence[str] = (),
    hidden: int | None = None,
) -> tuple[jax.Array, jax.Array, Any]:
    """``(per-example loss (B,), predictions (B, hidden, P), model_state)``: the mean squared
    error over the hidden tokens of ``mask`` between the model's predictions for ``video``
    (normalised input) and the targets of ``pixels`` (the same clip in [0, 1]). ``hidden``:
    tokens hidden per clip, when ``mask`` is not the model's own ratio (e.g. a given mask)."""
    count = model.num_masked(video.shape) if hidden is None else hidden
    predicted, model_state = model.apply(
        variables, video, mask, train=train, hidden=count, rngs=rngs, mutable=list(mutable)
    )
    targets = pixel_targets(
        target_clip(pixels, model.target, model.tubelet), model.tubelet, model.norm_pix_loss
    )
    _, masked = split_tokens(mask, count)
    error = (predicted.astype(jnp.float32) - take_tokens(targets, masked)) ** 2
    return error.mean(axis=(1, 2)), predicted, model_state


def _mask(model: nn.Module, video: jax.Array, key: jax.Array) -> jax.Array:
    grid = token_grid(video.shape, model.tubelet)
    return draw_mask(key, video.shape[0], grid, model.mask_ratio, model.masking)


def reconstruction(
    model: nn.Module,
    variables: Any,
    batch: Batch,
    video: jax.Array,
    key: jax.Array,
    mutable: Sequence[str] = (),
) -> tuple[jax.Array, dict[str, jax.Array], Any]:
    """VideoMAE's loss on a mask drawn from ``key`` (dropout uses ``key`` itself)."""
    mask = _mask(model, video, jax.random.fold_in(key, _MASK_STREAM))
    losses, _, model_state = masked_pixel_losses(
        model, variables, video, _pixels(batch), mask, train=True, rngs={"dropout": key},
        mutable=mutable,
    )  # fmt: skip
    loss = losses.mean()
    return loss, {"loss": loss}, model_state


def reconstruction_losses(model: nn.Module, variables: Any, batch: Batch, video: jax.Array):
    """Per-example validation losses ``(B,)`` on fixed masks (row ``i`` of every batch gets
    the same mask), so evaluations at different steps compare."""
    mask = _mask(model, video, jax.random.key(_EVAL_MASK_SEED))
    losses, _, _ = masked_pixel_losses(model, variables, video, _pixels(batch), mask)
    return losses


def reconstruct(
    model: nn.Module, variables: Any, batch: Batch, video: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(original, masked input, reconstruction)`` clips in [0, 1] for a picture of the
    validation masks: hidden tubelets grey in the input; in the reconstruction the visible
    tubelets are the input's and the hidden ones the predictions, un-normalised with each
    tubelet's own mean and std under ``norm_pix_loss`` (the paper's visualisation). With
    ``target="frame_difference"`` all three show the frames' changes (grey: none; a
    tubelet's last frame is grey by construction, its change is not a target)."""
    pixels = _pixels(batch)
    mask = _mask(model, video, jax.random.key(_EVAL_MASK_SEED))
    count = model.num_masked(video.shape)
    _, predicted, _ = masked_pixel_losses(model, variables, video, pixels, mask)
    pixels = target_clip(pixels, model.target, model.tubelet)  # what was reconstructed
    tokens = pixel_targets(pixels, model.tubelet, normalize=False)
    _, masked = split_tokens(mask, count)
    if model.norm_pix_loss:
        mean, std = (take_tokens(s, masked) for s in patch_statistics(pixels, model.tubelet))
        channels = einops.rearrange(predicted, "b n (p c) -> b n p c", c=pixels.shape[-1])
        predicted = einops.rearrange(channels * std + mean, "b n p c -> b n (p c)")
    rows = jnp.arange(tokens.shape[0])[:, None]
    rebuilt = tokens.at[rows, masked].set(jnp.clip(predicted, 0.0, 1.0))
    hidden = jnp.where(mask[..., None], 0.5, tokens)
    t, h, w = (size // step for size, step in zip(video.shape[1:4], model.tubelet, strict=True))
    clips = (unpatchify(x, model.tubelet, (t, h, w), pixels.shape[-1]) for x in (hidden, rebuilt))
    return (pixels, *clips)


@dataclasses.dataclass(frozen=True)
class Objective:
    """One objective: its training ``loss(model, variables, batch, inputs, key, mutable,
    **options) -> (loss, metrics, model_state)``, its per-example validation outputs
    ``evaluate(model, variables, batch, inputs)`` (``inputs``: the model input of
    :func:`vjax.step.model_input`, passed to the model untouched: a normalised video, or a
    dict of modalities), the step options it takes (e.g.
    ``label_smoothing``), and whether validation scores logits against labels. A labelled
    objective also gives its ``losses(logits, batch, label_smoothing)`` (what wrappers such
    as :func:`vjax.distill.distilled` add to)."""

    name: str
    loss: Callable[..., tuple[jax.Array, dict[str, jax.Array], Any]]
    evaluate: Callable[..., jax.Array]
    options: tuple[str, ...] = ()
    classifies: bool = False
    needs_labels: bool = False
    multi_label: bool = False  # several classes per video: a sigmoid per class, mAP
    sum_classes: bool = False  # multi-label loss summed over the classes, not averaged
    losses: Callable[..., tuple[jax.Array, dict[str, jax.Array]]] | None = None


# The options the train step gives an objective's loss (vjax.step.make_train_step's).
STEP_OPTIONS = ("label_smoothing",)


def labelled(name: str, losses: Callable[..., Any], **extra: Any) -> Objective:
    """An objective that scores the model's logits against ``batch["label"]`` with
    ``losses(logits, batch, label_smoothing)``: its training loss is :func:`supervised`
    of them, its validation the host-side scoring of the logits."""
    return Objective(
        name,
        supervised(losses),
        classification_logits,
        options=("label_smoothing",),
        classifies=True,
        needs_labels=True,
        losses=losses,
        **extra,
    )


OBJECTIVES = Registry(
    "train.objective",
    lambda objective: objective.losses or objective.loss,
    {
        "classification": labelled("classification", task_losses),
        "multi_label": labelled("multi_label", multilabel_losses, multi_label=True),
        "multi_label_sum": labelled(
            "multi_label_sum",
            functools.partial(multilabel_losses, sum_classes=True),
            multi_label=True,
            sum_classes=True,
        ),
        "reconstruction": Objective("reconstruction", reconstruction, reconstruction_losses),
    },
)


def register(objective: Objective) -> Objective:
    """Makes ``objective`` trainable as ``train.objective = objective.name``. A loss of
    labelled data is one function of the logits and the batch (:func:`labelled`: ``(B, K)``
    logits, or ``{task: (B, K)}`` for several heads, as :func:`task_losses` takes them; pass
    ``multi_label=True`` for multi-hot labels); its metrics hold ``loss`` and ``top1``.
    Validation reports the classification metrics and the logits' cross-entropy, as for
    ``classification``. The same definition registered again replaces itself (a notebook
    cell, a config file run twice); another under a taken name is refused.

    >>> def focal_losses(logits, batch, label_smoothing):  # batch["label"]: (B,)
    ...     loss = ...
    ...     return loss, {"loss": loss, "top1": (logits.argmax(-1) == batch["label"]).mean()}
    >>> register(labelled("focal", focal_losses))
    """
    if not isinstance(objective, Objective):
        raise TypeError(
            f"register takes an Objective (e.g. labelled(name, losses)), got "
            f"{type(objective).__name__}"
        )
    unknown = set(objective.options) - set(STEP_OPTIONS)
    if unknown:
        raise ValueError(
            f"objective {objective.name!r} takes options {sorted(unknown)} that the train step "
            f"does not give (it gives {', '.join(STEP_OPTIONS)}); bind your own with "
            f"functools.partial"
        )
    OBJECTIVES.claim(objective.name, objective)
    return objective


def get(name: str | Objective) -> Objective:
    """The objective ``train.objective`` names (an :class:`Objective` is returned as it is);
    an unknown name lists the valid ones."""
    if isinstance(name, Objective):
        return name
    if name not in OBJECTIVES:
        from vjax.config_utils import ConfigError

        raise ConfigError(
            f"unknown train.objective {name!r}; valid: {', '.join(OBJECTIVES)} (one of your "
            f"own {KNOWN_ONCE_RUN}; in Python, an import)"
        )
    return OBJECTIVES[name]


def check(
    name: str, model: nn.Module, model_name: str, class_names: Any, multi_label: bool = False
) -> Objective:
    """The objective, after checking that it fits the model and the data (``multi_label``:
    several classes per video) before anything is compiled; a mismatch is an error naming
    the fix."""
    from vjax.config_utils import ConfigError

    objective = get(name)
    trains = getattr(model, "OBJECTIVE", "classification")
    if (trains == "reconstruction") != (name == "reconstruction"):
        if trains == "reconstruction":
            raise ConfigError(
                f"model {model_name!r} is a masked autoencoder: train it with "
                f"--config.train.objective=reconstruction, and fine-tune its encoder as "
                f"model.name='videomae' with --config.train.init_from=PRETRAIN_WORKDIR"
            )
        raise ConfigError(
            f"train.objective={name!r} needs a masked autoencoder "
            f"(--config.model.name=videomae_pretraining), not model {model_name!r}"
        )
    if objective.needs_labels and not class_names:
        raise ConfigError(
            f"the dataset has no labels (it was prepared from videos without classes), so "
            f"train.objective={name!r} cannot train on it: prepare a folder of class "
            f"sub-folders or a manifest with a label column, or pre-train on these videos: "
            f"vjax train --config=configs/videomae.py:pretrain_k400_800 "
            f"--config.dataset.name=video_folder --config.dataset.src=VIDEO_FOLDER"
        )
    if objective.needs_labels and multi_label != objective.multi_label:
        fix = "multi_label" if multi_label else "classification"
        kind = "several classes per video" if multi_label else "one class per video"
        raise ConfigError(
            f"the dataset has {kind}, so train.objective={name!r} does not fit it: "
            f"use --config.train.objective={fix}"
        )
    return objective
