"""Metrics to TensorBoard event files and a JSON-lines file, plus a one-line progress report.

Only process 0 writes; the others get a writer that drops everything.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from typing import Any


class MetricWriter:
    """Writes scalars to ``<workdir>/metrics.jsonl`` and ``<workdir>/tensorboard/<split>``.

    >>> writer = MetricWriter("/tmp/run")
    >>> writer.write(100, "train", {"loss": 0.7})
    """

    def __init__(self, workdir: str, enabled: bool = True):
        self.workdir = workdir
        self.enabled = enabled
        self._summary_writers: dict = {}
        if enabled:
            os.makedirs(workdir, exist_ok=True)

    def _summary_writer(self, split: str):
        if split not in self._summary_writers:
            import tensorflow as tf  # lazy: the model and train-step code never need TF

            self._summary_writers[split] = tf.summary.create_file_writer(
                os.path.join(self.workdir, "tensorboard", split)
            )
        return self._summary_writers[split]

    def write(self, step: int, split: str, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        record = {
            "step": int(step),
            "split": split,
            "time": time.time(),
            **{k: json_number(float(v)) for k, v in scalars.items()},
        }
        with open(os.path.join(self.workdir, "metrics.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
        import tensorflow as tf

        with self._summary_writer(split).as_default(step=int(step)):
            for key, value in scalars.items():
                tf.summary.scalar(key, float(value))

    def flush(self) -> None:
        for writer in self._summary_writers.values():
            writer.flush()


def json_number(value: Any) -> Any:
    """A NaN or inf float (an undefined mAP, an infinite loss, an absent class) as None, any
    other value as it is: strict JSON has no NaN (``metrics.jsonl``, the eval JSON);
    :func:`read_metrics` reads the null back as NaN."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def read_metrics(workdir: str) -> list[dict]:
    """All records of ``metrics.jsonl`` (empty if the run has not logged yet); a value written
    as null (a NaN or inf) is NaN."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
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
