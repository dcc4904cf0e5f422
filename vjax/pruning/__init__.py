"""Structured pruning: ``vjax prune --model=DIR --out=DIR --ratio=0.5 [--by=magnitude|taylor]
[--granularity=unit|sublayer]``.

Removes whole units (attention heads and MLP units of transformers, channels inside 3D-conv
blocks with their BatchNorm, units of recurrent heads; :mod:`vjax.pruning.units`), ranked by
:mod:`vjax.pruning.scores` and chosen by :mod:`vjax.pruning.select`. The result is a smaller
dense model: the same config plus ``model.widths`` (each narrowed layer's width, by path) and
the kept weights, in a checkpoint folder that ``vjax.load``, ``vjax eval``, ``vjax export`` and
``train.init_from`` (fine-tuning takes the widths from it) open.

>>> summary = prune_checkpoint("runs/demo/vivit", "runs/demo/vivit_pruned", ratio=0.5)
>>> summary["units"]["heads"]
(12, 6)
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from vjax.errors import ArgumentParser, UserError, path_given, positive_int
from vjax.pruning.refit import consumer_grams, refit_consumers
from vjax.pruning.scores import CRITERIA, magnitude, taylor
from vjax.pruning.select import (
    GRANULARITIES,
    MULTIPLE,
    REMOVABLE,
    keep_counts,
    kept_units,
    remove_units,
)
from vjax.pruning.units import UnitGroup, unit_groups


class PruningError(UserError):
    """A pruning request that cannot be carried out (bad ratio, a model without prunable
    units or without per-layer widths, a quantized checkpoint)."""


def head_groups(model: Any) -> int:
    """How many equal groups each attention layer's heads form (ViViT model 4 splits them)."""
    return 2 if getattr(model, "variant", None) == "factorised_dot_product" else 1


def prunable_groups(model: Any, variables: Mapping) -> list[UnitGroup]:
    """The model's removable unit groups; an error where its family has none or cannot be
    rebuilt narrower (no ``widths`` field)."""
    from vjax.models.registry import model_fields

    name = type(model).__name__
    if "widths" not in model_fields(type(model)):
        raise PruningError(
            f"model {name} cannot be pruned: it has no per-layer widths (model.widths); "
            f"video transformers, VideoResNet/ResNet3D and LRCN can"
        )
    try:
        groups = unit_groups(variables, head_groups(model))
    except NotImplementedError as e:
        raise PruningError(f"model {name}: {e} is not supported") from None
    if not groups:
        raise PruningError(f"model {name} has no units that structured pruning can remove")
    return groups


def prune_variables(
    model: Any,
    variables: Mapping,
    ratio: float,
    by: str = "magnitude",
    loss: Callable[[Any, Any], jax.Array] | None = None,
    batches: Iterable[Any] = (),
    multiple: int = 1,
    grams: Mapping[str, np.ndarray] | None = None,
    granularity: str = "unit",
) -> tuple[dict, dict[str, int], dict[str, tuple[int, int]]]:
    """``(pruned variables, widths, {kind: (units before, after)})``: ``ratio`` of each
    kind's units removed, the lowest ``by`` score first (``taylor`` needs the training
    ``loss(params, batch)`` and ``batches``), widths rounded to a ``multiple``;
    ``granularity="sublayer"``: attention and MLP sublayers kept or removed whole. With the
    calibration ``grams`` of :func:`~vjax.pruning.refit.consumer_grams`, the layers that read
    the kept units are refit to keep their output (:mod:`vjax.pruning.refit`)."""
    if not 0.0 <= ratio < 1.0:
        raise PruningError(f"--ratio must be in [0, 1), got {ratio}")
    if by not in CRITERIA:
        raise PruningError(f"--by must be one of {', '.join(CRITERIA)}, got {by!r}")
    if granularity not in GRANULARITIES:
        raise PruningError(
            f"--granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}"
        )
    if multiple < 1:
        raise PruningError(f"--multiple must be a positive integer, got {multiple}")
    variables = jax.device_get(nn.meta.unbox(dict(variables)))  # plain host arrays
    groups = prunable_groups(model, variables)
    if granularity == "sublayer" and not any(g.kind in REMOVABLE for g in groups):
        raise PruningError(
            f"--granularity=sublayer removes attention and MLP sublayers whole, and model "
            f"{type(model).__name__} has none; use --granularity=unit (one unit at a time)"
        )
    if granularity == "sublayer" and by != "taylor":
        raise PruningError(
            f"--granularity=sublayer ranks sublayers by their summed Taylor scores (magnitudes "
            f"carry each layer's own scale); use --by=taylor, not --by={by}"
        )
    if by == "taylor":
        scores = taylor(variables, groups, loss, batches)
    else:
        scores = [magnitude(variables, g) for g in groups]
    counts = keep_counts(groups, scores, ratio, multiple, by == "magnitude", granularity)
    kept = {g: kept_units(g, s, c) for g, s, c in zip(groups, scores, counts, strict=True)}
    if grams:
        variables = refit_consumers(variables, groups, kept, grams)
    units: dict[str, tuple[int, int]] = {}
    for group, count in zip(groups, counts, strict=True):
        before, after = units.get(group.kind, (0, 0))
        units[group.kind] = (before + group.size, after + count)
    widths = {g.key: int(c) for g, c in zip(groups, counts, strict=True)}
    return remove_units(variables, kept), widths, units


