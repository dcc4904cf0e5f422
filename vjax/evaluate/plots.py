"""Pictures of an evaluation, drawn from its result alone (so `vjax compare` and re-plotting
need no model): the normalised confusion matrix, per-class F1 sorted, the reliability
diagram, precision-recall curves for multi-label data, per-class deltas of two runs; and the
training curves of runs.

>>> write_plots(result, "runs/vivit", "_test")   # confusion_test.png, f1_test.png, ...
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vjax import storage
from vjax.evaluate.report import task_results

MAX_MATRIX_CLASSES = 100  # beyond this the confusion plot shows the most confused classes
TOP_CONFUSED_CLASSES = 40  # ... this many of them
MAX_BAR_CLASSES = 100  # beyond this the bar plots show the best and worst classes
SHOWN_EXTREMES = 30  # ... this many of each


def _figure(*grid: int, **options: Any):
    """``(figure, axes)`` drawn off-screen: a plain Figure, so pyplot's backend (a notebook's
    inline one included) is left alone."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=options.pop("figsize"))
    return figure, figure.subplots(*grid, **options)


def _save(fig, path: str) -> str:
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, dpi=100, format="png")
    storage.path(path).write_bytes(png.getvalue())
    return path


def _font(count: int) -> float:
    """A tick-label size that keeps ``count`` labels apart (9 pt for a few, 5 pt at 100)."""
    return float(np.clip(9 - 4 * (count - 10) / 90, 5, 9))


def confused_classes(matrix: np.ndarray, limit: int = TOP_CONFUSED_CLASSES) -> list[int]:
    """Up to ``limit`` classes taking part in the largest off-diagonal cells, in class order."""
    off = np.array(matrix, np.int64)
    np.fill_diagonal(off, 0)
    chosen: list[int] = []
    for flat in np.argsort(-off, axis=None, kind="stable"):
        i, j = np.unravel_index(flat, off.shape)
        if off[i, j] == 0 or len(chosen) >= limit:
            break
        chosen += [c for c in (int(i), int(j)) if c not in chosen][: limit - len(chosen)]
    return sorted(chosen)


def plot_confusion(
    matrix: Sequence[Sequence[int]], class_names: Sequence[str], title: str, path: str
) -> str:
    """The confusion matrix normalised by row (each true class sums to 1), class names on both
    axes, values written while they fit (up to 30 classes). Beyond
    :data:`MAX_MATRIX_CLASSES` classes: the rows and columns of the most confused classes
    (:func:`confused_classes`) only."""
    matrix = np.asarray(matrix, np.float64)
    names = list(class_names)
    if len(names) > MAX_MATRIX_CLASSES:
        keep = confused_classes(matrix) or list(range(TOP_CONFUSED_CLASSES))
        rows = matrix.sum(axis=1, keepdims=True)[keep]
        matrix = matrix[np.ix_(keep, keep)]
        names = [names[i] for i in keep]
        title += f" ({len(keep)} most confused of {len(class_names)} classes)"
    else:
        rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    count = len(names)
    side = float(np.clip(2.5 + 0.22 * count, 4.5, 26))
    fig, ax = _figure(figsize=(side + 1.5, side))
    image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    font = _font(count)
    ax.set_xticks(range(count), names, rotation=90, fontsize=font)
    ax.set_yticks(range(count), names, fontsize=font)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    if count <= 30:
        for (i, j), value in np.ndenumerate(normalised):
            if value > 0:
                color = "white" if value > 0.5 else "black"
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", color=color, fontsize=7)
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true class")
    return _save(fig, path)


def _extremes(values: Mapping[str, float | None]) -> tuple[list[str], list[float]]:
    """Classes with a value, sorted ascending; beyond :data:`MAX_BAR_CLASSES`, the lowest and
    highest :data:`SHOWN_EXTREMES` only."""
    ordered = sorted((v, n) for n, v in values.items() if v is not None)
    if len(ordered) > MAX_BAR_CLASSES:
        ordered = ordered[:SHOWN_EXTREMES] + ordered[-SHOWN_EXTREMES:]
    return [n for _, n in ordered], [v for v, _ in ordered]


