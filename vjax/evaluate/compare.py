"""``vjax compare RUN_A RUN_B``: two evaluations side by side, the question after every ablation.

Each RUN is a workdir (its newest ``eval_<split>_step<N>.json``, written by ``vjax eval``) or
such a JSON file. Prints the overall metrics of both with B - A; top-1 compared video by video
(by the videos' names where both results carry them, else by position in the split) with
McNemar's exact test (is B - A more than which videos the test holds?), per task and for a
multi-task model's joint top-1 (every task right), naming the videos only A and only B got
right, or for multi-label data mAP with a paired bootstrap interval; then the classes that
changed most (F1, or AP for multi-label data), and plots every class's delta sorted
(``compare_<split>.png`` beside B's result, or ``--out``).

    vjax compare runs/baseline runs/ablation --split=test --top=10
"""

from __future__ import annotations

import difflib
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vjax import storage
from vjax.errors import (
    ArgumentParser,
    NotFoundError,
    UserError,
    output_file,
    path_given,
    positive_int,
)
from vjax.evaluate.report import read_per_video, scalars, task_results
from vjax.evaluate.uncertainty import discordant, paired_map, paired_top1

# What matplotlib writes (--out names the plot; a .json there failed after the comparison).
PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")

# What an eval result is, said by every error about one.
_GIVE = "give a workdir or the eval_<split>_step<N>.json that vjax eval writes"


def find_result(run: str, split: str = "test") -> str:
    """The JSON of ``run``: the file itself, or the workdir's newest ``eval_<split>_step*``."""
    if storage.path(run).is_file():
        return run
    if not storage.path(run).is_dir():
        raise NotFoundError(f"{run!r} does not exist; {_GIVE}")
    found = [str(p) for p in storage.path(run).glob(f"eval_{split}_step*.json")]
    if not found:
        evaluated = sorted(
            {p.name.split("_step")[0][5:] for p in storage.path(run).glob("eval_*_step*.json")}
        )
        if evaluated:
            close = difflib.get_close_matches(split, evaluated, n=1, cutoff=0.5)
            hint = f"; did you mean --split={close[0]}?" if close else ""
            raise NotFoundError(
                f"no eval_{split}_step*.json in {run!r}: it holds the results of --split="
                f"{', '.join(evaluated)}{hint}"
            )
        raise NotFoundError(
            f"no eval_{split}_step*.json in {run!r}: run `vjax eval --workdir={run} "
            f"--split={split} ...` first, or pass the JSON file"
        )
    return max(found, key=lambda p: int(re.search(r"step(\d+)\.json$", p).group(1)))


