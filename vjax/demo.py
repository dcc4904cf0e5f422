"""The demo job: train ViViT and the single-frame baseline the same way, test both, report.
With ``audio_visual`` (``vjax demo --audio_visual``): MBT on frames and sound beside the same
model on the frames only and on the sound only, on ``vjax_av_motion`` (``configs/demo.py:av``).

Writes into the workdir: one sub-folder per model (checkpoints, metrics, TensorBoard, its
``eval_test_stepN.json``), ``training_curves.png``, per model ``confusion_<model>.png``
(normalised), ``f1_<model>.png`` (per-class F1, sorted) and ``reliability_<model>.png``, and
``demo_report.json``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping

from vjax.config_utils import ConfigError, apply_overrides, config_file, load_config
from vjax.errors import one_line
from vjax.evaluate.plots import plot_curves, write_plots
from vjax.evaluate.report import format_eval, write_eval
from vjax.evaluate.uncertainty import paired_top1

# Each demo's models: report name -> the config variant that trains it.
DEMO_MODELS = {"vivit": "vivit", "single_frame": "single_frame"}
AUDIO_VISUAL_MODELS = {"mbt": "av", "frames_only": "av,video_only", "sound_only": "av,audio_only"}


def run_demo(
    workdir: str,
    config_path: str = "configs/demo.py",
    overrides: Mapping[str, str] | None = None,
    audio_visual: bool = False,
) -> dict:
    """Trains and tests each demo model; returns (and writes) the report.

    ``config_path`` may carry extra variants after a colon (e.g. ``configs/demo.py:tiny``),
    which are combined with each model's variant.

    >>> report = run_demo("runs/av_demo", audio_visual=True)
    >>> report["models"]["mbt"]["top1"], report["models"]["sound_only"]["top1"]
    """
    from vjax import train
    from vjax.preflight import check_config

    train.check_workdir(workdir)  # a file, a read-only folder: one line before any work
    path, _, extra = config_path.partition(":")
    if extra:  # a mistake in it named as typed, not in the spec each model's is joined into
        load_config(config_path)
    models = AUDIO_VISUAL_MODELS if audio_visual else DEMO_MODELS
    configs = {}
    config_file(path)  # a mistyped file is named as such, not as a lacking variant
    for name, variant in models.items():  # every config checked before anything is written
        try:
            load_config(f"{path}:{variant}")
        except ConfigError as e:
            raise ConfigError(
                f"vjax demo trains configs/demo.py's variant {variant!r} (--config only adds "
                f"variants to it, e.g. configs/demo.py:tiny), which {path} lacks: "
                f"{one_line(e)}. For another recipe use vjax train"
            ) from e
        configs[name] = load_config(f"{path}:{','.join(filter(None, [variant, extra]))}")
        apply_overrides(configs[name], overrides or {})
        check_config(configs[name])  # the model, mesh and input, as training will check them
    os.makedirs(workdir, exist_ok=True)
    report: dict = {"models": {}}
    runs, results = {}, {}
    for name, config in configs.items():
        run_dir = os.path.join(workdir, name)
        print(f"\n=== {name}: training {config.train.num_steps} steps -> {run_dir}", flush=True)
        start = time.perf_counter()
        train.train(config, run_dir)
        result = train.evaluate_checkpoint(config, run_dir, "test")
        print(format_eval(result), flush=True)
        write_eval(result, run_dir, plots=False)
        write_plots({**result, "split": name}, workdir, f"_{name}")
        runs[name] = run_dir
        report["num_classes"] = len(result["class_names"])
        results[name] = result
        report["models"][name] = {
            "top1": result["top1"],
            "top1_ci95": list(result["top1_ci95"]),
            "top5": result["top5"],
            "loss": result["loss"],
            "mean_class_accuracy": result["mean_class_accuracy"],
            "macro_precision": result["macro"]["precision"],
            "macro_recall": result["macro"]["recall"],
            "macro_f1": result["macro"]["f1"],
            "ece": result["ece"],
            "num_test_clips": result["num_examples"],
            "steps": result["step"],
            "seconds": round(time.perf_counter() - start, 1),
        }
    report["chance"] = 1.0 / report["num_classes"]
    first, *others = results
    report["paired_with_" + first] = {  # the first model against each baseline, video by video
        name: paired_top1(results[name]["per_video"], results[first]["per_video"])
        for name in others
    }
    plot_curves(runs, os.path.join(workdir, "training_curves.png"))
    with open(os.path.join(workdir, "demo_report.json"), "w") as f:
        json.dump(report, f, indent=1)

    print("\n=== demo result (test split; P/R/F1: macro averages over the classes)")
    columns = ("top-5", "P", "R", "F1", "ECE")
    print(f"{'model':<14}{'top-1':>8}{'95% CI':>13}" + "".join(f"{c:>8}" for c in columns)
          + f"   chance = {report['chance']:.3f}")  # fmt: skip
    for name, m in report["models"].items():
        values = ("top5", "macro_precision", "macro_recall", "macro_f1", "ece")
        interval = "{:.3f}-{:.3f}".format(*m["top1_ci95"])
        print(f"{name:<14}{m['top1']:>8.3f}{interval:>13}"
              + "".join(f"{m[v]:>8.3f}" for v in values))  # fmt: skip
    for name, paired in report["paired_with_" + first].items():
        if paired is None:
            print(f"{first} vs {name}: not scored on the same test clips, no paired test")
            continue
        print(f"{first} vs {name} on the same {paired['videos']} test clips: only {first} right "
              f"on {paired['only_b']}, only {name} on {paired['only_a']}; McNemar exact p = "
              f"{paired['p_value']:.3g}")  # fmt: skip
    print(f"report: {os.path.join(workdir, 'demo_report.json')}; plots: {workdir}/*.png")
    return report
