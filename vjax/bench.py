"""``vjax bench KIND [flags]``: the benchmarks, each printing a table and writing its own
section of ``BENCHMARKS.md`` (other sections are kept).

    vjax bench data     # input pipeline: decoded + augmented frames/s vs plain PyAV
    vjax bench train    # train step: clips/s, TFLOP/s, MFU, memory, compile time per model
                        # (--peers: beside the PyTorch peers, eager and torch.compile)
    vjax bench infer    # inference latency/throughput per form (float, bf16, int8, exports)
                        # beside PyTorch (torchvision, transformers)
    vjax bench ssl      # label efficiency: VideoMAE pre-training vs from scratch, 10% labels
    vjax bench distill  # a 5x smaller ViViT trained alone vs distilled from the demo ViViT
    vjax bench prune    # the demo ViViT and R(2+1)D pruned by half and fine-tuned: size,
                        # latency and accuracy before and after
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from vjax.errors import ArgumentParser, UserError, optional_output_file

KINDS = {
    "data": "vjax.bench_data",
    "train": "vjax.bench_train",
    "infer": "vjax.bench_infer",
    "ssl": "vjax.bench_ssl",
    "distill": "vjax.bench_distill",
    "prune": "vjax.bench_prune",
}


def update_benchmarks(path: str, section: str, body: str) -> None:
    """Replaces (or appends) the ``## section`` of a Markdown file, keeping all others."""
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    header = f"## {section}"
    lines = text.splitlines()
    if header in lines:
        start = lines.index(header)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), None)
        rest = lines[end:] if end is not None else []
        lines = lines[:start] + [header, "", *body.splitlines(), ""] + rest
    else:
        lines = [*lines, "", header, "", *body.splitlines()]
    with open(path, "w") as f:
        f.write("\n".join(lines).rstrip("\n") + "\n")


def device_name(device: Any) -> str:
    """A ``jax.Device``'s kind, or on CPU the processor's model name (Linux) where known."""
    if device.platform != "cpu" or not os.path.exists("/proc/cpuinfo"):
        return device.device_kind
    with open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return f"CPU {names[0]}" if names else device.device_kind


def cpu_cores() -> str:
    """The CPU cores this process may run on, as a table states them: ``"2 cores"``, or
    ``"1 of 2 cores"`` when it is pinned (``taskset``)."""
    from vjax.evaluate.uncertainty import usable_cores

    total, usable = os.cpu_count() or 1, usable_cores()
    return f"{total} cores" if usable == total else f"{usable} of {total} cores"


def vjax_recipe(spec: str, overrides: dict[str, str]):
    """vjax's own recipe ``FILE:VARIANT`` (from ``config_utils.RECIPES``, never a ``configs/`` of
    the working directory) with ``overrides`` applied."""
    from vjax.config_utils import RECIPES, apply_overrides, load_config

    config = load_config(os.path.join(RECIPES, spec))
    apply_overrides(config, overrides)
    return config


def check_same_run(config: Any, workdir: str) -> None:
    """A benchmark's run folder is resumed only by the configuration that started it: one
    whose ``config.json`` differs (another ``--pretrain_steps``, temperature, ...) is refused,
    naming the keys, since its checkpoints would be reported under the new settings."""
    import json

    from flax.traverse_util import flatten_dict

    from vjax.config_utils import config_to_json, with_absolute_paths

    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        return
    with open(path) as f:
        saved = flatten_dict(json.load(f), sep=".")
    # As training records it (its local data paths absolute).
    wanted = flatten_dict(json.loads(config_to_json(with_absolute_paths(config))), sep=".")
    differ = [
        f"{k}={saved.get(k)!r} there, {v!r} now" for k, v in wanted.items() if saved.get(k) != v
    ]
    if differ:
        raise UserError(
            f"{workdir} holds a run of other settings ({'; '.join(differ[:3])}"
            f"{'; ...' if len(differ) > 3 else ''}): give another --workdir, or delete it"
        )


def timed_training(config: Any, workdir: str) -> float:
    """Trains ``config`` in ``workdir`` (resuming an interrupted run of the same config:
    :func:`check_same_run`); returns the training's wall seconds."""
    import time

    from vjax import train

    check_same_run(config, workdir)
    start = time.perf_counter()
    train.train(config, workdir)
    return time.perf_counter() - start


def train_and_test(config: Any, workdir: str) -> dict[str, Any]:
    """:func:`timed_training`, then the test: the test metrics and the training's seconds."""
    from vjax import train

    seconds = timed_training(config, workdir)
    return {**train.evaluate_checkpoint(config, workdir, "test"), "seconds": seconds}


def budget_words(seconds: float) -> str:
    """A table's words for ``--budget``: ``each measurement stops after 30 s``, or for 0 (which
    the measurements take as no limit) ``no time limit``."""
    return f"each measurement stops after {seconds:g} s" if seconds else "no time limit"


def top1_with_interval(metrics: Mapping[str, Any]) -> str:
    """A table cell: test top-1 and its 95% interval (Wilson's), ``0.935 (0.916-0.950)``."""
    lo, hi = metrics["top1_ci95"]
    return f"{metrics['top1']:.3f} ({lo:.3f}-{hi:.3f})"


