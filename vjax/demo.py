"""The demo job: train ViViT and the single-frame baseline the same way, test both, report.

Writes into the workdir: one sub-folder per model (checkpoints, metrics, TensorBoard),
``training_curves.png``, ``confusion_<model>.png`` and ``demo_report.json``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping

from vjax.config_utils import apply_overrides, load_config
from vjax.report import format_eval, plot_confusion, plot_curves

DEMO_MODELS = ("vivit", "single_frame")


def run_demo(
    workdir: str, config_path: str = "configs/demo.py", overrides: Mapping[str, str] | None = None
) -> dict:
    """Trains and tests each demo model; returns (and writes) the report.

    ``config_path`` may carry extra variants after a colon (e.g. ``configs/demo.py:tiny``),
    which are combined with each model's name.
    """
    from vjax import train

    path, _, extra = config_path.partition(":")
    configs = {}
    for name in DEMO_MODELS:  # every config checked before anything is written
        configs[name] = load_config(f"{path}:{','.join(filter(None, [name, extra]))}")
        apply_overrides(configs[name], overrides or {})
    os.makedirs(workdir, exist_ok=True)
    report: dict = {"models": {}}
    runs = {}
    for name, config in configs.items():
        run_dir = os.path.join(workdir, name)
        print(f"\n=== {name}: training {config.train.num_steps} steps -> {run_dir}", flush=True)
        start = time.perf_counter()
        train.train(config, run_dir)
        result = train.evaluate_checkpoint(config, run_dir, "test")
        print(format_eval(result), flush=True)
        plot_confusion(
            result["confusion_matrix"],
            result["class_names"],
            f"{name}: test top-1 {result['top1']:.3f}",
            os.path.join(workdir, f"confusion_{name}.png"),
        )
        runs[name] = run_dir
        report["num_classes"] = len(result["class_names"])
        report["models"][name] = {
            "top1": result["top1"],
            "top5": result["top5"],
            "loss": result["loss"],
            "mean_class_accuracy": result["mean_class_accuracy"],
            "num_test_clips": result["num_examples"],
            "steps": result["step"],
            "seconds": round(time.perf_counter() - start, 1),
        }
    report["chance"] = 1.0 / report["num_classes"]
    plot_curves(runs, os.path.join(workdir, "training_curves.png"))
    with open(os.path.join(workdir, "demo_report.json"), "w") as f:
        json.dump(report, f, indent=1)

    print("\n=== demo result (test split)")
    print(f"{'model':<14}{'top-1':>8}{'top-5':>8}   chance = {report['chance']:.3f}")
    for name, m in report["models"].items():
        print(f"{name:<14}{m['top1']:>8.3f}{m['top5']:>8.3f}")
    print(f"report: {os.path.join(workdir, 'demo_report.json')}; plots: {workdir}/*.png")
    return report