def _training_loss(config: Any, model: Any, variables: Mapping) -> Callable:
    """``loss(params, batch)``: the run's objective in training mode (fixed dropout key)."""
    import jax.numpy as jnp

    from vjax import objectives
    from vjax.step import normalize_video

    objective = objectives.get(config.train.get("objective", "classification"))
    state = {k: v for k, v in variables.items() if k != "params"}
    mean, std = tuple(config.input.mean), tuple(config.input.std)

    def loss(params, batch):
        video = normalize_video(batch["video"], mean, std, jnp.float32)
        value, _, _ = objective.loss(
            model, {"params": params, **state}, batch, video, jax.random.key(0), list(state)
        )
        return value

    return loss


def prune_checkpoint(
    model_dir: str,
    out_dir: str,
    ratio: float,
    by: str = "magnitude",
    batches: int = 8,
    data_dir: str | None = None,
    multiple: int = MULTIPLE,
    granularity: str = "unit",
) -> dict[str, Any]:
    """Writes the pruned model of a checkpoint (or ``vjax convert`` folder) to ``out_dir``.
    The first ``batches`` training batches of the run's own dataset give ``taylor`` its
    scores, a transformer its refit output projections (:mod:`vjax.pruning.refit`) and a
    BatchNorm model new statistics (precise BN: a layer whose input lost channels sees other
    activations than its running averages describe). Returns ``{"units": {kind:
    (before, after)}, "params": (before, after), "widths": ..., "batch_stats": note}``."""
    from vjax.checkpoint import write_single
    from vjax.checkpoint_paths import require_new_output
    from vjax.config_utils import config_to_json
    from vjax.loaded import load

    require_new_output(out_dir, PruningError)
    loaded = load(model_dir, float_model=True)
    config, model, variables = loaded
    metadata = loaded.metadata
    if metadata.get("quantization"):
        raise PruningError(f"{model_dir!r} is quantized; prune the float model, then quantize")
    data: list[Any] = []
    if "dataset" in config:
        from vjax.data.loaders import training_batches

        data = list(training_batches(config, batches, data_dir))
    elif by == "taylor":
        raise PruningError(
            f"--by=taylor scores on training batches and {model_dir!r} records no dataset "
            f"(a converted model?); use --by=magnitude"
        )
    loss = _training_loss(config, model, variables) if by == "taylor" else None
    grams = _calibration_grams(config, model, variables, data) if data else None
    pruned, widths, units = prune_variables(
        model, variables, ratio, by, loss, data, multiple, grams, granularity
    )
    config = config.copy_and_resolve_references()
    with config.unlocked():
        config.model.widths = {**dict(config.model.get("widths") or {}), **widths}
    sizes = {g.key: g.size for g in prunable_groups(model, variables)}
    narrowed = sum(1 for key in grams or {} if widths[key] < sizes[key])
    refit = f"{narrowed} layers on {len(data)} training batches" if narrowed else "none"
    note = "none" if "batch_stats" not in pruned else "kept (no training data recorded)"
    if "batch_stats" in pruned and data:
        pruned = _recomputed_batch_stats(config, metadata, pruned, data)
        note = f"recomputed on {len(data)} training batches"
    params = pruned.pop("params")
    state = {"step": np.zeros((), np.int32), "params": params, "model_state": pruned}
    info = {
        "ratio": ratio,
        "by": by,
        "granularity": granularity,
        "multiple": multiple,
        "source": model_dir,
        "source_step": loaded.source_step,
        "units": {k: list(v) for k, v in units.items()},
        "batch_stats": note,
        "refit": refit,
    }
    saved = {**metadata, "config": json.loads(config_to_json(config)), "pruning": info}
    write_single(os.path.join(out_dir, "checkpoints"), state, saved)
    return {
        "units": units,
        "params": (_count(variables["params"]), _count(params)),
        "widths": widths,
        "batch_stats": note,
        "refit": refit,
    }