def read_result(path: str) -> dict[str, Any]:
    """The evaluation result in ``path``; a file that is not one (a run's ``config.json`` or
    ``metrics.jsonl``, not JSON at all) is a UserError naming it."""
    try:
        result = json.loads(storage.path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError included
        raise UserError(f"{path} is not an eval result: not one JSON object ({e}); {_GIVE}") from e
    if not (isinstance(result, dict) and {"split", "loss"} <= result.keys()):
        raise UserError(f"{path} is not an eval result (no split and loss); {_GIVE}")
    videos = result.get("videos")
    if videos is not None and len(videos) != result.get("num_examples"):
        raise UserError(  # written by hand, or cut: its rows cannot be paired by name
            f"{path} names {len(videos)} videos but scored {result.get('num_examples')}; "
            f"evaluate it again with vjax eval"
        )
    return read_per_video(result, path)


def class_metric(metrics: Mapping[str, Any]) -> str:
    """The per-class metric compared: AP for multi-label tasks, else F1."""
    return "per_class_ap" if "per_class_ap" in metrics else "per_class_f1"


def class_deltas(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """``{task: {class: B - A}}`` of :func:`class_metric` (classes valued in both runs)."""
    tasks_a, tasks_b = task_results(a), task_results(b)
    if {t: n for t, (_, n) in tasks_a.items()} != {t: n for t, (_, n) in tasks_b.items()}:
        raise UserError(
            "the two results have different tasks or class names; compare runs "
            "evaluated on the same dataset"
        )
    out = {}
    for task, (metrics_a, _) in tasks_a.items():
        key = class_metric(metrics_a)
        values_a, values_b = metrics_a[key], tasks_b[task][0][key]
        out[task] = {
            name: values_b[name] - value
            for name, value in values_a.items()
            if value is not None and values_b[name] is not None
        }
    return out


def format_compare(
    a: Mapping[str, Any], b: Mapping[str, Any], names: Sequence[str], top: int = 10
) -> str:
    """The overall metrics of both runs with B - A, then per task the ``top`` classes that
    gained and lost most."""
    sa, sb = scalars(a), scalars(b)
    scored = [f"({r['split']}, {r.get('num_examples', '?')} clips)" for r in (a, b)]
    lines = [f"A = {names[0]} {scored[0]}", f"B = {names[1]} {scored[1]}"]
    if scored[0] != scored[1]:
        lines.append("note: A and B were scored on different clips: B - A is not the models' alone")
    lines += ["", f"{'metric':<24}{'A':>10}{'B':>10}{'B - A':>10}"]
    for key in (k for k in sa if k in sb):
        lines.append(f"{key:<24}{sa[key]:>10.4f}{sb[key]:>10.4f}{sb[key] - sa[key]:>+10.4f}")
    lines += paired_lines(a, b, top)
    for task, deltas in class_deltas(a, b).items():
        metric = class_metric(task_results(a)[task][0]).removeprefix("per_class_").upper()
        ranked = sorted(deltas.items(), key=lambda nd: nd[1])
        width = max([len(n) for n in deltas] + [5])
        title = f"{task + ': ' if task else ''}per-class {metric}, B - A"
        lines += ["", f"{title} (largest gains, then largest losses)"]
        gains = [(n, d) for n, d in reversed(ranked) if d > 0][:top]
        losses = [(n, d) for n, d in ranked if d < 0][:top]
        lines += [f"  {n:<{width}} {d:+.3f}" for n, d in gains] or ["  (no class gained)"]
        lines += ["  " + "-" * (width + 7)]
        lines += [f"  {n:<{width}} {d:+.3f}" for n, d in losses] or ["  (no class lost)"]
        up, down = (sum(1 for d in deltas.values() if sign * d > 0) for sign in (1, -1))
        lines.append(
            f"  {len(deltas)} classes: {up} up, {down} down, {len(deltas) - up - down} unchanged"
        )
    return "\n".join(lines)


def paired_lines(a: Mapping[str, Any], b: Mapping[str, Any], top: int = 10) -> list[str]:
    """Per task, B's top-1 against A's video by video
    (:func:`~vjax.evaluate.uncertainty.paired_top1`), or for multi-label tasks B's mAP against
    A's on the same resamples of the videos (:func:`~vjax.evaluate.uncertainty.paired_map`):
    whether the difference is more than the luck of which videos the test holds. Said instead
    when the results cannot be paired. Where both results name their videos, the first
    ``top`` that only A and only B got right are named (:func:`_flipped_lines`)."""
    rows, lines = paired_rows(a, b)
    if rows is not None and not len(rows[0]):
        return ["", "no paired test: A and B share no video (their results name the videos)"]
    names = None if rows is None else [a["videos"][row] for row in rows[0]]
    tasks_b = task_results(b)
    for task, (metrics_a, _) in task_results(a).items():
        videos = metrics_a.get("per_video"), tasks_b[task][0].get("per_video")
        if rows is not None and None not in videos:
            videos = tuple(_rows_of(v, r) for v, r in zip(videos, rows, strict=True))
        title = f"{task}: " if task else ""
        if videos == (None, None):  # both evaluated before per-video results
            continue
        if None in videos:
            old = "A" if videos[0] is None else "B"
            lines.append(f"{title}no paired test: {old}'s result has no per-video predictions "
                         f"(evaluate it again with vjax eval)")  # fmt: skip
            continue
        unavailable = [v["unavailable"] for v in videos if "unavailable" in v]
        if unavailable:
            lines.append(f"{title}no paired test: {unavailable[0]}")
        elif "scores" in videos[0]:
            lines.append(_paired_map_line(title, paired_map(*videos)))
        else:
            lines.append(_paired_line(title, paired_top1(*videos)))
            lines += _flipped_lines(videos, names, top)
    joint = [_every_task_videos(result) for result in (a, b)]
    if None not in joint:  # several tasks, each with per-video predictions in both
        if rows is not None:
            joint = [_rows_of(v, r) for v, r in zip(joint, rows, strict=True)]
        lines.append(_paired_line("joint (every task right): ", paired_top1(*joint)))
        lines += _flipped_lines(joint, names, top)
    return [""] + lines if lines else []


def _flipped_lines(
    videos: Sequence[Mapping[str, Any]], names: Sequence[str] | None, top: int
) -> list[str]:
    """The videos only A and only B got right (:func:`~vjax.evaluate.uncertainty.discordant`),
    by name, the first ``top`` of each in the split's order: the clips to watch after an
    ablation. Nothing without names, or when the two results' labels differ."""
    split = None if names is None else discordant(*videos)
    if split is None:
        return []
    lines = []
    for side, flipped in zip("AB", split, strict=True):
        picked = [names[row] for row in np.flatnonzero(flipped)]
        if picked:
            more = f" and {len(picked) - top} more" if len(picked) > top else ""
            lines.append(f"  only {side} right: {', '.join(picked[:top])}{more}")
    return lines


def paired_rows(
    a: Mapping[str, Any], b: Mapping[str, Any]
) -> tuple[tuple[np.ndarray, np.ndarray] | None, list[str]]:
    """Which of A's and B's per-video rows hold the same video, from the video names both
    results carry (``videos``, from a prepared video dataset): ``((rows of A, rows of B),
    lines)``, the videos both scored in A's order, with a line saying what is left out when
    the two scored different videos. ``(None, [])`` when a result has no names (or repeats
    one): rows are then paired by position, as the split's order."""
    names = a.get("videos"), b.get("videos")
    if None in names or any(len(set(n)) != len(n) for n in names):
        return None, []
    where_b = {name: row for row, name in enumerate(names[1])}
    rows_a = [row for row, name in enumerate(names[0]) if name in where_b]
    rows_b = [where_b[names[0][row]] for row in rows_a]
    rows = np.asarray(rows_a, int), np.asarray(rows_b, int)
    only_a, only_b = len(names[0]) - len(rows_a), len(names[1]) - len(rows_b)
    if not (only_a or only_b):
        return rows, []
    return rows, [
        f"paired on the {len(rows_a)} videos both scored, by name ({only_a} only in A, "
        f"{only_b} only in B)"
    ]


def _rows_of(videos: Mapping[str, Any], rows: np.ndarray) -> Mapping[str, Any]:
    """A ``per_video``'s arrays (``label``, ``predicted``, ``scores``) at ``rows``; an
    ``unavailable`` one as it is."""
    if "unavailable" in videos:
        return videos
    return {key: np.asarray(value)[rows] for key, value in videos.items()}


def _paired_map_line(title: str, paired: Mapping[str, Any] | None) -> str:
    """One line of :func:`paired_lines` for a multi-label task: B - A of mAP, its interval."""
    if paired is None:
        return f"{title}no paired test: A and B scored different videos"
    lo, hi = paired["ci95"]
    return (
        f"{title}mAP video by video ({paired['videos']} videos): B - A "
        f"{paired['difference']:+.4f} (95% CI {lo:+.4f} to {hi:+.4f}, paired bootstrap)"
    )


def _paired_line(title: str, paired: Mapping[str, Any] | None) -> str:
    """One line of :func:`paired_lines`: B - A, the discordant videos and McNemar's p."""
    if paired is None:
        return f"{title}no paired test: A and B scored different videos"
    return (
        f"{title}top1 video by video ({paired['videos']} videos): B - A "
        f"{paired['difference']:+.4f}; only B right on {paired['only_b']}, only A on "
        f"{paired['only_a']}; McNemar exact p = {paired['p_value']:.3g}"
    )


def _every_task_videos(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """A multi-task result's ``per_video`` of every task at once: per video, each task's
    label and prediction (right when every task is, the joint top-1's count). None for one
    task, or when a task has no per-video predictions."""
    tasks = result.get("tasks")
    if not tasks or any("predicted" not in m.get("per_video", {}) for m in tasks.values()):
        return None
    videos = [m["per_video"] for m in tasks.values()]
    return {key: np.stack([v[key] for v in videos], axis=1) for key in ("label", "predicted")}


def plot_compare(a: Mapping[str, Any], b: Mapping[str, Any], path: str) -> list[str]:
    """Every class's B - A of :func:`class_metric`, sorted: one image per task (``path``'s
    format, PNG when it names none; a task's name before the extension)."""
    from vjax.evaluate.plots import plot_class_bars

    stem, extension = os.path.splitext(path)
    extension = extension or ".png"
    paths = []
    for task, deltas in class_deltas(a, b).items():
        metric = class_metric(task_results(a)[task][0]).removeprefix("per_class_").upper()
        out = f"{stem}_{task}{extension}" if task else f"{stem}{extension}"
        limit = max([abs(d) for d in deltas.values()] + [0.05]) * 1.05
        title = f"{task + ': ' if task else ''}per-class {metric}, B - A"
        paths.append(plot_class_bars(deltas, f"{metric} change", title, out, (-limit, limit)))
    return paths


def compare(
    run_a: str, run_b: str, split: str = "test", out: str | None = None, top: int = 10
) -> tuple[str, list[str]]:
    """``(printed text, plot paths)`` of two runs (workdirs or result JSONs).

    >>> text, paths = compare("runs/a", "runs/b")
    """
    paths = [find_result(run, split) for run in (run_a, run_b)]
    a, b = (read_result(p) for p in paths)
    text = format_compare(a, b, paths, top)
    out = out or os.path.join(os.path.dirname(paths[1]), f"compare_{split}.png")
    storage.require_writable(os.path.dirname(out) or ".")
    return text, plot_compare(a, b, out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="vjax compare", description=__doc__.split("\n")[0])
    parser.add_argument("run_a", type=path_given, help="baseline: a workdir or an eval_*.json")
    parser.add_argument("run_b", type=path_given, help="the run compared with it")
    parser.add_argument("--split", default="test", help="which eval_<split>_step*.json")
    parser.add_argument(
        "--out", type=output_file, default=None, help="plot path (default: beside B's result)"
    )
    parser.add_argument(
        "--top", type=positive_int, default=10,
        help="classes per direction, and videos only one run got right (named results)",
    )  # fmt: skip
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.out and os.path.splitext(args.out)[1].lower() not in PLOT_SUFFIXES:
        parser.error(f"--out {args.out!r} is the plot: end it with one of {PLOT_SUFFIXES}")
    text, paths = compare(args.run_a, args.run_b, args.split, args.out, args.top)
    print(text)
    print("wrote " + ", ".join(paths))
    return 0
