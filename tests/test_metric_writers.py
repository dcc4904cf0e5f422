"""TensorBoard event files written without TensorFlow: what ``tf.summary.scalar`` writes, read
back by TensorFlow's own reader, and a training process that never imports TensorFlow."""

import glob
import os
import subprocess
import sys

import numpy as np
from conftest import DEMO_CONFIG, REPO, tiny_config

from vjax import train
from vjax.metric_writers import EventFile, read_metrics


def _scalars_by_step(folder: str) -> dict[int, dict[str, float]]:
    """Every scalar of the event files in ``folder`` by step, read by TensorFlow."""
    import tensorflow as tf

    scalars: dict[int, dict[str, float]] = {}
    for path in sorted(glob.glob(os.path.join(folder, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "scalars"
                scalars.setdefault(event.step, {})[value.tag] = float(tf.make_ndarray(value.tensor))
    return scalars


def _events(path: str) -> list:
    import tensorflow as tf

    return list(tf.compat.v1.train.summary_iterator(path))


def test_event_file_holds_what_tf_summary_scalar_writes(tmp_path):
    import tensorflow as tf

    logged = {3: {"loss": 0.5, "top1": 1 / 3}, 10: {"loss": float("nan"), "lr": 2e-4}}
    ours = EventFile(str(tmp_path / "ours"))
    for step, scalars in logged.items():
        ours.write_scalars(step, scalars)
    reference = tf.summary.create_file_writer(str(tmp_path / "tf"))
    for step, scalars in logged.items():
        with reference.as_default(step=step):
            for tag, value in scalars.items():
                tf.summary.scalar(tag, value)
    reference.close()

    ours_events = _events(ours.path)
    (tf_path,) = glob.glob(str(tmp_path / "tf" / "events.out.tfevents.*"))
    tf_events = _events(tf_path)
    assert ours_events[0].file_version == tf_events[0].file_version == "brain.Event:2"
    assert len(ours_events) == 1 + len(logged)  # the version record, one event per write
    for a, b in zip(
        [v for e in ours_events[1:] for v in e.summary.value],
        [v for e in tf_events[1:] for v in e.summary.value],
        strict=True,
    ):
        assert a.tag == b.tag and a.metadata == b.metadata
        assert a.tensor.dtype == b.tensor.dtype and a.tensor.tensor_shape == b.tensor.tensor_shape
        np.testing.assert_array_equal(tf.make_ndarray(a.tensor), tf.make_ndarray(b.tensor))
    assert [e.step for e in ours_events[1:]] == list(logged)


def test_a_training_process_writes_tensorboard_without_importing_tensorflow(data_dir, tmp_path):
    """``vjax train`` on a prepared dataset never loads TensorFlow (~4.5 s and ~500 MB a
    process), and its event files hold the scalars of ``metrics.jsonl``."""
    train.setup(tiny_config(data_dir))  # prepared here: preparing does need TensorFlow
    workdir = str(tmp_path / "run")
    code = (
        "import sys; from vjax import main; code = main.main(sys.argv[1:]); "
        "print('tensorflow imported:', 'tensorflow' in sys.modules); sys.exit(code)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, "--mode=train", f"--config={DEMO_CONFIG}:tiny",
         f"--workdir={workdir}", f"--config.dataset.data_dir={data_dir}",
         "--config.train.num_steps=4"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "tensorflow imported: False" in run.stdout

    for split in ("train", "validation"):
        logged = {
            r["step"]: {k: v for k, v in r.items() if k not in ("step", "split", "time")}
            for r in read_metrics(workdir)
            if r["split"] == split
        }
        in_tensorboard = _scalars_by_step(os.path.join(workdir, "tensorboard", split))
        assert logged and list(in_tensorboard) == list(logged)
        for step, scalars in logged.items():
            assert in_tensorboard[step].keys() == scalars.keys()
            np.testing.assert_allclose(
                [in_tensorboard[step][k] for k in scalars],
                np.float32([scalars[k] for k in scalars]),
                rtol=0,
            )


def test_a_line_cut_short_by_a_killed_writer_is_skipped(tmp_path):
    """A process killed while appending leaves half a line: the records before it still read
    (a resume reads them to know whether a validation is owed)."""
    from vjax.metric_writers import MetricWriter

    writer = MetricWriter(str(tmp_path))
    writer.write(2, "train", {"loss": 0.5})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "split": "valid')
    assert [(r["step"], r["loss"]) for r in read_metrics(str(tmp_path))] == [(2, 0.5)]
    # The resumed run's first record starts a line of its own (it was glued onto the half
    # line and skipped with it), locally and in a bucket (whose file is written whole).
    MetricWriter(str(tmp_path)).write(3, "validation", {"loss": 0.25})
    assert [(r["step"], r["loss"]) for r in read_metrics(str(tmp_path))] == [(2, 0.5), (3, 0.25)]


def test_a_bucket_metrics_file_cut_mid_line_gets_the_next_record_on_a_line_of_its_own(
    tmp_path, monkeypatch
):
    from etils import epath

    from vjax import storage

    monkeypatch.setattr(storage, "is_remote", lambda location: True)
    monkeypatch.setattr(storage, "path", lambda location, *parts: epath.Path(location, *parts))
    location = str(tmp_path / "metrics.jsonl")
    storage.append_line(location, "a\n")
    with open(location, "a") as f:
        f.write("half")
    storage.append_line(location, "b\n")
    assert (tmp_path / "metrics.jsonl").read_text() == "a\nhalf\nb\n"