def _calibration_grams(config: Any, model: Any, variables: Mapping, data: list) -> dict:
    """The Gram matrices of every transformer layer's consumer input on the training batches
    ``data`` (:func:`~vjax.pruning.refit.consumer_grams`); empty for models without any."""
    from vjax.pruning.refit import COLLECTION
    from vjax.step import model_input

    mean, std = tuple(config.input.mean), tuple(config.input.std)

    def apply(variables, inputs):
        return model.apply(variables, inputs, train=False, mutable=[COLLECTION])

    inputs = (model_input(model, b, mean, std) for b in data)
    return consumer_grams(apply, variables, inputs)


def _recomputed_batch_stats(config: Any, metadata: dict, variables: dict, data: list) -> dict:
    """The pruned model's BatchNorm statistics measured on the training batches ``data``."""
    import jax.numpy as jnp

    from vjax.loaded import plain_module
    from vjax.models.precise_bn import precise_batch_stats
    from vjax.step import normalize_video

    mean, std = tuple(config.input.mean), tuple(config.input.std)
    videos = (normalize_video(b["video"], mean, std, jnp.float32) for b in data)
    return jax.device_get(precise_batch_stats(plain_module(config, metadata), variables, videos))


def _count(tree: Any) -> int:
    return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``vjax prune``."""
    parser = ArgumentParser(
        prog="vjax prune", description="structured pruning: a smaller dense model"
    )
    parser.add_argument(
        "--model", type=path_given, required=True, help="workdir or vjax convert folder"
    )
    parser.add_argument(
        "--out", type=path_given, required=True, help="new folder for the pruned model"
    )
    parser.add_argument(
        "--ratio", type=float, default=0.5, help="share of each kind of unit removed"
    )
    parser.add_argument("--by", default="magnitude", choices=CRITERIA)
    parser.add_argument(
        "--batches",
        type=positive_int,
        default=8,
        help="training batches (taylor; BatchNorm statistics)",
    )
    parser.add_argument(
        "--multiple",
        type=int,
        default=MULTIPLE,
        help="round kept channels/MLP/recurrent units to this (fast kernels); 1: exact ratio",
    )
    parser.add_argument(
        "--granularity",
        default="unit",
        choices=GRANULARITIES,
        help="sublayer: attention and MLP sublayers kept or removed whole (fewer ops)",
    )
    parser.add_argument("--data_dir", default=None, help="dataset location, if it moved")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        summary = prune_checkpoint(
            args.model,
            args.out,
            args.ratio,
            args.by,
            args.batches,
            args.data_dir,
            args.multiple,
            args.granularity,
        )
    except (UserError, FileNotFoundError) as e:
        print(f"prune error: {e}", file=sys.stderr)
        return 2
    kinds = ", ".join(f"{k} {a}->{b}" for k, (a, b) in sorted(summary["units"].items()))
    before, after = summary["params"]
    print(
        f"wrote {args.out}: {kinds}; parameters {before:,} -> {after:,} "
        f"({before / max(after, 1):.2f}x fewer); BatchNorm statistics: {summary['batch_stats']}; "
        f"output projections refit: {summary['refit']}. "
        f"Fine-tune it with "
        f"--config.train.init_from={args.out} (the run takes its widths)."
    )
    return 0