def paired_top1_words(a: Mapping[str, Any], b: Mapping[str, Any], names: Sequence[str]) -> str:
    """Two test results compared video by video, in words: ``only B right on 61 of the 800
    test clips, only A on 19; McNemar exact p = 1.2e-06``
    (:func:`vjax.evaluate.uncertainty.paired_top1`): is the gain more than the luck of which
    clips the test holds?"""
    from vjax.evaluate.uncertainty import paired_top1

    paired = paired_top1(a["per_video"], b["per_video"])
    if paired is None:
        raise ValueError(f"{names[0]} and {names[1]} were tested on different clips")
    return (
        f"only {names[1]} right on {paired['only_b']} of the {paired['videos']} test clips, "
        f"only {names[0]} on {paired['only_a']}; McNemar exact p = {paired['p_value']:.2g}"
    )


def seed_table(
    runs: Sequence[tuple[int, Mapping[str, Any], Mapping[str, Any]]],
    names: Sequence[str],
    columns: Sequence[str],
) -> list[str]:
    """A Markdown table of two models trained with the same seeds, one row per ``(seed, A's
    test result, B's)``: B's and A's test top-1 with their intervals (``columns``: the two
    columns' headers, B's first), B - A in points, the two compared clip by clip
    (:func:`paired_top1_words` with ``names`` (A's, B's)) and both training times."""
    lines = [
        f"| seed | {columns[0]}: test top-1 (95% CI) | {columns[1]}: test top-1 (95% CI) | "
        "gain (points) | clip by clip | train s |",
        "|---|---|---|---|---|---|",
    ]
    for seed, a, b in runs:
        lines.append(
            f"| {seed} | {top1_with_interval(b)} | {top1_with_interval(a)} | "
            f"{100 * (b['top1'] - a['top1']):+.1f} | {paired_top1_words(a, b, names)} | "
            f"{b['seconds']:.0f} / {a['seconds']:.0f} |"
        )
    return lines


def across_seeds_words(
    runs: Sequence[tuple[int, Mapping[str, Any], Mapping[str, Any]]], names: Sequence[str]
) -> str:
    """Two models' test top-1 over the same seeds (``runs`` as :func:`seed_table` takes them),
    in words: ``+3.9 points on average over 3 seeds (+0.2 to +6.1; distilled better on 3 of 3;
    paired t-test over the seeds p = 0.17)``.
    One seed's McNemar test says whether the test clips could explain its gain; only the
    spread over seeds says whether training's own randomness could (the test is left out for
    one seed, whose spread is unknown)."""
    import numpy as np

    gains = 100 * np.array([b["top1"] - a["top1"] for _, a, b in runs], float)
    seeds = f"{len(gains)} seed{'s' * (len(gains) > 1)}"
    words = f"{gains.mean():+.1f} points on average over {seeds}"
    if len(gains) < 2:
        return words + " (one seed: the spread over seeds is unknown)"
    better = f"{names[1]} better on {int((gains > 0).sum())} of {len(gains)}"
    spread = f"{gains.min():+.1f} to {gains.max():+.1f}"
    if np.all(gains == gains[0]):
        return f"{words} ({spread}; {better})"
    from scipy.stats import ttest_1samp

    p = float(ttest_1samp(gains, 0.0).pvalue)
    return f"{words} ({spread}; {better}; paired t-test over the seeds p = {p:.2g})"


def training_parser(kind: str, doc: str) -> argparse.ArgumentParser:
    """The flags of a benchmark that trains on the embedded data: ``--workdir`` (default
    ``runs/bench_KIND``), ``--data_dir``, ``--out`` (the Markdown file, '' none). ``--help``
    shows every flag's default."""
    parser = ArgumentParser(
        prog=f"vjax bench {kind}",
        description=doc.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--workdir", default=f"runs/bench_{kind}", help="runs it trains")
    parser.add_argument("--data_dir", default="~/tensorflow_datasets", help="TFDS folder")
    parser.add_argument(
        "--out", type=optional_output_file, default="BENCHMARKS.md",
        help="Markdown file to update ('' none)",
    )  # fmt: skip
    return parser


def publish(kind: str, argv: Sequence[str] | None, table: Callable[[str], str], out: str) -> int:
    """Prints ``table(command)`` (``command``: this ``vjax bench KIND`` line as typed) and
    writes it as the ``vjax bench KIND`` section of ``out`` ('' none); returns 0."""
    command = f"vjax bench {kind} " + " ".join(sys.argv[1:] if argv is None else argv)
    text = table(command.strip())
    print(text)
    if out:
        update_benchmarks(out, f"vjax bench {kind}", text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``vjax bench KIND``: ``--help`` prints the kinds (exit 0); no kind or an
    unknown one is a UserError listing the valid ones."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__.strip())
        return 0
    if not argv or argv[0] not in KINDS:
        what = f"unknown bench kind {argv[0]!r}" if argv else "no bench kind given"
        raise UserError(f"{what}; valid: {', '.join(KINDS)} (vjax bench --help describes them)")
    return importlib.import_module(KINDS[argv[0]]).main(argv[1:])
