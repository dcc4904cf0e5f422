"""``vjax bench data --tiny``: the table's structure and the BENCHMARKS.md section update;
the training benchmarks' run folders."""

import re

import numpy as np
import pytest

from vjax.bench import update_benchmarks
from vjax.cli import main
from vjax.errors import UserError

ROWS = [
    r"pipeline frames/s per core \(20x20 train clips\)",
    r"plain PyAV decoded frames/s per core \(seek, decode, clip to rgb24\)",
    r"plain PyAV clip frames/s per core \(one clip per file\)",
    r"ratio pipeline / PyAV, clip frames",
    r"ratio pipeline / PyAV, decoded frames",
    r"clips/s, 1 worker",
    r"clips/s, 2 workers",
    r"scaling 2 vs 1 workers",
    r"prepare \(decode \+ JPEG\) videos/s, all workers",
]


def test_bench_data_tiny_prints_and_records_the_table(tmp_path, capsys):
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\n## models\n\nkeep me\n\n## vjax bench data\n\nold table\n")
    assert main(["bench", "data", "--tiny", "--crop=20", f"--out={out}"]) == 0  # flag wins
    printed = capsys.readouterr().out
    for row in ROWS:
        assert re.search(rf"^\| {row} +\| [0-9.]+x? \|$", printed, re.M), row
    text = out.read_text()
    assert "keep me" in text and "old table" not in text
    assert (
        text.count("## vjax bench data") == 1 and text.count("| ratio pipeline / PyAV, clip") == 1
    )
    update_benchmarks(str(out), "vjax bench data", "new body")
    update_benchmarks(str(out), "other", "x")
    text = out.read_text()
    assert text.count("## vjax bench data") == 1 and "new body" in text and "keep me" in text
    assert text.index("## models") < text.index("## vjax bench data") < text.index("## other")
    assert main(["bench", "nothing"]) == 2


def test_the_pyav_baseline_seeks_to_the_clip_and_reads_its_frames(tmp_path):
    """The baseline reads a clip as PyTorch loaders do: from the keyframe before it (not the
    file's start: that made PyAV look slower than it is), the same frames as a full decode."""
    import av

    from vjax.bench_data import _synthetic_frames, pyav_clip
    from vjax.data.video_io import encode_video

    frames = _synthetic_frames(np.random.default_rng(0), 60, 32, 48)
    path = encode_video(str(tmp_path / "v.mp4"), frames, 25, options={"g": "10"})  # keyframes
    with av.open(path) as container:
        every = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(path) as container:
        clip, decoded = pyav_clip(container, 33, 4, 3)  # frames 33, 36, 39, 42
    np.testing.assert_array_equal(np.stack(clip), np.stack(every[33:43:3]))
    assert decoded == 43 - 30  # from the keyframe at 30 to the clip's last frame, 42


def test_a_bench_run_folder_is_resumed_only_by_its_own_settings(tmp_path, capsys, monkeypatch):
    """Re-running ``vjax bench ssl`` (or distill, prune) with other settings in the same
    workdir used to skip training ("already at step N") and report the old model under the
    new settings: a run folder whose config.json differs is refused, naming the keys. The
    same settings resume, a relative data_dir included (training records it absolute)."""
    from vjax.bench import check_same_run, vjax_recipe
    from vjax.config_utils import config_to_json, with_absolute_paths

    monkeypatch.chdir(tmp_path)
    config = vjax_recipe(
        "videomae.py:pretrain_motion,tiny", {"train.num_steps": "2", "dataset.data_dir": "tfds"}
    )
    check_same_run(config, str(tmp_path / "new"))  # nothing there yet: a fresh run
    (tmp_path / "config.json").write_text(config_to_json(with_absolute_paths(config)))
    check_same_run(config, str(tmp_path))  # the same settings: resume (an interrupted run)
    config.train.num_steps = 4
    config.model.mask_ratio = 0.5
    with pytest.raises(UserError, match=r"holds a run of other settings \(model.mask_ratio=0.75 "
                       r"there, 0.5 now; train.num_steps=2 there, 4 now\)"):  # fmt: skip
        check_same_run(config, str(tmp_path))
    workdir = tmp_path / "bench"
    (workdir / "pretrain_seed0").mkdir(parents=True)
    (workdir / "pretrain_seed0" / "config.json").write_text(config_to_json(config))
    argv = ["bench", "ssl", "--tiny", "--pretrain_steps=2", f"--workdir={workdir}", "--out="]
    assert main(argv) == 2
    assert "pretrain_seed0 holds a run of other settings" in capsys.readouterr().err


def test_generated_sources_have_the_keyframe_interval_asked_for(tmp_path):
    """``--keyframe_interval`` sets how often the generated files have a keyframe, which is
    what the PyAV baseline's seek can skip to (libx264's default: one per 250 frames)."""
    import av

    from vjax.bench_data import make_sources

    def keyframes(folder):
        with av.open(str(folder / "bench" / "0.mp4")) as container:
            return [i for i, f in enumerate(container.decode(video=0)) if f.key_frame]

    make_sources(str(tmp_path / "every7"), 1, 3.0, 10, (32, 48), keyframe_interval=7)
    make_sources(str(tmp_path / "default"), 1, 3.0, 10, (32, 48))
    assert keyframes(tmp_path / "every7") == list(range(0, 30, 7))
    assert keyframes(tmp_path / "default") == [0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["distill", "--alpha=2"], "argument --alpha: takes a number in [0, 1], got '2'"),
        (["distill", "--temperature=0"], "--temperature: takes a number in (0, inf), got '0'"),
        (["distill", "--train_fraction=1.5"], "--train_fraction: takes a number in (0, 1]"),
        (["ssl", "--label_fraction=0"], "--label_fraction: takes a number in (0, 1], got '0'"),
        (["ssl", "--seeds=0"], "argument --seeds: takes a whole number of 1 or more, got '0'"),
        (["distill", "--seeds=-1"], "argument --seeds: takes a whole number of 1 or more"),
        (["prune", "--ratio=1"], "argument --ratio: takes a number in [0, 1), got '1'"),
        (["data", "--clips=0"], "argument --clips: takes a whole number of 1 or more"),
        (["data", "--keyframe_interval=0"], "--keyframe_interval: takes a whole number of 1 or"),
        (["data", "--workers=1,-5"], "--workers takes loader process counts of 1 or more"),
    ],
)
def test_a_bench_flag_out_of_range_is_refused_before_anything_trains(argv, message, capsys):
    """Out-of-range weights, temperatures and shares were refused only after the teacher or
    base model had trained (minutes), or silently clamped (a share of 0 became one clip); a
    negative worker count was a traceback."""
    assert main(["bench", *argv, "--out="]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1, err  # one line, not the usage
