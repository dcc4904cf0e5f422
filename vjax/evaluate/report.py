"""An evaluation's result as people read it: per-class values by class name, the printed
table, the scalars TensorBoard gets, and everything written to a workdir.

>>> result = named_result(metrics, class_names, "test")
>>> print(format_eval(result))
>>> paths = write_eval(result, "runs/vivit")   # eval_test_stepN.json, TensorBoard, PNGs
>>> write_video_table(result, "runs/vivit/eval_test_step9_videos.csv")   # one row per video
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vjax import storage
from vjax.evaluate.metrics import sigmoid
from vjax.metric_writers import json_number
from vjax.tasks import is_multitask

MAX_CONFUSION_CLASSES = 30  # wider confusion matrices are plotted, not printed
# Per-class lists of a task's metrics, keyed by class name in a result.
PER_CLASS = (
    "per_class_accuracy",
    "per_class_precision",
    "per_class_recall",
    "per_class_f1",
    "per_class_support",
    "per_class_ap",
    "per_class_frame_ap",
)
# Overall scalars of a task's metrics, as TensorBoard and `vjax compare` show them.
SCALARS = ("loss", "top1", "top5", "mean_class_accuracy", "mAP", "frame_mAP", "ece")


def _json_ready(x: Any) -> Any:
    """``x`` with every NaN/inf float, however deeply nested, as None (JSON's null)."""
    if isinstance(x, Mapping):
        return {k: _json_ready(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_ready(v) for v in x]
    return json_number(x)


def _scalar(x: Any) -> float:
    """A scalar metric as a float; None (a NaN/inf the eval JSON stores as null) as NaN."""
    return math.nan if x is None else float(x)


def _named(metrics: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """One task's metrics with per-class values (and confused pairs, PR curves) by class."""
    out = dict(metrics)
    for key in PER_CLASS:
        if key in out:
            out[key] = {n: json_number(v) for n, v in zip(names, out[key], strict=True)}
    if "most_confused" in out:
        out["most_confused"] = [
            {**pair, "true": names[pair["true"]], "predicted": names[pair["predicted"]]}
            for pair in out["most_confused"]
        ]
    if "pr_curves" in out:
        curves = out["pr_curves"]
        out["pr_curves"] = {
            **curves,
            "per_class": dict(zip(names, curves["per_class"], strict=True)),
        }
    return out


def named_result(
    metrics: Mapping[str, Any],
    class_names: Any,
    split: str,
    videos: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Metrics (:func:`vjax.evaluate.metrics.task_metrics`) with per-class values keyed by
    class name (per task for multi-task data), the split, ``num_examples`` and the names;
    ``videos``, the split's video names in its order (a prepared video dataset's
    ``video_names``), name the rows of every ``per_video`` (a list that is not one name per
    scored video is left out, with a warning)."""
    if is_multitask(class_names):
        tasks = {t: _named(m, class_names[t]) for t, m in metrics["tasks"].items()}
        metrics = {**metrics, "tasks": tasks}
    else:
        metrics = _named(metrics, class_names)
    result = {"split": split, "num_examples": metrics["num_videos"], **metrics}
    if videos is not None and len(videos) != result["num_examples"]:
        logging.warning(
            "%s: %d video names for %d scored videos; the per-video results stay unnamed",
            split, len(videos), result["num_examples"],
        )  # fmt: skip
    elif videos is not None:
        result["videos"] = list(videos)
    return {**result, "class_names": class_names}


def task_results(result: Mapping[str, Any]) -> dict[str, tuple[Mapping[str, Any], list[str]]]:
    """``{task: (its metrics, its class names)}``; one task is ``""``; none for the loss-only
    result of an objective that does not classify (reconstruction)."""
    if "class_names" not in result:
        return {}
    if "tasks" in result:
        return {t: (m, list(result["class_names"][t])) for t, m in result["tasks"].items()}
    return {"": (result, list(result["class_names"]))}


def scalars(result: Mapping[str, Any]) -> dict[str, float]:
    """The overall numbers of a result (per task ``<task>/<name>``), for TensorBoard:
    :data:`SCALARS` plus macro and weighted precision, recall and F1 (a loss-only result:
    its loss). A NaN or inf (an undefined mAP, an infinite loss) is kept, never dropped, so
    the other numbers do not show alone."""
    if "class_names" not in result:
        return {"loss": _scalar(result["loss"])}
    out: dict[str, float] = {}
    for task, (metrics, _) in task_results(result).items():
        prefix = f"{task}/" if task else ""
        for key in SCALARS:
            if key in metrics:
                out[prefix + key] = _scalar(metrics[key])
        for average in ("macro", "weighted"):
            for key, value in metrics.get(average, {}).items():
                out[f"{prefix}{average}_{key}"] = _scalar(value)
    if "tasks" in result:
        out.update({key: _scalar(result[key]) for key in ("loss", "top1", "top5")})
    return out


def summary(result: Mapping[str, Any]) -> str:
    """One line for the training log: ``loss | top1 | top5 | macro F1`` (multi-label data:
    ``loss | mAP | top1``; a loss-only result: ``loss``)."""
    if "mAP" in result:
        keys = ("loss", "mAP", "top1")
    else:
        keys = ("loss", "top1", "top5")
    parts = [f"{key} {result[key]:.4f}" for key in keys if key in result]
    if "macro" in result and "mAP" not in result:
        parts.append(f"macro F1 {result['macro']['f1']:.4f}")
    return " | ".join(parts)


def _num(x: Any, width: int = 10) -> str:
    return f"{x:{width}.3f}" if x is not None else f"{'-':>{width}}"


def _interval(bounds: Sequence[float] | None) -> str:
    """`` (95% CI lo-hi)`` of a metric's interval; nothing for a result without one (or with
    an undefined one: an mAP without positives, stored as null)."""
    if bounds is None or any(b is None or math.isnan(b) for b in bounds):
        return ""
    return f" (95% CI {bounds[0]:.3f}-{bounds[1]:.3f})"


def _value(metrics: Mapping[str, Any], key: str) -> str:
    """A metric as the tables print it, with its interval where it has one: ``0.7520 (95% CI
    0.733-0.770)`` (an undefined one, null in a written result, as nan)."""
    return f"{_scalar(metrics[key]):.4f}{_interval(metrics.get(key + '_ci95'))}"


def _headline(metrics: Mapping[str, Any]) -> str:
    """One line: the task's overall metrics."""
    if "mAP" in metrics:
        parts = [f"mAP {_value(metrics, 'mAP')}"]
        if "frame_mAP" in metrics:
            parts.append(f"frame mAP {_value(metrics, 'frame_mAP')}")
        parts += [f"top1 {_value(metrics, 'top1')}", f"loss {_value(metrics, 'loss')}"]
    else:
        parts = [
            f"loss {_value(metrics, 'loss')}",
            f"top1 {_value(metrics, 'top1')}",
            f"top5 {_value(metrics, 'top5')}",
            f"mean class acc {_value(metrics, 'mean_class_accuracy')}",
        ]
    macro, weighted = metrics["macro"], metrics["weighted"]
    parts += [
        f"macro P/R/F1 {macro['precision']:.3f}/{macro['recall']:.3f}/{macro['f1']:.3f}",
        f"weighted F1 {weighted['f1']:.3f}",
        f"ECE {metrics['ece']:.3f}",
    ]
    return " | ".join(parts)


def _class_table(metrics: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    """Per class: (AP,) precision, recall (= per-class accuracy for one label), F1, support,
    and the confusion matrix's row while there are few classes; then the averages and the
    most confused pairs."""
    width = max(len(n) for n in [*names, "weighted avg"])
    multi = "per_class_ap" in metrics
    matrix = not multi and len(names) <= MAX_CONFUSION_CLASSES
    head = [
        f"{h:>10}" for h in (["AP"] if multi else []) + ["precision", "recall", "f1", "support"]
    ]
    columns = " ".join(f"{i:>4d}" for i in range(len(names))) if matrix else ""
    lines = [f"{'class':<{width}} {''.join(head)}  {columns}".rstrip()]
    for i, name in enumerate(names):
        row = [_num(metrics["per_class_ap"][name])] if multi else []
        row += [_num(metrics[f"per_class_{k}"][name]) for k in ("precision", "recall", "f1")]
        row.append(f"{metrics['per_class_support'][name]:>10d}")
        counts = " ".join(f"{n:>4d}" for n in metrics["confusion_matrix"][i]) if matrix else ""
        lines.append(f"{name:<{width}} {''.join(row)}  {counts}".rstrip())
    support = sum(metrics["per_class_support"].values())
    for average in ("macro", "weighted"):
        values = metrics[average]
        row = ([" " * 10] if multi else []) + [
            _num(values[k]) for k in ("precision", "recall", "f1")
        ]
        lines.append(f"{average + ' avg':<{width}} {''.join(row)}{support:>10d}")
    if matrix:
        lines.append(f"{'':<{width}}  (confusion matrix: rows = true class, columns = predicted)")
    if multi:
        lines.append(f"{'':<{width}}  (precision, recall and F1 of sigmoid > 0.5)")
    pairs = metrics.get("most_confused", [])[:5]
    if pairs:
        shown = ", ".join(
            f"{p['true']} -> {p['predicted']} {p['count']} ({100 * p['fraction']:.0f}%)"
            for p in pairs
        )
        lines.append(f"most confused (true -> predicted): {shown}")
    return lines


def format_eval(result: Mapping[str, Any]) -> str:
    """A table: the overall metrics, then per class precision, recall, F1 and support (AP for
    multi-label data), macro and weighted averages, the confusion matrix (rows = truth; up to
    :data:`MAX_CONFUSION_CLASSES` classes) and the most confused pairs; per task for
    multi-task models, after the joint top-1/top-5; one line for a loss-only result."""
    first = f"{result['split']} @ step {result.get('step', '?')}: {result['num_examples']} clips"
    if "class_names" not in result:
        return f"{first} | loss {result['loss']:.4f}"
    if "tasks" not in result:
        lines = [f"{first} | {_headline(result)}", ""]
        return "\n".join(lines + _class_table(result, result["class_names"]))
    lines = [
        f"{first} | loss {result['loss']:.4f} | top1 {_value(result, 'top1')} | top5 "
        f"{_value(result, 'top5')} (a video counts when every task is right)"
    ]
    for task, (metrics, names) in task_results(result).items():
        lines += ["", f"{task}: {_headline(metrics)}"] + _class_table(metrics, names)
    return "\n".join(lines)


def eval_path(workdir: str, split: str, step: Any) -> str:
    """Where ``vjax eval`` writes a result: ``WORKDIR/eval_<split>_step<N>.json``."""
    return os.path.join(workdir, f"eval_{split}_step{step}.json")


def per_video_path(path: str) -> str:
    """Where the per-video arrays of the result at ``path`` (``..._step<N>.json``) are:
    ``..._step<N>_per_video.npz`` beside it."""
    return path.removesuffix(".json") + "_per_video.npz"


def video_table_path(path: str) -> str:
    """Where the per-video table of the result at ``path`` is: ``..._step<N>_videos.csv``."""
    return path.removesuffix(".json") + "_videos.csv"


def write_video_table(result: Mapping[str, Any], path: str) -> bool:
    """Writes one CSV row per scored video: its name (``videos``; its place in the split where
    the dataset names none), its true and predicted class and the prediction's softmax
    probability (per task for a multi-task model) and ``right`` (1 when every task is): the
    list to open after an evaluation, sorted by ``confidence`` to find the confidently wrong.
    Multi-label data: :func:`_multi_label_columns`. Nothing, and False, for a result without
    per-video predictions (loss-only)."""
    tasks = task_results(result)
    videos = {task: metrics.get("per_video") or {} for task, (metrics, _) in tasks.items()}
    if len(tasks) == 1 and isinstance(videos[""].get("scores"), np.ndarray):
        header, columns, right = _multi_label_columns(videos[""], tasks[""][1])
    elif tasks and all("predicted" in v for v in videos.values()):
        header, columns, right = _class_columns(videos, {t: c for t, (_, c) in tasks.items()})
    else:
        return False
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow([*header, "right"])
    names = result.get("videos", range(len(right)))
    writer.writerows(zip(names, *columns, right.astype(int), strict=True))
    storage.path(path).write_bytes(table.getvalue().encode("utf-8"))
    return True


def _class_columns(
    videos: Mapping[str, Mapping[str, list]], classes: Mapping[str, Sequence[str]]
) -> tuple[list[str], list[list], np.ndarray]:
    """A single-label or multi-task result's table: per task its ``label`` and ``predicted``
    class names and the prediction's ``confidence``, and ``right`` when every task is."""
    header, columns = ["video"], []
    for task, names in classes.items():
        keys = [k for k in ("label", "predicted", "confidence") if k in videos[task]]
        header += [f"{task}_{key}" if task else key for key in keys]
        columns += [
            videos[task][key] if key == "confidence" else [names[i] for i in videos[task][key]]
            for key in keys
        ]
    right = np.all([np.equal(v["label"], v["predicted"]) for v in videos.values()], axis=0)
    return header, columns, right


def _multi_label_columns(
    videos: Mapping[str, np.ndarray], classes: Sequence[str]
) -> tuple[list[str], list[list], np.ndarray]:
    """A multi-label result's table, in its metrics' conventions: ``labels`` (every true
    class), ``predicted`` (every class whose sigmoid passes 0.5), ``top`` and its sigmoid
    ``top_probability`` (6 digits), and ``right`` when the top class is a true one (``top1``):
    sorted by ``top_probability``, the confidently wrong videos again."""
    labels, scores = np.asarray(videos["label"]) > 0, np.asarray(videos["scores"], np.float64)
    rows, top = np.arange(len(scores)), scores.argmax(axis=1)

    def joined(marked: np.ndarray) -> list[str]:
        return ["; ".join(classes[k] for k in np.flatnonzero(row)) for row in marked]

    probability = np.round(sigmoid(scores[rows, top]), 6)
    header = ["video", "labels", "predicted", "top", "top_probability"]
    columns = [joined(labels), joined(scores > 0), [classes[k] for k in top], probability.tolist()]
    return header, columns, labels[rows, top]


def _arrays_apart(result: Mapping[str, Any], file: str) -> tuple[dict[str, Any], dict]:
    """``result`` with its array ``per_video`` (a multi-label result's labels and scores, too
    large for JSON) replaced by ``{"file": file}``, and those arrays (none for other results:
    a multi-task model's tasks are single-label, their per-video lists stay in the JSON)."""
    videos = result.get("per_video")
    if not (isinstance(videos, Mapping) and isinstance(videos.get("label"), np.ndarray)):
        return dict(result), {}
    return {**result, "per_video": {"file": file}}, dict(videos)


def read_per_video(result: dict[str, Any], path: str) -> dict[str, Any]:
    """``result`` (read from ``path``) with its per-video arrays read back from the file its
    ``per_video`` names; a file that is gone or unreadable leaves ``{"unavailable": why}``."""
    videos = result.get("per_video")
    if not (isinstance(videos, Mapping) and "file" in videos):
        return result
    file = os.path.join(os.path.dirname(path), videos["file"])
    try:
        with np.load(io.BytesIO(storage.path(file).read_bytes())) as saved:
            result["per_video"] = {name: saved[name] for name in saved.files}
    except FileNotFoundError:
        result["per_video"] = {"unavailable": f"{file} is gone"}
    except (OSError, ValueError, zipfile.BadZipFile) as e:  # cut short, not an npz
        result["per_video"] = {"unavailable": f"{file} cannot be read ({e})"}
    return result


def write_eval(result: Mapping[str, Any], workdir: str, plots: bool = True) -> list[str]:
    """Writes ``result`` into ``workdir``: ``eval_<split>_step<N>.json`` (a multi-label
    result's per-video labels and scores in :func:`per_video_path` beside it; a single-label
    or multi-task one's table of videos in :func:`video_table_path`), its
    :func:`scalars` to TensorBoard (``tensorboard/eval_<split>``) and ``metrics.jsonl``, and
    (``plots``) the PNGs of :func:`vjax.evaluate.plots.write_plots`. Returns the paths. The
    JSON is strict: a NaN or inf metric is written as null."""
    from vjax.metric_writers import MetricWriter

    split, step = result["split"], result.get("step", 0)
    path = eval_path(workdir, split, step)
    storage.path(workdir).mkdir(parents=True, exist_ok=True)
    written, arrays = _arrays_apart(result, os.path.basename(per_video_path(path)))
    paths = [path]
    if arrays:
        npz = io.BytesIO()
        np.savez_compressed(npz, **arrays)
        storage.path(per_video_path(path)).write_bytes(npz.getvalue())
        paths.append(per_video_path(path))
    if write_video_table(result, video_table_path(path)):
        paths.append(video_table_path(path))
    storage.path(path).write_text(json.dumps(_json_ready(written), indent=1, allow_nan=False))
    writer = MetricWriter(workdir)
    writer.write(step, f"eval_{split}", scalars(result))
    if plots:
        from vjax.evaluate.plots import write_plots

        paths += write_plots(result, workdir, f"_{split}")
    return paths
