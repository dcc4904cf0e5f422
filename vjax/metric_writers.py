"""Metrics to TensorBoard event files and a JSON-lines file, plus a one-line progress report.

Only process 0 writes; the others get a writer that drops everything.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import socket
import time
from collections.abc import Mapping
from typing import Any

from vjax import storage


class MetricWriter:
    """Writes scalars to ``<workdir>/metrics.jsonl`` and ``<workdir>/tensorboard/<split>``.

    >>> writer = MetricWriter("/tmp/run")
    >>> writer.write(100, "train", {"loss": 0.7})
    """

    def __init__(self, workdir: str, enabled: bool = True):
        self.workdir = workdir
        self.enabled = enabled
        self._event_files: dict[str, EventFile] = {}
        if enabled:
            storage.path(workdir).mkdir(parents=True, exist_ok=True)

    def write(self, step: int, split: str, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        record = {
            "step": int(step),
            "split": split,
            "time": time.time(),
            **{k: json_number(float(v)) for k, v in scalars.items()},
        }
        storage.append_line(os.path.join(self.workdir, "metrics.jsonl"), json.dumps(record) + "\n")
        if split not in self._event_files:
            folder = os.path.join(self.workdir, "tensorboard", split)
            self._event_files[split] = EventFile(folder)
        self._event_files[split].write_scalars(step, scalars)


class EventFile:
    """One TensorBoard event file, written as ``tf.summary.scalar`` writes one (TFRecord
    framing of ``Event`` protos, each scalar a float32 tensor for the scalars plugin) but
    without TensorFlow, whose import cost a tiny training run ~4.5 s and ~500 MB
    (BENCHMARKS.md). Each write is appended at once (:func:`vjax.storage.append`), so a
    killed run keeps every scalar logged before, in a bucket too.

    >>> EventFile("/tmp/run/tensorboard/train").write_scalars(100, {"loss": 0.7})
    """

    def __init__(self, folder: str):
        from tensorboard.compat.proto import event_pb2

        storage.path(folder).mkdir(parents=True, exist_ok=True)
        now = time.time()
        name = f"events.out.tfevents.{int(now)}.{socket.gethostname()}.{os.getpid()}.v2"
        self.path = os.path.join(folder, name)
        self._write(event_pb2.Event(wall_time=now, file_version="brain.Event:2"))

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2

        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
        )
        values = [
            summary_pb2.Summary.Value(
                tag=tag,
                metadata=metadata,
                tensor=tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[float(value)]),
            )
            for tag, value in scalars.items()
        ]
        summary = summary_pb2.Summary(value=values)
        self._write(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def _write(self, event: Any) -> None:
        """Appends ``event`` as one TFRecord (tensorboard's framing: length, data, CRCs)."""
        from tensorboard.summary.writer.record_writer import RecordWriter

        framed = io.BytesIO()
        RecordWriter(framed).write(event.SerializeToString())
        storage.append(self.path, framed.getvalue())


def json_number(value: Any) -> Any:
    """A NaN or inf float (an undefined mAP, an infinite loss, an absent class) as None, any
    other value as it is: strict JSON has no NaN (``metrics.jsonl``, the eval JSON);
    :func:`read_metrics` reads the null back as NaN."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def read_metrics(workdir: str) -> list[dict]:
    """All records of ``metrics.jsonl`` (empty if the run has not logged yet); a value written
    as null (a NaN or inf) is NaN. A line that does not read (cut short by a killed writer) is
    skipped."""
    path = storage.path(workdir, "metrics.jsonl")
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            records.append(json.loads(line))
    return [{k: math.nan if v is None else v for k, v in r.items()} for r in records]


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def progress_line(
    step: int, num_steps: int, scalars: Mapping[str, float], steps_per_sec: float
) -> str:
    """``step 120/2000 (6%) | loss 0.912 | top1 0.688 | 4.1 steps/s | ETA 7m39s``."""
    parts = [f"step {step}/{num_steps} ({100 * step / num_steps:.0f}%)"]
    parts += [f"{k} {v:.4g}" for k, v in scalars.items()]
    eta = (num_steps - step) / steps_per_sec if steps_per_sec > 0 else float("inf")
    parts += [f"{steps_per_sec:.2f} steps/s", f"ETA {format_duration(eta)}"]
    return " | ".join(parts)
