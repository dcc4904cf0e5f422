"""The README's journeys as a new user runs them, and a user's mistakes as one clear line.

A plain folder of class sub-folders (no train/validation/test) is prepared, split per class,
trained, evaluated and predicted on with the real commands; the README's Python snippet runs
as written; and each everyday mistake, run as the real command in its own process, exits with
code 2 and one line naming the problem and the fix, never a traceback, and writes nothing.
The mistakes' processes run side by side (each pays Python + JAX start-up, most stop before
TensorFlow is imported).
"""

import contextlib
import csv
import io
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import DEMO_CONFIG, REPO, env_with_host_devices
from test_train_videos import _video

from vjax.cli import main as vjax_main
from vjax.data.manifests import SPLIT_NAMES, VideoEntry, split_by_class
from vjax.data.video_io import encode_video
from vjax.errors import UserError

VIDEOS_CONFIG = os.path.join(REPO, "configs", "videos.py")
PER_CLASS = 5  # the default fractions (0.8, 0.1, 0.1) keep 3 / 1 / 1 of each class
# C++ log lines TensorFlow writes while it loads, outside Python's logging.
_TF_CPP_LINES = ("WARNING: All log messages before absl::InitializeLog()", "I0000 ", "To enable ")


def _command(args: list[str], cwd: str) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS`` (``vjax.cli`` is the ``vjax`` command) on one CPU device."""
    env = env_with_host_devices(1)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip


def _commands(argvs: dict[str, list[str]], cwd: str) -> dict[str, subprocess.CompletedProcess]:
    """The commands side by side (their start-up dominates), by name."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(_command, argv, cwd) for name, argv in argvs.items()}
        return {name: future.result() for name, future in futures.items()}


def _stderr_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [
        line for line in result.stderr.splitlines()
        if line.strip() and not line.startswith(_TF_CPP_LINES)
    ]  # fmt: skip


def _in_process(argv: list[str]) -> str:
    """Runs ``vjax ARGV`` in this process (the same entry point), returning its stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert vjax_main(argv) == 0, out.getvalue()[-3000:]
    return out.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A flat folder of two classes prepared with ``vjax prepare`` and trained with ``vjax
    train`` (``configs/videos.py:FOLDER,tiny``, a warmup longer than the run)."""
    root = tmp_path_factory.mktemp("journey")
    src, data_dir, workdir = root / "videos", root / "tfds", root / "run"
    for c, label in enumerate(("left", "right")):
        os.makedirs(src / label)
        for i in range(PER_CLASS):
            encode_video(str(src / label / f"{i}.mp4"), _video(10 * c + i, c == 1), 10.0)
    prepared = _in_process(
        ["prepare", "video_folder", f"--src={src}", f"--data_dir={data_dir}", "--fps=10",
         "--short_side=16", "--num_workers=1"]
    )  # fmt: skip
    config = [f"--config={VIDEOS_CONFIG}:{src},tiny", f"--config.dataset.data_dir={data_dir}"]
    here = os.getcwd()
    try:  # trained with the paths relative to its folder, as typed there
        os.chdir(root)
        trained_out = _in_process(
            ["train", f"--config={VIDEOS_CONFIG}:videos,tiny", "--config.dataset.data_dir=tfds",
             "--workdir=run", "--config.train.num_steps=3", "--config.train.eval_every=3",
             "--config.train.checkpoint_every=3", "--config.optimizer.warmup_steps=100"]
        )  # fmt: skip
    finally:
        os.chdir(here)
    # Elsewhere, no --config: evaluation takes the run's own (its videos, data_dir, input).
    evaluated = _in_process(["eval", f"--workdir={workdir}", "--split=test"])
    return {
        "root": root, "src": src, "data_dir": data_dir, "workdir": workdir, "config": config,
        "prepared": prepared, "trained": trained_out, "evaluated": evaluated,
    }  # fmt: skip


def test_flat_folder_is_split_per_class_then_trains(trained):
    assert "train: kept 6 of 6 (found 6)" in trained["prepared"]
    assert "validation: kept 2 of 2 (found 2)" in trained["prepared"]
    assert "test: kept 2 of 2 (found 2)" in trained["prepared"]
    assert "split per class by split_fractions=(0.8, 0.1, 0.1), split_seed=0" in trained["prepared"]
    data = trained["data_dir"] / "video_folder"
    (report_file,) = data.rglob("prepare_report.json")
    report = json.loads(report_file.read_text())
    assert list(report) == list(SPLIT_NAMES)
    per_class = {s: r["auto_split"]["listed_per_class"] for s, r in report.items()}
    assert per_class == {"train": {"left": 3, "right": 3}, "validation": {"left": 1, "right": 1},
                         "test": {"left": 1, "right": 1}}  # fmt: skip
    assert all(r["auto_split"]["fractions"] == [0.8, 0.1, 0.1] for r in report.values())

    out = trained["trained"]
    assert "Downloading and preparing" not in out  # `vjax prepare` already made this dataset
    assert (
        "Note: optimizer.warmup_steps (100) is not shorter than train.num_steps (3); warming "
        "up over 0 steps (10% of the run) instead" in out
    )
    assert "validation @ 3: loss" in out
    assert os.path.isdir(trained["workdir"] / "checkpoints" / "3")


