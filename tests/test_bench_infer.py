"""``vjax bench infer``: the timing of one form, its time budget, the table it writes and how a
failed form is reported, and the command end to end on a tiny model (the published pairs are
measured by the command itself, see BENCHMARKS.md)."""

import types

import numpy as np
import pytest

import vjax.bench_infer
import vjax.bench_peers
from vjax.bench_infer import bench_form, bench_forms, format_table, why_failed


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    """A fake clock that the runners advance, read by the timing and budget code, so the
    numbers are exact on a machine under any load: ``clock[0] += seconds``."""
    now = [0.0]
    fake_time = types.SimpleNamespace(perf_counter=lambda: now[0])
    for module in (vjax.bench_infer, vjax.bench_peers):
        monkeypatch.setattr(module, "time", fake_time)
    return now


def test_latency_and_throughput_follow_the_calls(clock):
    calls = []

    def run(video):  # 10 ms per call plus 1 ms per clip
        calls.append(video.shape)
        clock[0] += 0.01 + 0.001 * len(video)
        return np.zeros((len(video), 3), np.float32)

    row = bench_form(run, (2, 8, 8), batch=6, repeats=4)
    assert calls[0] == (1, 2, 8, 8, 3) and calls[-1] == (6, 2, 8, 8, 3)
    assert calls.count((1, 2, 8, 8, 3)) == 5 and row["calls"] == 4  # a first call, 4 timed
    assert row["latency_ms"] == pytest.approx(11) and row["p90_ms"] == pytest.approx(11)
    assert row["clips_per_s"] == pytest.approx(6 / 0.016)
    # A budget of 30 ms: 3 batch-1 calls (33 ms) and 2 batch calls after the warm-up (32 ms),
    # far fewer than the 40 and 10 repeats.
    calls.clear()
    row = bench_form(run, (2, 8, 8), batch=6, repeats=40, budget_s=0.03)
    assert row["calls"] == 3 and calls.count((6, 2, 8, 8, 3)) == 3
    measured = {"model": "m", "clip": "2x8x8", "form": "onnx", "load_s": 1.0, **row}
    failed = {"model": "m", "clip": "2x8x8", "form": "tflite", "error": "E: no"}
    table = format_table([{**measured, "memory_mib": None}, failed])
    lines = table.splitlines()
    assert len(lines) == 4 and lines[2].startswith("| m | 2x8x8 | onnx | 1.0 |")
    assert "failed: E: no" in lines[3] and lines[3].count("|") == lines[0].count("|")


def test_a_failed_form_says_why_in_one_line():
    # torch.compile's errors introduce the cause on a first line ending with ':'.
    error = RuntimeError("backend='inductor' raised:\nInvalidCxxCompiler: no C++ compiler\n\nmore")
    assert why_failed(error) == (
        "RuntimeError: backend='inductor' raised: InvalidCxxCompiler: no C++ compiler"
    )
    assert why_failed(ValueError("bad shape\ndetails")) == "ValueError: bad shape"


def test_forms_are_timed_in_turn_so_drift_hits_both_alike(clock):
    """Two runners on a machine that slows by 0.5 ms per round of calls: timed in turn, their
    median latencies differ by their own costs (2 ms); timed one after the other, by far more."""
    calls = []

    def runner(name, cost):
        def run(video):
            calls.append((name, len(video)))
            rounds = sum(n == "a" for n, _ in calls)
            clock[0] += cost + 0.0005 * rounds
            return np.zeros((len(video), 3), np.float32)

        return run

    runs = {"a": runner("a", 0.004), "b": runner("b", 0.002)}
    rows = bench_forms(runs, (2, 8, 8), batch=4, repeats=20)
    # First calls, then 20 batch-1 calls of each in turn, ..., the batch calls in turn.
    assert calls[:6] == [("a", 1), ("b", 1)] * 3 and calls[-2:] == [("a", 4), ("b", 4)]
    assert rows["a"]["calls"] == rows["b"]["calls"] == 20
    assert rows["a"]["latency_ms"] - rows["b"]["latency_ms"] == pytest.approx(2)
    calls.clear()
    apart = {name: bench_form(run, (2, 8, 8), batch=4, repeats=20) for name, run in runs.items()}
    assert apart["a"]["latency_ms"] - apart["b"]["latency_ms"] < 0  # b measured 26 rounds on


TINY_VIVIT = (
    "hf_vivit:num_hidden_layers=1,hidden_size=32,num_attention_heads=2,intermediate_size=64"
)


def test_every_file_form_is_measured_and_its_files_removed(tmp_path, monkeypatch):
    """The command end to end on a tiny HF ViViT: each exported form is built, timed and put
    in the table, and its files (hundreds of MB at published sizes) do not outlive it."""
    pytest.importorskip("torch", reason="the peer is a PyTorch model")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    forms = "float32,stablehlo,onnx,onnx_int8,savedmodel,torch"
    out = tmp_path / "BENCHMARKS.md"
    argv = [f"--models={TINY_VIVIT}@2x32x32", f"--forms={forms}", "--batch=2", "--repeats=3",
            "--budget=0.01", "--threads=1", f"--out={out}"]  # fmt: skip
    assert vjax.bench_infer.main(argv) == 0
    written = out.read_text()
    assert "(at least 3; each measurement stops after 0.01 s)" in written
    import jax

    from vjax.bench import device_name

    assert f"\n{device_name(jax.devices()[0])} (cpu), " in f"\n{written}"  # not "CPU:" on a GPU
    rows = [line for line in written.splitlines() if line.startswith("| hf_vivit ")]
    assert [row.split(" | ")[2] for row in rows] == forms.split(",")
    assert not any("failed" in row for row in rows), written
    # Only the runtimes' own caches stay (torch's inductor, TF's autograph): no exported file.
    exported = [p for p in scratch.rglob("*") if p.suffix in (".onnx", ".pb", ".stablehlo")]
    assert exported == []
