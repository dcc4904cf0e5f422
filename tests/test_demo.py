"""The demo job on the tiny config: both models train, test, and the report and plots appear."""

import json
import os
import subprocess
import sys

from conftest import DEMO_CONFIG, REPO

from vjax.demo import run_demo


def test_demo_writes_report_and_plots(tmp_path, data_dir, capsys):
    workdir = str(tmp_path)
    report = run_demo(workdir, f"{DEMO_CONFIG}:tiny", {"dataset.data_dir": data_dir})
    saved = json.load(open(os.path.join(workdir, "demo_report.json")))
    assert saved == json.loads(json.dumps(report))
    assert saved["num_classes"] == 4 and saved["chance"] == 0.25
    assert set(saved["models"]) == {"vivit", "single_frame"}
    printed = capsys.readouterr().out
    assert "macro avg" in printed and "F1" in printed.split("=== demo result")[1]
    right = {}
    for name, metrics in saved["models"].items():
        assert 0.0 <= metrics["top1"] <= metrics["top5"] <= 1.0
        assert metrics["num_test_clips"] == 16
        result = json.load(
            open(os.path.join(workdir, name, f"eval_test_step{metrics['steps']}.json"))
        )
        assert metrics["macro_f1"] == result["macro"]["f1"] and metrics["ece"] == result["ece"]
        assert metrics["top1_ci95"] == result["top1_ci95"]
        lo, hi = metrics["top1_ci95"]
        assert f"{name:<14}{metrics['top1']:>8.3f}{f'{lo:.3f}-{hi:.3f}':>13}" in printed
        videos = result["per_video"]
        right[name] = [p == t for p, t in zip(videos["predicted"], videos["label"], strict=True)]
    # ViViT against the baseline on the same clips: the counts of clips only one got right.
    paired = saved["paired_with_vivit"]["single_frame"]
    only = [sum(a and not b for a, b in zip(right[x], right[y], strict=True)) for x, y in
            (("vivit", "single_frame"), ("single_frame", "vivit"))]  # fmt: skip
    assert (paired["videos"], paired["only_b"], paired["only_a"]) == (16, *only)
    assert (f"vivit vs single_frame on the same 16 test clips: only vivit right on {only[0]}, "
            f"only single_frame on {only[1]}; McNemar exact p = ") in printed  # fmt: skip
    plots = ["training_curves.png"] + [
        f"{kind}_{name}.png"
        for kind in ("confusion", "f1", "reliability")
        for name in ("vivit", "single_frame")
    ]
    for name in plots:
        with open(os.path.join(workdir, name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_vjax_command_verbs(tmp_path):
    help_text = subprocess.run(
        [sys.executable, "-m", "vjax.cli", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "vjax train" in help_text and "verbs: train, eval, probe, demo" in help_text
    assert "vjax probe  --config=" in help_text
    assert "vjax compare RUN_A RUN_B" in help_text
    bad = subprocess.run(
        [sys.executable, "-m", "vjax.cli", "fly"], cwd=REPO, capture_output=True, text=True
    )
    assert bad.returncode == 2
    wrong_key = subprocess.run(
        [
            sys.executable,
            "-m",
            "vjax.cli",
            "train",
            f"--config={DEMO_CONFIG}:tiny",
            f"--workdir={tmp_path}",
            "--config.optimizer.learning_rate=1e-3",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert wrong_key.returncode == 2
    assert "optimizer.learning_rate" in wrong_key.stderr


def test_audio_visual_demo_trains_mbt_and_both_single_modality_baselines(tmp_path, data_dir):
    """``vjax demo --audio_visual`` on the tiny av config: the three models of one MBT, each
    trained and tested on vjax_av_motion, in one report with their plots."""
    from vjax.main import run

    workdir = str(tmp_path / "av")
    assert run(["--workdir", workdir, f"--config={DEMO_CONFIG}:tiny", "--audio_visual",
                f"--config.dataset.data_dir={data_dir}"], mode="demo") == 0  # fmt: skip
    saved = json.load(open(os.path.join(workdir, "demo_report.json")))
    assert set(saved["models"]) == {"mbt", "frames_only", "sound_only"}
    assert saved["num_classes"] == 6
    for name, metrics in saved["models"].items():
        assert 0.0 <= metrics["top1"] <= metrics["top5"] <= 1.0 and metrics["num_test_clips"] > 0
        config = json.load(open(os.path.join(workdir, name, "config.json")))
        assert config["model"]["name"] == "mbt"
        assert os.path.exists(os.path.join(workdir, f"confusion_{name}.png"))
    modalities = {name: json.load(open(os.path.join(workdir, name, "config.json")))["model"].get(
        "modalities") for name in saved["models"]}  # fmt: skip
    assert modalities["frames_only"] == ["video"] and modalities["sound_only"] == ["audio"]
