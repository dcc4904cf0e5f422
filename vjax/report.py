"""Human-readable results: an evaluation table, training-curve and confusion-matrix plots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vjax.metric_writers import read_metrics

MAX_CONFUSION_CLASSES = 30  # wider confusion matrices stay in the JSON report only


def format_eval(result: Mapping[str, Any]) -> str:
    """A table: overall metrics, then per-class accuracy and the confusion matrix (rows =
    truth; up to :data:`MAX_CONFUSION_CLASSES` classes), per task for multi-task models."""
    lines = [
        f"{result['split']} @ step {result.get('step', '?')}: {result['num_examples']} clips | "
        f"loss {result['loss']:.4f} | top1 {result['top1']:.4f} | top5 {result['top5']:.4f}"
    ]
    if "tasks" not in result:
        lines[0] += f" | mean class acc {result['mean_class_accuracy']:.4f}"
        return "\n".join(lines + [""] + _class_table(result, result["class_names"]))
    lines[0] += " (a video counts when every task is right)"
    for task, metrics in result["tasks"].items():
        lines += [
            "",
            f"{task}: top1 {metrics['top1']:.4f} | top5 {metrics['top5']:.4f} | "
            f"mean class acc {metrics['mean_class_accuracy']:.4f} | loss {metrics['loss']:.4f}",
        ]
        lines += _class_table(metrics, result["class_names"][task])
    return "\n".join(lines)


def _class_table(metrics: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    """Per-class accuracy, with the confusion matrix's rows when there are few classes."""
    width = max(len(n) for n in names)
    confusion = len(names) <= MAX_CONFUSION_CLASSES
    columns = " ".join(f"{i:>4d}" for i in range(len(names))) if confusion else ""
    lines = [f"{'class':<{width}}  accuracy  {columns}".rstrip()]
    for i, name in enumerate(names):
        row = " ".join(f"{n:>4d}" for n in metrics["confusion_matrix"][i]) if confusion else ""
        accuracy = metrics["per_class_accuracy"][name]
        shown = f"{accuracy:8.3f}" if accuracy is not None else f"{'-':>8}"  # absent class
        lines.append(f"{name:<{width}}  {shown}  {row}".rstrip())
    if confusion:
        lines.append(f"{'':<{width}}  (confusion matrix: rows = true class, columns = predicted)")
    return lines


def plot_curves(runs: Mapping[str, str], path: str) -> None:
    """Training loss and validation top-1 over steps, one line per run (``name -> workdir``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for name, workdir in runs.items():
        records = read_metrics(workdir)
        train = [r for r in records if r["split"] == "train"]
        val = [r for r in records if r["split"] == "validation"]
        ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label=name)
        ax_acc.plot([r["step"] for r in val], [r["top1"] for r in val], marker="o", label=name)
    ax_loss.set(xlabel="step", ylabel="training loss", title="Training loss")
    ax_acc.set(xlabel="step", ylabel="top-1", title="Validation top-1", ylim=(0, 1.02))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(
    matrix: Sequence[Sequence[int]], class_names: Sequence[str], title: str, path: str
) -> None:
    """The confusion matrix as a heat map with counts (rows = true class)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    matrix = np.asarray(matrix)
    size = 1.0 + 0.6 * len(class_names)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    for (i, j), count in np.ndenumerate(matrix):
        color = "white" if count > matrix.max() / 2 else "black"
        ax.text(j, i, str(count), ha="center", va="center", color=color, fontsize=8)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


RECONSTRUCTION_FRAMES = 8  # frames shown per clip (evenly spaced) in a reconstruction picture


def plot_reconstruction(original: Any, masked: Any, reconstruction: Any, path: str) -> None:
    """Masked-video reconstructions as a PNG: for each clip ``(T, H, W, C)`` in [0, 1], a row
    of its frames, the masked input (hidden tubelets grey) and the reconstruction. Drawn on a
    bare ``Figure`` (no pyplot), so a notebook's plotting backend is left alone."""
    import numpy as np
    from matplotlib.figure import Figure

    clips = len(original)
    frames = np.unique(np.linspace(0, original.shape[1] - 1, RECONSTRUCTION_FRAMES).astype(int))
    rows = [(f"clip {i}: {kind}", video[i]) for i in range(clips)
            for kind, video in (("original", original), ("masked", masked),
                                ("reconstruction", reconstruction))]  # fmt: skip
    fig = Figure(figsize=(1.2 * len(frames) + 1.5, 1.2 * len(rows)))
    axes = fig.subplots(len(rows), len(frames), squeeze=False)
    for (title, video), row in zip(rows, axes, strict=True):
        row[0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=8)
        for ax, frame in zip(row, frames, strict=True):
            ax.imshow(np.clip(video[frame], 0.0, 1.0).squeeze())
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, frame in zip(axes[0], frames, strict=True):
        ax.set_title(f"frame {frame}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
