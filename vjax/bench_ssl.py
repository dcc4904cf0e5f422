"""``vjax bench ssl``: label efficiency of VideoMAE pre-training on the embedded dataset.

Pre-trains ``configs/videomae.py:pretrain_motion`` (masked-video reconstruction) on
vjax_motion's training split with its labels unused (all 10 classes: translations, rotations,
speed changes, approach / recede), fine-tunes ``finetune_motion`` from it on 10% of the
training clips with their labels, trains the same classifier from scratch on the same clips
for the same number of steps, and tests both on the test split. The labelled 10% are the
first clips of the same training split (vjax_motion's clips are a pure function of their
index, so ``num_train=400`` holds exactly the first 400 of the 4000), balanced over classes.
Prints the table and writes it to ``BENCHMARKS.md`` (its ``ssl`` section).

    vjax bench ssl --workdir=runs/bench_ssl --data_dir=~/tensorflow_datasets
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any

from vjax.bench import (
    paired_top1_words,
    publish,
    timed_training,
    top1_with_interval,
    train_and_test,
    training_parser,
    vjax_recipe,
)
from vjax.errors import number_in, positive_int


def run(
    workdir: str,
    data_dir: str,
    pretrain_steps: int,
    finetune_steps: int,
    label_fraction: float = 0.1,
    tiny: bool = False,
    pretrain_extra: dict[str, str] | None = None,
    finetune_extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The three runs and what the table shows. ``tiny``: the recipes' tiny variants (a
    seconds-long run on the demo's tiny data, as the notebook's small mode);
    ``pretrain_extra`` / ``finetune_extra``: config overrides of either side."""
    suffix = ",tiny" if tiny else ""
    common = {"dataset.data_dir": data_dir}
    steps = {"train.num_steps": str(pretrain_steps)}
    pretrain_recipe = f"videomae.py:pretrain_motion{suffix}"
    finetune_recipe = f"videomae.py:finetune_motion{suffix}"
    pretrain = vjax_recipe(pretrain_recipe, {**common, **steps, **(pretrain_extra or {})})
    labelled = max(int(round(pretrain.dataset.num_train * label_fraction)), 1)
    tune = {**common, "train.num_steps": str(finetune_steps), "dataset.num_train": str(labelled)}
    tune.update(finetune_extra or {})
    pretrain_dir = os.path.join(workdir, "pretrain")
    pretrain_seconds = timed_training(pretrain, pretrain_dir)
    finetuned = train_and_test(
        vjax_recipe(finetune_recipe, {**tune, "train.init_from": pretrain_dir}),
        os.path.join(workdir, "finetune"),
    )
    scratch = train_and_test(  # the same recipe and steps, from a random initialisation
        vjax_recipe(finetune_recipe, tune), os.path.join(workdir, "scratch")
    )
    return {
        "num_classes": pretrain.dataset.num_classes,
        "pretrain_clips": pretrain.dataset.num_train,
        "labelled_clips": labelled,
        "pretrain_steps": pretrain_steps,
        "finetune_steps": finetune_steps,
        "pretrain_seconds": pretrain_seconds,
        "finetuned": finetuned,
        "scratch": scratch,
    }


def table(result: dict[str, Any], total_seconds: float, command: str) -> str:
    """The Markdown section: the setting, one row per model, the gain in points."""
    gain = 100 * (result["finetuned"]["top1"] - result["scratch"]["top1"])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = [
        ("VideoMAE pre-trained, fine-tuned", result["pretrain_steps"], result["finetuned"],
         result["pretrain_seconds"]),
        ("from scratch", 0, result["scratch"], 0.0),
    ]  # fmt: skip
    lines = [
        f"vjax_motion, {result['num_classes']} classes: pre-training on the "
        f"{result['pretrain_clips']} training clips without labels, then "
        f"{result['finetune_steps']} steps on {result['labelled_clips']} labelled clips "
        f"({100 * result['labelled_clips'] / result['pretrain_clips']:.0f}% of the labels); "
        f"test split ({result['scratch']['num_examples']} clips). CPU: {platform.machine()}, "
        f"{os.cpu_count()} cores, load average {load:.1f} at the end (a shared machine: wall "
        f"times include other jobs' load). Total {total_seconds / 60:.1f} min. "
        f"Command: `{command}`",
        "",
        "| model | pre-training steps | fine-tuning steps | test top-1 (95% CI) | pre-training s | "
        "fine-tuning s |",
        "|---|---|---|---|---|---|",
    ]
    for name, steps, metrics, pretrain_seconds in rows:
        lines.append(
            f"| {name} | {steps} | {result['finetune_steps']} | {top1_with_interval(metrics)} | "
            f"{pretrain_seconds:.0f} | {metrics['seconds']:.0f} |"
        )
    paired = paired_top1_words(result["scratch"], result["finetuned"], ("scratch", "pre-trained"))
    lines += ["", f"Gain from pre-training: {gain:+.1f} points of top-1 ({paired}; target: +10)."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = training_parser("ssl", __doc__)
    parser.add_argument("--pretrain_steps", type=positive_int, default=2000)
    parser.add_argument("--finetune_steps", type=positive_int, default=400)
    parser.add_argument("--label_fraction", type=number_in(0, 1, low_open=True), default=0.1)
    parser.add_argument("--tiny", action="store_true", help="the recipes' tiny variants")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    start = time.perf_counter()
    result = run(
        os.path.expanduser(args.workdir),
        os.path.expanduser(args.data_dir),
        args.pretrain_steps,
        args.finetune_steps,
        args.label_fraction,
        args.tiny,
    )
    seconds = time.perf_counter() - start
    return publish("ssl", argv, lambda command: table(result, seconds, command), args.out)
