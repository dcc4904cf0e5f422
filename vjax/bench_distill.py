"""``vjax bench distill``: a small student trained alone vs distilled from the demo ViViT.

The teacher is ``configs/demo.py:vivit`` (6 classes of vjax_motion), trained here (or given
with ``--teacher``); the student is the same ViViT narrower and shallower (:data:`STUDENT`:
width 48, 2 layers, 5.4x fewer multiply-accumulates per clip). The student trains twice for
the same steps on the same data, once alone and once with ``train.distill.teacher``, and both
again for each seed (``--seeds``, 3 by default: the gain moved from +0.2 to +6.1 points with
the seed); teacher and students are tested on the test split. Prints the table and writes it
to ``BENCHMARKS.md`` (its ``vjax bench distill`` section).

The default setting is "function matching" (Beyer et al. 2022, "a good teacher is patient and
consistent"): both students see a tenth of the training clips, mixed by mixup on every batch,
for twice the demo's steps; the alone student learns the mixed one-hot labels, the distilled
one only the teacher's outputs on the same mixed clips (alpha 1, temperature 1). On the plain
clips the student memorises its few examples and the teacher's outputs there add nothing
(BENCHMARKS.md lists every setting tried, and the seed-to-seed spread).

    vjax bench distill --workdir=runs/bench_distill --data_dir=~/tensorflow_datasets
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any

from vjax.bench import (
    across_seeds_words,
    publish,
    seed_table,
    top1_with_interval,
    train_and_test,
    training_parser,
    vjax_recipe,
)
from vjax.errors import non_negative_float, non_negative_int, number_in, positive_int

# The student's model section over the demo ViViT's (width 96, 4 layers, 3 heads, MLP 384).
STUDENT = {"hidden_size": 48, "num_layers": 2, "num_heads": 2, "mlp_dim": 192}
TINY_STUDENT = {"hidden_size": 16, "num_heads": 1, "mlp_dim": 32}  # under the tiny ViViT (32)
# The students train this many times the demo's steps by default: matching the teacher's
# function on ever new mixed clips keeps improving after the student alone has levelled off.
STUDENT_STEPS_FACTOR = 2


def _size(config) -> dict[str, float]:
    """Parameters and GMACs per clip (the papers' "GFLOPs") of a config's model."""
    from vjax.flops import params_and_macs
    from vjax.models import build_model

    model = build_model(config.model, config.dataset.num_classes)
    shape = (1, config.dataset.num_frames, config.dataset.height, config.dataset.width, 3)
    params, macs = params_and_macs(model, shape)
    return {"params": params, "gmacs": macs / 1e9}


def run(
    workdir: str,
    data_dir: str,
    teacher_steps: int | None,
    student_steps: int | None,
    teacher: str = "",
    temperature: float = 1.0,
    alpha: float = 1.0,
    tiny: bool = False,
    train_fraction: float = 0.1,
    mixup_alpha: float = 1.0,
    seeds: int = 3,
) -> dict[str, Any]:
    """Trains (or reuses) the teacher, then for each seed ``0 .. seeds - 1`` (initialisation
    and batch order) the student alone and distilled; returns the sizes and test metrics.
    Steps ``None``: the demo config's own for the teacher, :data:`STUDENT_STEPS_FACTOR` times
    that for the students. Both students train on the first ``train_fraction`` of the training
    clips with mixup at ``mixup_alpha`` (the teacher sees the same mixed clips)."""
    variant = "tiny" if tiny else "vivit"
    common = {"dataset.data_dir": data_dir}
    teacher_config = vjax_recipe(f"demo.py:{variant}", common)
    if teacher_steps:
        teacher_config.train.num_steps = teacher_steps
    teacher_dir = teacher or os.path.join(workdir, "teacher")
    if teacher:
        from vjax import train

        tested = {**train.evaluate_checkpoint(teacher_config, teacher_dir, "test"), "seconds": 0}
    else:
        tested = train_and_test(teacher_config, teacher_dir)
    student = {f"model.{k}": str(v) for k, v in (TINY_STUDENT if tiny else STUDENT).items()}
    num_train = max(round(teacher_config.dataset.num_train * train_fraction), 1)
    student.update({"dataset.num_train": str(num_train), "input.mixup_alpha": str(mixup_alpha)})
    demo_steps = vjax_recipe(f"demo.py:{variant}", {}).train.num_steps
    student["train.num_steps"] = str(student_steps or STUDENT_STEPS_FACTOR * demo_steps)
    distill = {
        "train.distill.teacher": teacher_dir,
        "train.distill.temperature": str(temperature),
        "train.distill.alpha": str(alpha),
    }
    runs = []
    for seed in range(seeds):
        run = {"seed": seed}
        for name, extra in (("alone", {}), ("distilled", distill)):
            overrides = {**common, **student, **extra, "seed": str(seed)}
            config = vjax_recipe(f"demo.py:{variant}", overrides)
            run[name] = train_and_test(config, os.path.join(workdir, f"{name}_seed{seed}"))
        runs.append(run)
    return {
        "teacher": {**_size(teacher_config), **tested, "steps": tested["step"]},  # its own step
        "student": {
            **_size(config),
            "steps": config.train.num_steps,
            **{k: config.model[k] for k in ("hidden_size", "num_layers")},
        },
        "runs": runs,
        "num_classes": teacher_config.dataset.num_classes,
        "temperature": temperature,
        "alpha": alpha,
        "num_train": (num_train, teacher_config.dataset.num_train),
        "mixup_alpha": mixup_alpha,
    }


def table(result: dict[str, Any], total_seconds: float, command: str) -> str:
    """The Markdown section: the setting, the two models' sizes, one row per seed (both
    students, the gain, McNemar's test of it), the gain over the seeds and the teacher gap."""
    teacher, student, runs = result["teacher"], result["student"], result["runs"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    used, total = result["num_train"]
    mixup = result["mixup_alpha"]
    mixed = f", mixup alpha {mixup} on every batch (the teacher scores the same mixed clips)"
    lines = [
        f"vjax_motion, {result['num_classes']} classes; test split "
        f"({runs[0]['alone']['num_examples']} clips). Student: the teacher's ViViT at width "
        f"{student['hidden_size']} with {student['num_layers']} layer"
        f"{'s' * (student['num_layers'] != 1)}, "
        f"{teacher['gmacs'] / student['gmacs']:.1f}x fewer GFLOPs than the teacher; distilled "
        f"with temperature {result['temperature']}, alpha {result['alpha']}. Both students: the "
        f"same config apart from the teacher, {used} of the {total} training clips (the "
        f"teacher trained on all){mixed if mixup else ''}, trained once per seed (its "
        f"initialisation and batch order). CPU: {platform.machine()}, {os.cpu_count()} cores, "
        f"load average {load:.1f} at the end (a shared machine: wall times include other jobs' "
        f"load). Total {total_seconds / 60:.1f} min. Command: `{command}`",
        "",
        "| model | params | GFLOPs | steps | test top-1 (95% CI) |",
        "|---|---|---|---|---|",
        f"| teacher (demo ViViT) | {teacher['params']:,} | {teacher['gmacs']:.4f} | "
        f"{teacher['steps']} | {top1_with_interval(teacher)} |",
        f"| student | {student['params']:,} | {student['gmacs']:.4f} | {student['steps']} | "
        "by seed below |",
        "",
    ]
    names = ("alone", "distilled")
    pairs = [(run["seed"], run["alone"], run["distilled"]) for run in runs]
    lines += seed_table(pairs, names, ("distilled", "alone"))
    gain = across_seeds_words(pairs, names)
    distilled = sum(b["top1"] for *_, b in pairs) / len(pairs)
    gap = 100 * (teacher["top1"] - distilled)
    lines += [
        "",
        f"Distilled vs alone: {gain}; the distilled students {gap:.1f} points below the "
        f"teacher on average (target: +3 points, or within 1 point of the teacher).",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = training_parser("distill", __doc__)
    parser.add_argument("--teacher", default="", help="a trained demo ViViT workdir to reuse")
    parser.add_argument(
        "--teacher_steps", type=non_negative_int, default=0, help="0: the demo's own"
    )
    parser.add_argument(
        "--student_steps", type=int, default=0, help="0: twice the demo's own (1600)"
    )
    parser.add_argument(
        "--temperature",
        type=number_in(0, math.inf, low_open=True, high_open=True),
        default=1.0,
        help="of the teacher's and student's softmax",
    )
    parser.add_argument(
        "--alpha", type=number_in(0, 1), default=1.0, help="1: the teacher's outputs only"
    )
    parser.add_argument("--tiny", action="store_true", help="the demo's tiny variant (seconds)")
    parser.add_argument(
        "--train_fraction",
        type=number_in(0, 1, low_open=True),
        default=0.1,
        help="of the training clips, both students",
    )
    parser.add_argument(
        "--mixup_alpha", type=non_negative_float, default=1.0, help="both students; 0: off"
    )
    parser.add_argument(
        "--seeds", type=positive_int, default=3, help="both students, with seeds 0..N-1"
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    start = time.perf_counter()
    result = run(
        os.path.expanduser(args.workdir),
        os.path.expanduser(args.data_dir),
        args.teacher_steps or None,
        args.student_steps or None,
        os.path.expanduser(args.teacher),
        args.temperature,
        args.alpha,
        args.tiny,
        args.train_fraction,
        args.mixup_alpha,
        args.seeds,
    )
    seconds = time.perf_counter() - start
    return publish("distill", argv, lambda command: table(result, seconds, command), args.out)
