"""``vjax bench infer``: the timing of one form and the table it writes (the model pairs are
measured by the command itself, see BENCHMARKS.md)."""

import time

import numpy as np
import pytest

from vjax.bench_infer import bench_form, format_table


def test_latency_and_throughput_follow_the_calls():
    calls = []

    def run(video):  # 10 ms per call plus 1 ms per clip
        calls.append(video.shape)
        time.sleep(0.01 + 0.001 * len(video))
        return np.zeros((len(video), 3), np.float32)

    row = bench_form(run, (2, 8, 8), batch=6, repeats=4)
    assert calls[0] == (1, 2, 8, 8, 3) and calls[-1] == (6, 2, 8, 8, 3)
    assert calls.count((1, 2, 8, 8, 3)) == 5  # a first call, then the timed ones
    assert row["latency_ms"] == pytest.approx(11, abs=8) and row["p90_ms"] >= row["latency_ms"]
    assert row["clips_per_s"] == pytest.approx(6 / 0.016, rel=0.5)
    measured = {"model": "m", "clip": "2x8x8", "form": "onnx", "load_s": 1.0, **row}
    failed = {"model": "m", "clip": "2x8x8", "form": "tflite", "error": "E: no"}
    table = format_table([{**measured, "memory_mib": None}, failed])
    lines = table.splitlines()
    assert len(lines) == 4 and lines[2].startswith("| m | 2x8x8 | onnx | 1.0 |")
    assert "failed: E: no" in lines[3]