def plot_class_bars(
    values: Mapping[str, float | None],
    metric: str,
    title: str,
    path: str,
    xlim: tuple[float, float] | None = (0.0, 1.0),
) -> str:
    """Horizontal bars of a per-class metric sorted from the worst (top) to the best; with
    many classes only the worst and best (:func:`_extremes`)."""
    names, heights = _extremes(values)
    count = max(len(names), 1)
    fig, ax = _figure(figsize=(7, float(np.clip(1 + 0.2 * count, 3, 26))))
    colors = ["tab:red" if h < 0 else "tab:blue" for h in heights]
    ax.barh(range(len(names)), heights, color=colors)
    ax.set_yticks(range(len(names)), names, fontsize=_font(count))
    ax.invert_yaxis()
    if len(names) < len([v for v in values.values() if v is not None]):
        title += f" (worst and best {SHOWN_EXTREMES} of {len(values)})"
    ax.set(xlabel=metric, title=title)
    if xlim:
        ax.set_xlim(*xlim)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_reliability(calibration: Mapping[str, Any], ece: float, title: str, path: str) -> str:
    """The reliability diagram: accuracy per confidence bin against the diagonal of perfect
    calibration, the gap to each bin's mean confidence hatched, and how many predictions fall
    in each bin."""
    edges = np.asarray(calibration["edges"])
    centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    accuracy = np.array([np.nan if a is None else a for a in calibration["accuracy"]])
    confidence = np.array([np.nan if c is None else c for c in calibration["confidence"]])
    fig, (ax, ax_count) = _figure(
        2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.bar(centres, np.nan_to_num(accuracy), width=width, edgecolor="black", label="accuracy")
    ax.bar(
        centres,
        np.nan_to_num(confidence - accuracy),
        bottom=np.nan_to_num(accuracy),
        width=width,
        fill=False,
        hatch="//",
        edgecolor="tab:red",
        label="gap to the mean confidence",
    )
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.set(ylabel="accuracy", title=f"{title} (ECE {ece:.3f})", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=8)
    ax_count.bar(centres, calibration["count"], width=width, color="gray")
    ax_count.set(xlabel="confidence", ylabel="predictions")
    return _save(fig, path)


def plot_pr_curves(
    curves: Mapping[str, Any],
    aps: Mapping[str, float | None],
    title: str,
    path: str,
    per_side: int = 3,
) -> str:
    """Precision-recall curves of multi-label data: the micro-average over every class, and
    the ``per_side`` best and worst classes by AP."""
    fig, ax = _figure(figsize=(6, 5))
    micro = curves["micro"]
    if micro is not None:
        ax.plot(np.linspace(0, 1, len(micro)), micro, "k", lw=2.5, label="micro-average")
    ranked = sorted((ap, n) for n, ap in aps.items() if ap is not None)
    shown = ranked[-per_side:][::-1] + ranked[:per_side]
    for ap, name in dict.fromkeys(shown):
        precision = curves["per_class"][name]
        ax.plot(np.linspace(0, 1, len(precision)), precision, lw=1, label=f"{name} (AP {ap:.2f})")
    ax.set(xlabel="recall", ylabel="precision", title=title, xlim=(0, 1), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    return _save(fig, path)


def _latest_per_step(records: list[dict], split: str) -> list[dict]:
    """``split``'s records in step order, the last one written for each step: a run resumed
    from an earlier checkpoint logs those steps again, after the attempt that died."""
    latest = {r["step"]: r for r in records if r["split"] == split}
    return [latest[step] for step in sorted(latest)]


def plot_curves(runs: Mapping[str, str], path: str) -> str:
    """Training loss and validation top-1 (mAP for multi-label runs) over steps, one line per
    run (``name -> workdir``)."""
    from vjax.metric_writers import read_metrics

    fig, (ax_loss, ax_acc) = _figure(1, 2, figsize=(11, 4))
    metric = "top1"
    for name, workdir in runs.items():
        records = read_metrics(workdir)
        train, val = (_latest_per_step(records, split) for split in ("train", "validation"))
        metric = "mAP" if val and "mAP" in val[0] else "top1"
        ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label=name)
        ax_acc.plot([r["step"] for r in val], [r[metric] for r in val], marker="o", label=name)
    ax_loss.set(xlabel="step", ylabel="training loss", title="Training loss")
    ax_acc.set(xlabel="step", ylabel=metric, title=f"Validation {metric}", ylim=(0, 1.02))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def write_plots(result: Mapping[str, Any], directory: str, suffix: str = "") -> list[str]:
    """Every plot that applies to ``result`` as ``<kind><suffix>[_<task>].png`` in
    ``directory``: ``confusion``, ``f1`` and ``reliability`` for single-label tasks;
    ``pr``, ``ap`` and ``reliability`` for multi-label data. Returns the paths."""
    storage.path(directory).mkdir(parents=True, exist_ok=True)
    paths = []
    for task, (metrics, names) in task_results(result).items():
        end = f"{suffix}_{task}" if task else suffix
        label = f"{result['split']}{' ' + task if task else ''}"

        def at(kind: str, end: str = end) -> str:
            return os.path.join(directory, f"{kind}{end}.png")

        if "per_class_ap" in metrics:
            title = f"{label}: mAP {metrics['mAP']:.3f}"
            paths.append(
                plot_pr_curves(metrics["pr_curves"], metrics["per_class_ap"], title, at("pr"))
            )
            paths.append(plot_class_bars(metrics["per_class_ap"], "AP", title, at("ap")))
        else:
            title = f"{label}: top-1 {metrics['top1']:.3f}"
            paths.append(plot_confusion(metrics["confusion_matrix"], names, title, at("confusion")))
            f1_title = f"{label}: macro F1 {metrics['macro']['f1']:.3f}"
            paths.append(plot_class_bars(metrics["per_class_f1"], "F1", f1_title, at("f1")))
        paths.append(
            plot_reliability(metrics["calibration"], metrics["ece"], label, at("reliability"))
        )
    return paths


RECONSTRUCTION_FRAMES = 8  # frames shown per clip (evenly spaced) in a reconstruction picture


def plot_reconstruction(original: Any, masked: Any, reconstruction: Any, path: str) -> str:
    """Masked-video reconstructions as a PNG: for each clip ``(T, H, W, C)`` in [0, 1], a row
    of its frames, the masked input (hidden tubelets grey) and the reconstruction."""
    frames = np.unique(np.linspace(0, original.shape[1] - 1, RECONSTRUCTION_FRAMES).astype(int))
    rows = [(f"clip {i}: {kind}", video[i]) for i in range(len(original))
            for kind, video in (("original", original), ("masked", masked),
                                ("reconstruction", reconstruction))]  # fmt: skip
    fig, axes = _figure(
        len(rows), len(frames), squeeze=False, figsize=(1.2 * len(frames) + 1.5, 1.2 * len(rows))
    )
    for (title, video), row in zip(rows, axes, strict=True):
        row[0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=8)
        for ax, frame in zip(row, frames, strict=True):
            ax.imshow(np.clip(video[frame], 0.0, 1.0).squeeze())
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, frame in zip(axes[0], frames, strict=True):
        ax.set_title(f"frame {frame}", fontsize=8)
    return _save(fig, path)
