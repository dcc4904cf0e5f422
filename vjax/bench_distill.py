"""``vjax bench distill``: a small student trained alone vs distilled from the demo ViViT.

The teacher is ``configs/demo.py:vivit`` (6 classes of vjax_motion), trained here (or given
with ``--teacher``); the student is the same ViViT narrower and shallower (:data:`STUDENT`:
width 48, 2 layers, 5.4x fewer multiply-accumulates per clip). The student trains twice for
the same steps on the same data, once alone and once with ``train.distill.teacher``; teacher
and both students are tested on the test split. Prints the table and writes it to
``BENCHMARKS.md`` (its ``vjax bench distill`` section).

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
    paired_top1_words,
    publish,
    top1_with_interval,
    train_and_test,
    training_parser,
    vjax_recipe,
)
from vjax.errors import non_negative_float, number_in

# The student's model section over the demo ViViT's (width 96, 4 layers, 3 heads, MLP 384).
STUDENT = {"hidden_size": 48, "num_layers": 2, "num_heads": 2, "mlp_dim": 192}
TINY_STUDENT = {"hidden_size": 16, "num_heads": 1, "mlp_dim": 32}  # under the tiny ViViT (32)
# The students train this many times the demo's steps by default: matching the teacher's
# function on ever new mixed clips keeps improving after the student alone has levelled off.
STUDENT_STEPS_FACTOR = 2


def _size(config) -> dict[str, float]:
    """Parameters and GMACs per clip (the papers' "GFLOPs") of a config's model."""
    from vjax.flops import count_macs, count_params
    from vjax.models import build_model

    model = build_model(config.model, config.dataset.num_classes)
    shape = (1, config.dataset.num_frames, config.dataset.height, config.dataset.width, 3)
    return {"params": count_params(model, shape), "gmacs": count_macs(model, shape) / 1e9}


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
    seed: int = 0,
) -> dict[str, Any]:
    """Trains (or reuses) the teacher, then the student alone and distilled; returns each
    one's size and test metrics. Steps ``None``: the demo config's own for the teacher,
    :data:`STUDENT_STEPS_FACTOR` times that for the students. Both students train
    on the first ``train_fraction`` of the training clips with mixup at ``mixup_alpha`` (the
    teacher sees the same mixed clips), from initialisation and batch-order ``seed``."""
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
    models = {"teacher": {**_size(teacher_config), **tested}}
    student = {f"model.{k}": str(v) for k, v in (TINY_STUDENT if tiny else STUDENT).items()}
    num_train = max(round(teacher_config.dataset.num_train * train_fraction), 1)
    student.update({"dataset.num_train": str(num_train), "input.mixup_alpha": str(mixup_alpha),
                    "seed": str(seed)})  # fmt: skip
    demo_steps = vjax_recipe(f"demo.py:{variant}", {}).train.num_steps
    student["train.num_steps"] = str(student_steps or STUDENT_STEPS_FACTOR * demo_steps)
    distill = {
        "train.distill.teacher": teacher_dir,
        "train.distill.temperature": str(temperature),
        "train.distill.alpha": str(alpha),
    }
    for name, extra in (("alone", {}), ("distilled", distill)):
        config = vjax_recipe(f"demo.py:{variant}", {**common, **student, **extra})
        models[name] = {
            **_size(config),
            **train_and_test(config, os.path.join(workdir, name)),
            "steps": config.train.num_steps,
        }
    student_model = {k: config.model[k] for k in ("hidden_size", "num_layers")}
    models["teacher"]["steps"] = tested["step"]  # a given teacher's own, not the recipe's
    return {
        "models": models,
        "num_classes": teacher_config.dataset.num_classes,
        "temperature": temperature,
        "alpha": alpha,
        "student_model": student_model,
        "num_train": (num_train, teacher_config.dataset.num_train),
        "mixup_alpha": mixup_alpha,
        "seed": seed,
    }


def table(result: dict[str, Any], total_seconds: float, command: str) -> str:
    """The Markdown section: the setting, one row per model, the gain and the teacher gap."""
    models = result["models"]
    teacher, alone, distilled = models["teacher"], models["alone"], models["distilled"]
    student = result["student_model"]
    gain = 100 * (distilled["top1"] - alone["top1"])
    gap = 100 * (teacher["top1"] - distilled["top1"])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    used, total = result["num_train"]
    mixup = result["mixup_alpha"]
    mixed = f", mixup alpha {mixup} on every batch (the teacher scores the same mixed clips)"
    lines = [
        f"vjax_motion, {result['num_classes']} classes; test split ({alone['num_examples']} "
        f"clips). Student: the teacher's ViViT at width {student['hidden_size']} with "
        f"{student['num_layers']} layers, {teacher['gmacs'] / alone['gmacs']:.1f}x fewer "
        f"GFLOPs than the teacher; distilled with temperature {result['temperature']}, alpha "
        f"{result['alpha']}. Both students: the same config apart from the teacher, {used} of "
        f"the {total} training clips (the teacher trained on all){mixed if mixup else ''}, "
        f"seed {result['seed']}. "
        f"CPU: {platform.machine()}, {os.cpu_count()} cores, load average "
        f"{load:.1f} at the end (a shared machine: wall times include other jobs' load). "
        f"Total {total_seconds / 60:.1f} min. Command: `{command}`",
        "",
        "| model | params | GFLOPs | steps | test top-1 (95% CI) | train s |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("teacher", "alone", "distilled"):
        m = models[name]
        label = {"teacher": "teacher (demo ViViT)", "alone": "student alone"}.get(name, name)
        lines.append(
            f"| {label} | {m['params']:,} | {m['gmacs']:.4f} | {m['steps']} | "
            f"{top1_with_interval(m)} | {m['seconds']:.0f} |"
        )
    lines += [
        "",
        f"Distilled vs alone: {gain:+.1f} points of top-1 "
        f"({paired_top1_words(alone, distilled, ('alone', 'distilled'))}); {gap:.1f} points "
        f"below the teacher (target: +3 points, or within 1 point of the teacher).",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = training_parser("distill", __doc__)
    parser.add_argument("--teacher", default="", help="a trained demo ViViT workdir to reuse")
    parser.add_argument("--teacher_steps", type=int, default=0, help="0: the demo's own")
    parser.add_argument(
        "--student_steps", type=int, default=0, help="0: twice the demo's own (1600)"
    )
    parser.add_argument(
        "--temperature", type=number_in(0, math.inf, low_open=True, high_open=True), default=1.0
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
    parser.add_argument("--seed", type=int, default=0, help="both students' config.seed")
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
        args.seed,
    )
    seconds = time.perf_counter() - start
    return publish("distill", argv, lambda command: table(result, seconds, command), args.out)