def test_eval_then_predict_command_on_the_trained_folder(trained, commands):
    """``vjax eval --split=test`` (the multi-view test), then ``vjax predict`` on a clip as a
    process, whose stderr stays empty: Orbax's "Given directory is read only" warnings (a
    checkpoint merely read) do not reach the user."""
    assert "test @ step 3: 2 clips" in trained["evaluated"]
    evaluated = json.loads((trained["workdir"] / "eval_test_step3.json").read_text())
    assert evaluated["num_examples"] == 2 and evaluated["split"] == "test"
    # The table of videos: each named by its file under --src, whose folder is its class.
    table = trained["workdir"] / "eval_test_step3_videos.csv"
    assert str(table) in trained["evaluated"]  # in the "wrote ..." line
    rows = list(csv.DictReader(table.open()))
    assert [r["video"] for r in rows] == evaluated["videos"]
    assert [r["label"] for r in rows] == [v.split("/")[0] for v in evaluated["videos"]]
    assert sorted(r["label"] for r in rows) == ["left", "right"]
    names = evaluated["class_names"]
    assert [r["predicted"] for r in rows] == [names[i] for i in evaluated["per_video"]["predicted"]]
    assert [r["right"] for r in rows] == [str(int(r["label"] == r["predicted"])) for r in rows]
    assert all(0.5 <= float(r["confidence"]) <= 1 for r in rows)  # two classes: the larger

    result = commands["predict"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert _stderr_lines(result) == [], result.stderr[-3000:]
    predictions = json.loads((trained["root"] / "predictions.json").read_text())
    top = predictions["files"][str(trained["src"] / "right" / "0.mp4")]["top"]
    assert {t["label"] for t in top} == {"left", "right"}
    assert sum(t["score"] for t in top) == pytest.approx(1.0, abs=1e-5)


def test_a_flat_folder_split_without_validation_stops_before_training(trained, tmp_path, capsys):
    """Fractions that leave no validation video: one line naming the split, before any
    training (the workdir is not even made)."""
    argv = ["train", *trained["config"], f"--workdir={tmp_path / 'run'}",
            "--config.dataset.split_fractions=(1.0, 0.0, 0.0)"]  # fmt: skip
    assert vjax_main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("vjax train: error: split 'validation' is not in the dataset")
    assert "split by dataset.split_fractions" in lines[-1]
    assert not (tmp_path / "run").exists()


def test_train_without_config_goes_on_with_the_runs_own(trained, tmp_path):
    """What `vjax train` says when a run is done ("raise --config.train.num_steps to
    continue"), typed as said: no --config, so the run's own (its videos, tiny model), not the
    demo's, whose model would not fit the checkpoint."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained["workdir"], run)
    done = _in_process(["train", f"--workdir={run}"])
    assert f"{run} is already at step 3 of train.num_steps=3: nothing to train; raise " in done
    assert "warmup" not in done  # the run's warmup of 100 steps: noted only when it trains
    out = _in_process(["train", f"--workdir={run}", "--config.train.num_steps=4"])
    assert f"Restored checkpoint at step 3 from {run}" in out and "step 4/4" in out
    assert "warming up over 0 steps" in out
    assert sorted(os.listdir(run / "checkpoints")) == ["3", "4"]


def test_readme_python_snippet_runs_as_written(trained):
    readme = open(os.path.join(REPO, "README.md")).read()
    snippet = re.search(r"In Python:\n\n```python\n(.*?)```", readme, re.S).group(1)
    assert '"runs/demo/vivit"' in snippet
    namespace: dict = {}
    code = snippet.replace('"runs/demo/vivit"', repr(str(trained["workdir"])))
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    model, logits = namespace["model"], namespace["logits"]
    assert logits.shape == (2, 2) and printed.getvalue().strip().startswith("['")
    np.testing.assert_allclose(namespace["same"], logits, rtol=1e-6, atol=1e-6)

    # On real clips, against the normalisation written out here: training's mean and std.
    config, module, variables = model
    video = np.random.default_rng(0).integers(0, 256, (2, *model.clip_shape), dtype=np.uint8)
    mean, std = np.asarray(config.input.mean), np.asarray(config.input.std)
    expected = module.apply(variables, ((video / 255 - mean) / std).astype(np.float32),
                            train=False)  # fmt: skip
    np.testing.assert_allclose(model(video), expected, rtol=1e-5, atol=1e-5)
    assert model.class_names == ["left", "right"] and model.clip_shape == (4, 16, 16, 3)
    with pytest.raises(UserError, match="takes uint8 frames"):
        model(video.astype(np.float32))  # floats would be silently mis-normalised


# Every mistake: (argv, prog, the start of the one line after "PROG: error: ").
def _mistakes(root, trained) -> dict[str, tuple[list[str], str, str]]:
    never = root / "never"  # nothing may appear here: data dir, workdirs, outputs
    empty_workdir, config_only = root / "empty_run", root / "config_only"
    tiny = [f"--config={DEMO_CONFIG}:tiny", f"--workdir={never / 'run'}",
            f"--config.dataset.data_dir={never / 'tfds'}"]  # fmt: skip
    clip = str(trained["src"] / "left" / "0.mp4")
    videos = [*trained["config"], f"--workdir={trained['workdir']}"]
    return {
        "heads_do_not_divide": (
            ["vjax.cli", "train", *tiny, "--config.model.hidden_size=33"], "vjax train",
            "config.model: hidden_size 33 is not divisible by num_heads 2; make "
            "model.hidden_size a multiple of model.num_heads"),
        "unknown_model": (
            ["vjax.cli", "train", *tiny, "--config.model.name=vivt"], "vjax train",
            "config.model: unknown model 'vivt'; did you mean vivit?"),
        "unknown_demo_variant": (
            ["vjax.cli", "train", f"--config={DEMO_CONFIG}:vivitt", f"--workdir={never}"],
            "vjax train", f"--config={DEMO_CONFIG}:vivitt: unknown demo variant(s) ['vivitt']"),
        "frames_not_divisible_into_tubelets": (
            ["vjax.cli", "train", *tiny, "--config.dataset.num_frames=5"], "vjax train",
            "config.model: frames (5) is not divisible by the tubelet size along it (2)"),
        "mesh_needs_more_devices": (
            ["vjax.cli", "train", *tiny, "--config.sharding.mesh=(('data', 8),)"], "vjax train",
            "config.sharding.mesh: mesh {'data': 8} needs 8 devices, but 1 are available; set "
            "--config.sharding.mesh for the 1 device(s) here"),
        "eval_unknown_split": (
            ["vjax.cli", "eval", *videos, "--split=val"], "vjax eval",
            "split 'val' is not in the dataset prepared in"),
        "eval_missing_workdir": (
            ["vjax.cli", "eval", *tiny], "vjax eval",
            f"no checkpoint to evaluate in '{never / 'run'}'; train first"),
        "eval_workdir_without_checkpoints": (
            ["vjax.cli", "eval", *tiny[:1], f"--workdir={empty_workdir}", *tiny[2:]],
            "vjax eval", f"no checkpoint to evaluate in '{empty_workdir}'; train first"),
        "predict_missing_model": (
            ["vjax.cli", "predict", f"--model={never / 'model'}", clip], "vjax predict",
            f"'{never / 'model'}' does not exist; give a training workdir"),
        "predict_folder_with_only_config": (
            ["vjax.cli", "predict", f"--model={config_only}", clip], "vjax predict",
            f"'{config_only}' holds no checkpoint; give a training workdir"),
        "convert_a_text_file": (
            ["vjax.cli", "convert", "--from=torchvision", f"--src={root / 'notes.txt'}",
             f"--out={never / 'converted'}"], "vjax convert",
            f"{root / 'notes.txt'} is not a readable torch.save checkpoint"),
        "demo_fusion_layer_past_the_layers": (
            ["vjax.cli", "demo", "--audio_visual", *tiny, "--config.model.fusion_layer=9"],
            "vjax demo", "config.model: model.fusion_layer (9) must be in 0..num_layers (2)"),
        "verb_typo": (["vjax.cli", "trian"], "vjax", "unknown verb 'trian'; did you mean train?"),
        "python_m_vjax_main": (
            ["vjax.main", "--mode=train", *tiny, "--config.train.num_stepz=3"], "vjax",
            "unknown config key 'train.num_stepz'; did you mean train.num_steps"),
    }  # fmt: skip


@pytest.fixture(scope="module")
def commands(trained, tmp_path_factory):
    """Every command this file runs as a process, run once, side by side, by name: the
    mistakes, ``--debug``, ``vjax train --help`` and the journey's ``vjax predict``."""
    root = tmp_path_factory.mktemp("commands")
    os.makedirs(root / "empty_run"), os.makedirs(root / "config_only")
    (root / "config_only" / "config.json").write_text("{}")
    (root / "notes.txt").write_text("not a checkpoint\n")
    mistakes = _mistakes(root, trained)
    assert list(mistakes) == MISTAKES
    argvs = {name: argv for name, (argv, _, _) in mistakes.items()}
    argvs["debug"] = ["vjax.cli", "--debug", "train", f"--config={DEMO_CONFIG}:vivitt",
                      f"--workdir={root / 'never'}"]  # fmt: skip
    argvs["help"] = ["vjax.cli", "train", "--help"]
    argvs["predict"] = ["vjax.cli", "predict", f"--model={trained['workdir']}",
                        str(trained["src"] / "right" / "0.mp4"),
                        f"--json={trained['root'] / 'predictions.json'}"]  # fmt: skip
    results = _commands(argvs, str(root))
    results["root"] = root
    return results


MISTAKES = [
    "heads_do_not_divide",
    "unknown_model",
    "unknown_demo_variant",
    "frames_not_divisible_into_tubelets",
    "mesh_needs_more_devices",
    "eval_unknown_split",
    "eval_missing_workdir",
    "eval_workdir_without_checkpoints",
    "predict_missing_model",
    "predict_folder_with_only_config",
    "convert_a_text_file",
    "demo_fusion_layer_past_the_layers",
    "verb_typo",
    "python_m_vjax_main",
]


@pytest.mark.parametrize("name", MISTAKES)
def test_a_mistake_is_one_line_and_exit_code_2(commands, trained, name):
    root = commands["root"]
    _, prog, text = _mistakes(root, trained)[name]
    result = commands[name]
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = _stderr_lines(result)  # also: no TFDS "Using custom data configuration" line
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: {text}"), result.stderr
    assert not (root / "never").exists(), sorted(map(str, (root / "never").rglob("*")))


def test_debug_shows_the_traceback_and_help_the_verb(commands):
    debug, help_ = commands["debug"], commands["help"]
    assert debug.returncode == 2 and "Traceback (most recent call last)" in debug.stderr
    assert (
        debug.stderr.strip()
        .splitlines()[-1]
        .startswith(f"vjax train: error: --config={DEMO_CONFIG}:vivitt: unknown demo variant(s)")
    )
    assert help_.returncode == 0 and help_.stdout.startswith("usage: vjax train ")
    assert "--mode" not in help_.stdout and "--split" not in help_.stdout
    assert "--config.KEY=VALUE" in help_.stdout and "--debug" in help_.stdout


def _entries(root: str, counts: dict[str, int]) -> list[VideoEntry]:
    return [
        VideoEntry(f"{root}/{label}/{i:02d}.mp4", label)
        for label, count in counts.items()
        for i in range(count)
    ]


def test_split_by_class_is_seeded_per_class_and_independent_of_the_folder():
    counts = {"a": 20, "b": 10, "c": 3, "d": 2}
    split = split_by_class(_entries("/x", counts), (0.8, 0.1, 0.1), seed=0)
    tally = {(e.label, e.split): 0 for e in split}
    for e in split:
        tally[e.label, e.split] += 1
    assert tally == {
        ("a", "train"): 16, ("a", "validation"): 2, ("a", "test"): 2,
        ("b", "train"): 8, ("b", "validation"): 1, ("b", "test"): 1,
        ("c", "train"): 1, ("c", "validation"): 1, ("c", "test"): 1,
        ("d", "train"): 2,  # too few for every split: all train
    }  # fmt: skip
    assert [e.split for e in split] == sorted((e.split for e in split), key=SPLIT_NAMES.index)
    train = [e.path for e in split if e.split == "train"]
    assert train == sorted(train)  # listing order within a split
    assignment = {os.path.basename(e.path) + e.label: e.split for e in split}
    moved = split_by_class(_entries("/elsewhere", counts), (0.8, 0.1, 0.1), seed=0)
    assert {os.path.basename(e.path) + e.label: e.split for e in moved} == assignment
    reseeded = split_by_class(_entries("/x", counts), (0.8, 0.1, 0.1), seed=1)
    assert {os.path.basename(e.path) + e.label: e.split for e in reseeded} != assignment
    no_test = split_by_class(_entries("/x", counts), (0.5, 0.5, 0.0), seed=0)
    assert {e.split for e in no_test} == {"train", "validation"}
    for bad in ((0.8, 0.1), (0.0, 0.5, 0.5), (0.8, 0.3, 0.1), (1.2, -0.1, -0.1)):
        with pytest.raises(UserError, match="split_fractions must be"):
            split_by_class(_entries("/x", counts), bad, seed=0)
