"""The benchmark harnesses' contracts (audit 21, mutation audit of vjax/bench*.py and the parts of
vjax/flops.py the benches use): every number in a table is what its header says (medians, not
means; per-device TFLOP/s and MFU; allocator peaks; clips not batches; ratios the right way
round), a failed row is kept, the Markdown section replaces only itself, and the flags reach
the measurement. Fake clocks, runners and trainers keep it fast; each expected value is a hand
computation from the fakes' numbers."""

import argparse
import math
import os
import sys
import types

import jax
import numpy as np
import pytest
from conftest import scored_result

import vjax.bench_infer
import vjax.bench_peers
from vjax import bench, bench_data, bench_distill, bench_prune, bench_ssl, bench_train
from vjax.bench_peers import ModelSpec
from vjax.optim import HEAD_ONLY

TINY = "vivit:size=Ti/8x2,num_layers=1,hidden_size=32,num_heads=2,mlp_dim=64@4x16x16"
TINY_HF = "num_hidden_layers=1,hidden_size=32,num_attention_heads=2,intermediate_size=64"


def table_cells(table: str) -> list[dict[str, str]]:
    """A Markdown table's rows as ``{header: cell}``."""
    lines = [line for line in table.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [
        dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
        for line in lines[2:]
    ]


class Clock:
    """A fake ``time`` module whose clock the fakes advance."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


# --------------------------------------------------------------------------- vjax/bench.py


def test_a_section_is_replaced_whole_and_the_next_one_kept(tmp_path):
    """Its ``###`` sub-headings belong to it; the ``##`` section after it keeps its header; a
    section whose name another one's starts with is not that one."""
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(
        "# Benchmarks\n\n## vjax bench train --peers\n\npeers table\n\n"
        "## vjax bench data\n\nold\n\n### details\n\nold details\n\n## vjax bench infer\n\ninfer\n"
    )
    bench.update_benchmarks(str(path), "vjax bench data", "new")
    bench.update_benchmarks(str(path), "vjax bench train", "train table")
    text = path.read_text()
    assert "old" not in text and "### details" not in text
    assert "## vjax bench data\n\nnew\n\n## vjax bench infer\n\ninfer\n" in text
    assert "## vjax bench train --peers\n\npeers table\n" in text
    assert text.endswith("## vjax bench train\n\ntrain table\n")


def test_training_seconds_and_the_test_split(monkeypatch, tmp_path):
    """``train_and_test``: the metrics of the test split and the training's own seconds."""
    import time

    from vjax import train

    clock = Clock()
    clock.now = 1000.0
    monkeypatch.setattr(time, "perf_counter", clock.perf_counter)
    splits = []

    def fake_train(config, workdir):
        clock.now += 42.0

    def fake_evaluate(config, workdir, split):
        splits.append(split)
        clock.now += 5.0
        return {"top1": 0.5}

    monkeypatch.setattr(train, "train", fake_train)
    monkeypatch.setattr(train, "evaluate_checkpoint", fake_evaluate)
    config = bench.vjax_recipe("demo.py:tiny", {})
    result = bench.train_and_test(config, str(tmp_path / "run"))
    assert result == {"top1": 0.5, "seconds": 42.0} and splits == ["test"]


def test_publish_prints_the_command_as_given_and_writes_nothing_without_out(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["vjax", "something", "else"])
    assert bench.publish("ssl", ["--tiny"], lambda command: f"table of `{command}`", "") == 0
    assert capsys.readouterr().out == "table of `vjax bench ssl --tiny`\n"
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- vjax/flops.py


def test_macs_inside_remat_and_jit_are_counted():
    """``bench train --remat`` traces the model through ``checkpoint`` (a Jaxpr parameter),
    and a jitted helper is a ClosedJaxpr: their matmuls count like any other."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from vjax.flops import count_macs, jaxpr_macs

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(6)(x)

    class Remat(nn.Module):
        @nn.compact
        def __call__(self, x, train):
            return nn.remat(Block)()(x)

    assert count_macs(Remat(), (3, 4)) == 3 * 4 * 6
    inner = jax.jit(lambda a, b: a @ b)
    jaxpr = jax.make_jaxpr(lambda a, b: inner(a, b) @ b.T)(jnp.ones((3, 4)), jnp.ones((4, 5)))
    assert jaxpr_macs(jaxpr.jaxpr) == 3 * 4 * 5 + 3 * 5 * 4


# ----------------------------------------------------------------- vjax/bench_train.py


def test_a_train_row_is_the_median_step_per_device_against_the_per_device_peak(monkeypatch):
    """clips/s and step time of the median timed step (not the mean: one slow step moved it),
    TFLOP/s per device, MFU that per-device figure over one device's peak, memory in GiB, and
    the warm-up's loss (a fresh 400-way head: about log 400)."""
    from vjax.flops import count_macs
    from vjax.models import build_model

    asked = {}

    def fake_time_calls(run, repeats, budget_s=math.inf, least=1):
        asked.update(repeats=repeats, budget_s=budget_s, least=least)
        run()
        return [0.1, 0.2, 0.9]

    monkeypatch.setattr(bench_train, "time_calls", fake_time_calls)
    monkeypatch.setattr(bench_train, "peak_tflops", lambda device, dtype: 2e-3)
    monkeypatch.setattr(bench_train, "peak_memory_bytes", lambda d, c: (3 * 2**30, "XLA estimate"))
    spec = ModelSpec.parse(TINY)
    row = bench_train.bench_model(spec, batch=8, steps=3, dtype="float32", budget_s=7.0)
    assert asked == {"repeats": 3, "budget_s": 7.0, "least": 2}
    assert row["step_ms"] == pytest.approx(200.0) and row["clips_per_s"] == pytest.approx(40.0)
    macs = count_macs(build_model(spec.config, 400), (1, 4, 16, 16, 3))
    per_device = 3 * 2 * macs * 8 / 0.2 / 1e12 / 8  # 8 test devices share the batch
    assert row["tflops"] == pytest.approx(per_device)
    assert row["mfu"] == pytest.approx(per_device / 2e-3)
    assert row["memory_gib"] == pytest.approx(3.0)
    assert abs(row["first_loss"] - math.log(400)) < 0.5


def test_given_weights_start_the_step_stored_as_the_param_dtype():
    """``--peers`` with ``--param_dtype=bfloat16``: the twin's converted weights are the
    initial state, stored in bfloat16 (the values given, rounded)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from vjax.models import build_model

    spec = ModelSpec.parse(TINY)
    model = build_model(spec.config, 400)
    variables = nn.meta.unbox(
        jax.jit(lambda k: model.init(k, jnp.zeros((1, 4, 16, 16, 3)), train=False))(
            jax.random.key(7)
        )
    )
    step = bench_train.compile_step(spec.config, spec.clip, 8, "float32", variables=variables,
                                    param_dtype="bfloat16")  # fmt: skip
    given = jax.tree.leaves(variables["params"])
    stored = jax.tree.leaves(step.state.params)
    assert {x.dtype for x in stored} == {jnp.dtype(jnp.bfloat16)}
    for a, b in zip(given, stored, strict=True):
        expected = np.asarray(a).astype(jnp.bfloat16).astype(np.float32)
        np.testing.assert_array_equal(np.asarray(b, np.float32), expected)


def test_peak_memory_is_the_allocators_peak_or_xlas_whole_estimate():
    from types import SimpleNamespace

    import jax.numpy as jnp

    from vjax.bench_train import peak_memory_bytes

    gpu = SimpleNamespace(memory_stats=lambda: {"bytes_in_use": 10, "peak_bytes_in_use": 70})
    assert peak_memory_bytes(gpu, None) == (70.0, "allocator peak")
    analysis = SimpleNamespace(argument_size_in_bytes=1, output_size_in_bytes=20,
                               alias_size_in_bytes=0, temp_size_in_bytes=300)  # fmt: skip
    compiled = SimpleNamespace(memory_analysis=lambda: analysis)
    cpu = SimpleNamespace(memory_stats=lambda: None)
    assert peak_memory_bytes(cpu, compiled) == (321.0, "XLA estimate")
    # A donated 64 MiB state written over by the new one: counted once, not twice.
    state = jnp.ones((4096, 4096), jnp.float32)
    step = jax.jit(lambda s, x: (s * 0.9 + x.sum(), x.sum()), donate_argnums=0)
    donated = step.lower(state, jnp.ones(8)).compile()
    assert 64 * 2**20 <= peak_memory_bytes(cpu, donated)[0] < 65 * 2**20


def test_the_train_table_puts_each_number_under_its_header():
    row = {"model": "m", "clip": "2x8x8", "params_m": 1.25, "gflops": 0.5, "compile_s": 3.0,
           "step_ms": 250.0, "clips_per_s": 32.0, "tflops": 0.096, "mfu": 0.125,
           "memory_gib": 1.5, "memory_kind": "XLA estimate"}  # fmt: skip
    (cells,) = table_cells(bench_train.format_table([row]))
    assert cells["step (ms)"] == "250.0" and cells["clips/s"] == "32.00"
    assert cells["TFLOP/s/device"] == "0.10" and cells["MFU"] == "12.5%"
    assert cells["peak memory (GiB)"] == "1.50 (XLA estimate)" and cells["compile (s)"] == "3.0"
    last = table_cells(bench_train.format_table([{**row, "mfu": None}]))[0]
    assert last["MFU"] == "-"


def test_the_peer_table_memory_and_compile_columns():
    vjax = {"clips_per_s": 2.0, "gflops": 1.0, "memory_gib": 1.5, "compile_s": 7.0}
    eager = {"clips_per_s": 4.0, "memory_gib": 2.5, "compile_s": 0.5}
    rows = [{"model": "m", "clip": "2x8x8", "batch": 4, "vjax": vjax, "torch": eager,
             "torch.compile": {}}]  # fmt: skip
    (cells,) = table_cells(bench_train.format_peer_table(rows, None))
    assert cells["peak memory GiB vjax / eager / compiled"] == "1.50 / 2.50 / -"
    # vjax's lowering + compile; torch's first step, which compiles (torch.compile) and runs.
    assert cells["vjax compile s / torch first step s: vjax / eager / compiled"] == "7.0 / 0.5 / -"
    assert cells["MFU % vjax / eager / compiled"] == "- / - / -"  # no known peak
    # 6 x 1 GFLOP x 2 and 4 clips/s: 0.012 and 0.024 TFLOP/s of a 0.1 TFLOP/s peak.
    (cells,) = table_cells(bench_train.format_peer_table(rows, 0.1))
    assert cells["MFU % vjax / eager / compiled"] == "12.0 / 24.0 / -"


def test_merged_rounds_take_the_median_speed_and_the_highest_memory():
    rounds = [{"clips_per_s": 1.0, "memory_gib": 5.0, "compile_s": 4.0},
              {"clips_per_s": 3.0, "memory_gib": 9.0, "compile_s": 5.0},
              {"clips_per_s": 2.0, "memory_gib": 2.0, "compile_s": 6.0}]  # fmt: skip
    merged = bench_train.merge_rounds(rounds)
    assert merged == {"clips_per_s": 2.0, "memory_gib": 9.0, "compile_s": 4.0,
                      "round_clips_per_s": [1.0, 3.0, 2.0]}  # fmt: skip


def fake_child_recorder(seen):
    def fake_child(runtime, spec, options, timeout, env, cores):
        seen.append({"runtime": runtime, "spec": spec.name, "options": list(options),
                     "cores": cores})  # fmt: skip
        return {"clips_per_s": 1.0 + len(seen), "memory_gib": 9.0, "rss_gib": 0.5,
                "compile_s": 1.0, "gflops": 1.0, "first_loss": 6.0}  # fmt: skip

    return fake_child


def test_peer_processes_get_their_flags_and_vjax_memory_is_its_rss_on_cpu(monkeypatch):
    """--remat/--param_dtype go to the vjax processes only; torch.compile runs for every peer
    when --compile_models is empty, else for those named; on CPU vjax's memory is its RSS
    high-water mark, as torch's is (the header says so), not XLA's estimate."""
    seen = []
    monkeypatch.setattr(bench_train, "run_child", fake_child_recorder(seen))
    specs = [ModelSpec.parse("hf_vivit:size=Ti@2x32x32"), ModelSpec.parse("r3d_18@2x16x16")]
    options = bench_train.PeerOptions(batch=2, dtype="float32", steps=3, budget_s=5.0,
                                      vjax_flags=["--remat=block"], cores=1)  # fmt: skip
    rows = bench_train.bench_peers(specs, options)
    assert [(s["spec"], s["runtime"]) for s in seen] == [
        (name, runtime) for name in ("hf_vivit", "r3d_18") for runtime in bench_train.RUNTIMES
    ]
    for s in seen:
        assert ("--remat=block" in s["options"]) == (s["runtime"] == "vjax"), s
        assert {"--batch=2", "--steps=3", "--budget=5.0"} <= set(s["options"]) and s["cores"] == 1
    assert rows[0]["vjax"]["memory_gib"] == 0.5 and rows[0]["torch"]["memory_gib"] == 9.0
    seen.clear()
    options.compile_models = ["r3d_18"]
    bench_train.bench_peers(specs, options)
    compiled = [s["spec"] for s in seen if s["runtime"] == "torch.compile"]
    assert compiled == ["r3d_18"]


def test_peers_command_flags_reach_the_processes_and_the_peak(monkeypatch, tmp_path):
    """`vjax bench train --peers` on CPU: batch 4 and float32 by default, --steps, --budget=0
    (no limit), --cores reach each process; MFU's peak is looked up for the compute dtype;
    --rounds=2 lists each round's ratio."""
    pytest.importorskip("torch", reason="the peers table names torch's version")
    seen, peaks = [], []
    monkeypatch.setattr(bench_train, "run_child", fake_child_recorder(seen))
    monkeypatch.setattr(bench_train, "peak_tflops", lambda d, dtype="bfloat16": peaks.append(dtype))
    out = tmp_path / "BENCHMARKS.md"
    argv = ["--peers", "--models", "hf_vivit:size=Ti@2x32x32", "--forms=torch", "--steps=3",
            "--budget=0", "--cores=1", "--rounds=2", f"--out={out}"]  # fmt: skip
    assert bench_train.main(argv) == 0
    assert [s["runtime"] for s in seen] == ["vjax", "torch"] * 2
    for s in seen:
        assert {"--batch=4", "--dtype=float32", "--steps=3", "--budget=inf"} <= set(s["options"])
        assert s["cores"] == 1
    assert peaks == ["float32"]
    assert "vjax clips/s ratio in each round: hf_vivit size=Ti / eager:" in out.read_text()


def test_the_train_command_passes_param_dtype_and_remat_to_the_measurement(monkeypatch):
    seen = []

    def fake_bench_model(spec, batch, steps, dtype, **kwargs):
        seen.append((spec.config, batch, steps, dtype, kwargs))
        return {"model": spec.label, "clip": "4x16x16", "params_m": 1.0, "gflops": 1.0,
                "compile_s": 1.0, "step_ms": 1.0, "clips_per_s": 1.0, "tflops": 1.0,
                "mfu": None, "memory_gib": 1.0, "memory_kind": "XLA estimate"}  # fmt: skip

    monkeypatch.setattr(bench_train, "bench_model", fake_bench_model)
    argv = ["--models", TINY, "--batch=8", "--steps=3", "--dtype=float32", "--remat=block",
            "--param_dtype=bfloat16", "--out="]  # fmt: skip
    assert bench_train.main(argv) == 0
    ((config, batch, steps, dtype, kwargs),) = seen
    assert config["remat"] == "block" and (batch, steps, dtype) == (8, 3, "float32")
    assert kwargs.get("param_dtype") == "bfloat16"


# ----------------------------------------------------------------- vjax/bench_peers.py


def test_a_spec_round_trips_through_its_text():
    """The child process rebuilds the model from ``spec.text``: its fields must survive."""
    text = f"hf_vivit:{TINY_HF}@2x32x32"
    assert ModelSpec.parse(text).text == text
    assert ModelSpec.parse(ModelSpec.parse(text).text) == ModelSpec.parse(text)


def test_the_torch_side_reports_the_median_of_its_timed_steps(monkeypatch):
    """Not the mean, and not with the first (compiling) step among them."""
    pytest.importorskip("torch")
    asked = {}

    def fake_time_calls(run, repeats, budget_s=math.inf, least=1):
        asked.update(repeats=repeats, budget_s=budget_s, least=least)
        run()
        return [0.1, 0.2, 0.9]

    monkeypatch.setattr(vjax.bench_peers, "time_calls", fake_time_calls)
    spec = ModelSpec.parse(f"hf_vivit:{TINY_HF}@2x32x32")
    row = vjax.bench_peers.bench_torch(spec, "torch", 2, "float32", steps=3, budget_s=7.0)
    assert asked == {"repeats": 3, "budget_s": 7.0, "least": 2}
    assert row["clips_per_s"] == pytest.approx(2 / 0.2) and row["steps"] == 3
    assert abs(row["first_loss"] - math.log(400)) < 0.5


def test_a_spent_budget_still_takes_the_least_calls(monkeypatch):
    """``--budget`` below one step: still ``least`` samples (a median needs them), no more."""
    clock = Clock()
    monkeypatch.setattr(vjax.bench_peers, "time", clock)

    def run():
        clock.now += 1.0

    assert vjax.bench_peers.time_calls(run, 10, budget_s=0.5, least=2) == [1.0, 1.0]
    assert vjax.bench_peers.time_calls(run, 10, budget_s=2.5, least=1) == [1.0, 1.0, 1.0]
    assert vjax.bench_peers.time_calls(run, 2, least=5) == [1.0, 1.0]  # repeats cap it


def test_the_torch_decay_mask_is_vjaxs():
    """Kernels decay; biases, norm scales, position tables and class tokens do not."""
    torch = pytest.importorskip("torch")
    decays = vjax.bench_peers._decays
    assert decays("encoder.layer.0.attention.output.dense.weight", torch.zeros(4, 4))
    assert decays("stem.0.weight", torch.zeros(4, 3, 3, 3, 3))
    assert not decays("encoder.layer.0.attention.output.dense.bias", torch.zeros(4))
    assert not decays("encoder.layer.0.layernorm_before.weight", torch.zeros(4))
    assert not decays("vivit.embeddings.position_embeddings", torch.zeros(1, 5, 4))
    assert not decays("vivit.embeddings.cls_token", torch.zeros(1, 1, 4))


def test_the_torch_step_clips_the_gradient_norm(monkeypatch):
    """Clipped to a norm of 1e-12, the gradient is far below Adam's eps (1e-8): the update
    all but vanishes and the second step's loss is the first's (at norm 1 it moves > 1e-2,
    tests/test_bench_peers.py)."""
    torch = pytest.importorskip("torch")
    monkeypatch.setitem(vjax.bench_peers.OPTIMIZER, "grad_clip_norm", 1e-12)
    spec = ModelSpec.parse(f"hf_vivit:{TINY_HF}@4x32x32")
    step = vjax.bench_peers.torch_train_step(
        vjax.bench_peers.torch_model(spec), "float32", torch.device("cpu")
    )
    data = vjax.bench_peers.synthetic_batch(4, spec.clip)
    video, labels = torch.from_numpy(data["video"]), torch.from_numpy(data["label"]).long()
    first, second = float(step(video, labels)), float(step(video, labels))
    assert abs(second - first) < 1e-4


def test_rss_is_the_kernels_high_water_mark_in_gib():
    with open("/proc/self/status") as f:
        hwm_kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    assert vjax.bench_peers.rss_gib() == pytest.approx(hwm_kib / 2**20, rel=0.05)


def test_a_child_is_pinned_to_exactly_the_cores_asked_and_its_failures_are_errors(monkeypatch):
    import subprocess

    commands, outcome = [], {}

    def fake_run(command, **kwargs):
        commands.append(command)
        if outcome.get("timeout"):
            raise subprocess.TimeoutExpired(command, kwargs["timeout"])
        return subprocess.CompletedProcess(command, outcome.get("rc", 0),
                                           'RESULT {"clips_per_s": 3.0}\n', "boom\n")  # fmt: skip

    monkeypatch.setattr(subprocess, "run", fake_run)
    spec = ModelSpec.parse("r3d_18@2x16x16")
    assert vjax.bench_peers.run_child("torch", spec, ["--batch=2"], cores=2) == {"clips_per_s": 3.0}
    (command,) = commands
    assert command[:3] == ["taskset", "-c", "0-1"] and command[-1] == "--threads=2"
    assert "r3d_18@2x16x16" in command and "--batch=2" in command
    outcome["rc"] = 1  # a process that printed its row, then failed
    assert vjax.bench_peers.run_child("torch", spec, []) == {"error": "exit 1: boom"}
    outcome["timeout"] = True
    assert vjax.bench_peers.run_child("torch", spec, [], timeout_s=5.0) == {
        "error": "timed out after 5 s"
    }


def test_the_vjax_child_measures_with_its_remat_and_param_dtype(monkeypatch, capsys):
    seen = []

    def fake_bench_model(spec, batch, steps, dtype, **kwargs):
        seen.append((spec.config, batch, steps, dtype, kwargs))
        return {"clips_per_s": 1.0}

    monkeypatch.setattr(bench_train, "bench_model", fake_bench_model)
    argv = ["vjax", TINY, "--batch=2", "--steps=3", "--budget=4", "--remat=block",
            "--param_dtype=bfloat16"]  # fmt: skip
    assert vjax.bench_peers.main(argv) == 0
    ((config, batch, steps, dtype, kwargs),) = seen
    assert config["remat"] == "block" and (batch, steps, dtype) == (2, 3, "float32")
    assert kwargs["param_dtype"] == "bfloat16" and kwargs["budget_s"] == 4.0
    assert len(kwargs["devices"]) == 1
    assert capsys.readouterr().out.startswith("RESULT {")


# ----------------------------------------------------------------- vjax/bench_infer.py


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    for module in (vjax.bench_infer, vjax.bench_peers):
        monkeypatch.setattr(module, "time", fake)
    return fake


def test_latency_is_the_median_p90_the_90th_percentile_throughput_the_median(clock):
    """Twelve batch-1 calls, ten of 1 ms and two of 21 ms: median 1 ms (mean 4.3), p90 19 ms
    (numpy's linear percentile: rank 0.9 x 11 = 9.9, 1 + 0.9 x 20); batch calls of 10, 10 and
    40 ms after a warm-up: 400 clips/s at batch 4 (the median; the mean gives 200), from
    max(2, 12 // 4) = 3 timed calls."""
    costs = {1: iter([0.5] + [0.001] * 10 + [0.021] * 2), 4: iter([0.5, 0.01, 0.01, 0.04])}
    calls = []

    def run(video):
        calls.append(len(video))
        clock.now += next(costs[len(video)])
        return np.zeros((len(video), 3), np.float32)

    row = vjax.bench_infer.bench_form(run, (2, 8, 8), batch=4, repeats=12)
    assert row["latency_ms"] == pytest.approx(1.0) and row["p90_ms"] == pytest.approx(19.0)
    assert row["clips_per_s"] == pytest.approx(400.0) and calls.count(4) == 4


def test_a_timed_call_waits_for_its_result(clock):
    """A JAX form returns before its work is done: the time until the result is ready counts."""

    class Pending:
        def block_until_ready(self):
            clock.now += 0.005
            return self

    def run(video):
        clock.now += 0.001
        return Pending()

    row = vjax.bench_infer.bench_form(run, (2, 8, 8), batch=2, repeats=3)
    assert row["latency_ms"] == pytest.approx(6.0)


def test_a_spent_latency_budget_still_takes_three_calls(clock):
    def run(video):
        clock.now += 0.001
        return np.zeros((len(video), 3), np.float32)

    row = vjax.bench_infer.bench_form(run, (2, 8, 8), batch=2, repeats=40, budget_s=1e-4)
    assert row["calls"] == 3


def test_load_counts_the_first_call_and_a_failed_form_keeps_its_row(monkeypatch, clock):
    """``load + compile`` = building the runner + its first call; a form that fails is a row
    saying why, not a row dropped."""
    torch = pytest.importorskip("torch")
    threads = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    monkeypatch.setattr(vjax.bench_infer, "build_pair", lambda spec: (None, None, {}, None))

    def fake_runner(form, model, variables, model_config, clip, folder):
        if form == "bfloat16":
            raise RuntimeError("no bf16 here\nmore")
        clock.now += 2.0  # export and load
        first = [True]

        def run(video):
            clock.now += 3.0 if first[0] else 0.01
            first[0] = False
            return np.zeros((len(video), 3), np.float32)

        return run, lambda: 12.0

    monkeypatch.setattr(vjax.bench_infer, "_jax_runner", fake_runner)
    rows = vjax.bench_infer.bench_model("r2plus1d_18@2x8x8", ["float32", "bfloat16"], batch=2,
                                        repeats=3, threads=1)  # fmt: skip
    assert threads == [1]
    assert [r["form"] for r in rows] == ["float32", "bfloat16"]
    assert rows[0]["load_s"] == pytest.approx(5.0) and rows[0]["memory_mib"] == 12.0
    assert rows[1]["error"] == "RuntimeError: no bf16 here"


def test_the_infer_table_puts_median_and_p90_under_their_headers():
    row = {"model": "m", "clip": "2x8x8", "form": "onnx", "load_s": 1.0, "latency_ms": 4.0,
           "p90_ms": 9.0, "clips_per_s": 250.0, "memory_mib": None, "calls": 20}  # fmt: skip
    (cells,) = table_cells(vjax.bench_infer.format_table([row]))
    assert cells["batch-1 median (ms)"] == "4.0" and cells["p90 (ms)"] == "9.0"
    assert cells["clips/s at batch"] == "250.0" and cells["batch-1 calls"] == "20"


def test_infer_flags_reach_the_measurement(monkeypatch):
    """--budget=0 is no limit (documented), --threads each runtime's threads."""
    seen = []
    monkeypatch.setattr(vjax.bench_infer, "bench_model", lambda *a: seen.append(a) or [])
    argv = ["--models", "r2plus1d_18@2x8x8", "--forms=float32", "--batch=3", "--repeats=7",
            "--budget=0", "--threads=1", "--out="]  # fmt: skip
    assert vjax.bench_infer.main(argv) == 0
    assert seen == [("r2plus1d_18@2x8x8", ["float32"], 3, 7, 1, math.inf)]


def test_the_xla_memory_column_is_the_batch_1_executable():
    """The column says "batch 1": read from that executable even after the batch one compiled
    (uint8 input of 96 bytes and float32 output of 384 at batch 1; four times that at 4)."""
    import jax.numpy as jnp

    run, memory = vjax.bench_infer.compiled_runner(
        lambda v: (v.astype(jnp.float32) * 2,), (2, 4, 4)
    )
    run(np.zeros((1, 2, 4, 4, 3), np.uint8))
    run(np.zeros((4, 2, 4, 4, 3), np.uint8))
    assert 480 <= memory() * 2**20 < 4 * 480


def test_the_memory_column_holds_the_weights_xla_plans_as_constants():
    """A JAX form's weights are constants of its executable, which XLA's memory plan leaves out
    (a 120 MiB R(2+1)D-18 was reported at 40 MiB): the column adds them, as held (int8 ones
    at a byte each)."""
    from vjax.models import build_model

    model_config = {"name": "vivit", "size": "Ti/8x2", "num_layers": 1, "hidden_size": 64,
                    "num_heads": 2, "mlp_dim": 1024}  # fmt: skip
    clip = (2, 8, 8)
    model = build_model(model_config, 400)
    variables = jax.jit(lambda k: model.init(k, np.zeros((1, *clip, 3)), train=False))(
        jax.random.key(0)
    )
    weights = sum(x.nbytes for x in jax.tree.leaves(variables))
    video = np.zeros((1, *clip, 3), np.uint8)
    sizes = {}
    for form in ("float32", "int8_weights"):
        run, memory = vjax.bench_infer._jax_runner(form, model, variables, model_config, clip, "")
        run(video)
        sizes[form] = memory() * 2**20
    assert weights <= sizes["float32"] < weights + 2**20  # the plan's share: well under 1 MiB
    assert sizes["int8_weights"] < 0.5 * sizes["float32"]


# ----------------------------------------------------------------- vjax/bench_data.py


def test_the_data_table_ratios_and_scaling_are_the_right_way_round(monkeypatch):
    """pipeline 200 clip frames/s per core against PyAV's 100 decoded and 50 clip frames/s:
    4.0x and 2.0x; 15 against 10 clips/s: 1.50x scaling; 4 videos prepared in 2 s: 2.00/s."""
    clock = Clock()
    monkeypatch.setattr(bench_data, "time", clock)

    def prepare(data_dir, src, short_side, num_workers):
        clock.now += 2.0

    entries = [types.SimpleNamespace(path=f"{i}.mp4") for i in range(4)]
    monkeypatch.setitem(sys.modules, "vjax.data.video_builder",
                        types.SimpleNamespace(prepare_video_folder=prepare))  # fmt: skip
    monkeypatch.setitem(sys.modules, "vjax.data.manifests",
                        types.SimpleNamespace(read_entries=lambda src: entries))  # fmt: skip
    monkeypatch.setattr(bench_data, "plain_pyav", lambda paths, n, s: (100.0, 50.0, 40))
    monkeypatch.setattr(bench_data, "pipeline_frames_per_cpu_s", lambda clips, args: 200.0)
    monkeypatch.setattr(bench_data, "pipeline_clips_per_s", lambda w, c, a: {1: 10.0, 2: 15.0}[w])
    args = argparse.Namespace(
        workers="1,2", src="videos", short_side=32, num_frames=4, stride=2, crop=24, clips=16,
        keyframe_interval=None, argv=["--src=videos"],
    )  # fmt: skip
    rows = {c["measurement"]: c["value"] for c in table_cells(bench_data.run(args))}
    assert rows["ratio pipeline / PyAV, clip frames"] == "4.0x"
    assert rows["ratio pipeline / PyAV, decoded frames"] == "2.0x"
    assert rows["scaling 2 vs 1 workers"] == "1.50x"
    assert rows["prepare (decode + JPEG) videos/s, all workers"] == "2.00"
    assert rows["clips/s, 1 worker"] == "10.0" and rows["clips/s, 2 workers"] == "15.0"


def test_loader_clips_per_second_leave_out_the_start_up(monkeypatch):
    """Each worker's first batch costs 10 s (imports, opening the data), then 0.5 s per batch
    of 8 clips: 16 clips/s."""
    clock = Clock()
    monkeypatch.setattr(bench_data, "time", clock)

    class FakeProcessMap:
        def __init__(self, make, workers):
            self.workers, self.calls = workers, 0

        def __call__(self, step):
            self.calls += 1
            clock.now += 10.0 if self.calls <= self.workers else 0.5

        def close(self):
            pass

    monkeypatch.setitem(sys.modules, "vjax.data.pipeline",
                        types.SimpleNamespace(ProcessMap=FakeProcessMap))  # fmt: skip
    assert bench_data.pipeline_clips_per_s(2, 32, ()) == pytest.approx(16.0)


def test_pipeline_frames_per_core_count_frames_after_the_warm_up(monkeypatch):
    """Batches of 8 clips x 4 frames at 1 CPU-s each, the warm-up batch 10 CPU-s: 32 frames
    per CPU-second."""
    cpu, calls = [0.0], []

    def batches(step):
        calls.append(step)
        cpu[0] += 10.0 if len(calls) == 1 else 1.0  # the first batch: imports, first reads
        return {"video": np.zeros((8, 4, 2, 2, 3), np.uint8)}

    monkeypatch.setattr(bench_data, "bench_batches", lambda *a: batches)
    monkeypatch.setattr(bench_data, "cpu_seconds", lambda: cpu[0])
    assert bench_data.pipeline_frames_per_cpu_s(16, ()) == pytest.approx(32.0)


def test_plain_pyav_rates_decoded_and_clip_frames_apart(tmp_path, monkeypatch):
    """Every frame a keyframe: a clip of 3 frames at stride 2 decodes its span of 5 frames and
    keeps 3; over 2 CPU-seconds, 2.5 decoded and 1.5 clip frames/s."""
    folder = bench_data.make_sources(str(tmp_path), 1, 2.0, 10, (32, 48), keyframe_interval=1)
    cpu = iter([0.0, 2.0])
    monkeypatch.setattr(bench_data, "cpu_seconds", lambda: next(cpu))
    path = os.path.join(folder, "bench", "0.mp4")
    assert bench_data.plain_pyav([path], 3, 2) == (2.5, 1.5, 20)


def test_cpu_seconds_count_user_and_system_time():
    before = os.times()
    seconds = bench_data.cpu_seconds()
    after = os.times()
    assert before.user + before.system - 0.02 <= seconds <= after.user + after.system + 0.02


# ----------------------------------------------------------------- vjax/bench_ssl.py


def test_ssl_fine_tunes_and_trains_from_scratch_on_the_same_labelled_share(monkeypatch, tmp_path):
    """For each of --seeds: pre-training runs its --pretrain_steps on all clips, then the
    fine-tuned and the scratch classifier both train --finetune_steps on the --label_fraction
    (16 of 64 tiny clips); all three with that seed, and only the fine-tuned one starts from
    the seed's pre-trained weights."""
    trained = {}

    def fake_timed(config, workdir):
        trained[os.path.basename(workdir)] = config
        return 30.0 + config.seed

    def fake_train_and_test(config, workdir):  # the checkpoint's step, as evaluate gives it
        trained[os.path.basename(workdir)] = config
        return {"step": config.train.num_steps, "top1": 0.5, "seconds": 1.0, "num_examples": 8}

    def fake_probes(config, pretrain_dir):  # probed where the two classifiers start
        probed.append((config, pretrain_dir))
        return {"pretrained": {"top1": 0.5, "l2": 1.0}, "scratch": {"top1": 0.25, "l2": 1.0}}

    def fake_loss(config, pretrain_dir):  # the seed's own pre-training, after it trained
        assert trained[os.path.basename(pretrain_dir)] is config
        return {"loss": 0.9 + config.seed, "mean_prediction": 0.99}

    probed = []
    monkeypatch.setattr(bench_ssl, "pretraining_loss", fake_loss)
    monkeypatch.setattr(bench_ssl, "timed_training", fake_timed)
    monkeypatch.setattr(bench_ssl, "train_and_test", fake_train_and_test)
    monkeypatch.setattr(bench_ssl, "encoder_probes", fake_probes)
    workdir = str(tmp_path)
    result = bench_ssl.run(workdir, "data", 7, 5, label_fraction=0.25, tiny=True, seeds=2,
                           head_steps=0)  # fmt: skip
    assert sorted(trained) == ["finetune_seed0", "finetune_seed1", "pretrain_seed0",
                               "pretrain_seed1", "scratch_seed0", "scratch_seed1"]  # fmt: skip
    for seed in (0, 1):
        pretrain = trained[f"pretrain_seed{seed}"]
        assert pretrain.train.num_steps == 7 and pretrain.dataset.num_train == 64
        assert pretrain.seed == seed and pretrain.dataset.data_dir == "data"
        finetune, scratch = trained[f"finetune_seed{seed}"], trained[f"scratch_seed{seed}"]
        for config in (finetune, scratch):
            assert config.train.num_steps == 5 and config.dataset.num_train == 16
            assert config.dataset.data_dir == "data" and config.seed == seed
        assert finetune.train.init_from == os.path.join(workdir, f"pretrain_seed{seed}")
        assert not scratch.train.init_from
        config, pretrain_dir = probed[seed]  # the scratch run's config, the seed's pre-training
        assert config.to_dict() == scratch.to_dict()
        assert pretrain_dir == finetune.train.init_from
    assert [(run["seed"], run["pretrain_seconds"]) for run in result["runs"]] == [(0, 30), (1, 31)]
    assert [run["pretraining"]["loss"] for run in result["runs"]] == [0.9, 1.9]
    assert result["labelled_clips"] == 16

    # LP-FT: the head alone on the frozen pre-trained encoder first, then fine-tuning from it;
    # the probes still read the pre-training itself.
    trained.clear(), probed.clear()
    bench_ssl.run(workdir, "data", 7, 5, label_fraction=0.25, tiny=True, seeds=1, head_steps=3)
    head, finetune = trained["head_seed0"], trained["finetune_seed0"]
    assert head.train.init_from == os.path.join(workdir, "pretrain_seed0")
    assert head.optimizer.freeze == HEAD_ONLY and head.optimizer.lr == bench_ssl.HEAD_LR
    assert head.train.num_steps == 3 and head.dataset.num_train == 16 and head.seed == 0
    assert finetune.train.init_from == os.path.join(workdir, "head_seed0")
    assert finetune.optimizer.freeze == "" and finetune.train.num_steps == 5
    assert probed[0][1] == os.path.join(workdir, "pretrain_seed0")


def test_the_ssl_table_has_a_row_per_seed_and_the_gain_over_them():
    result = {"num_classes": 10, "pretrain_clips": 4000, "labelled_clips": 400,
              "pretrain_steps": 2000, "finetune_steps": 400,
              "runs": [{"seed": 0, "finetuned": scored_result(0.75, 800, seconds=60.0),
                        "scratch": scored_result(0.5, 800, seconds=50.0), "pretrain_seconds": 500},
                       {"seed": 1, "pretrain_seconds": 700,
                        "finetuned": scored_result(0.6, 800, seconds=61.0),
                        "scratch": scored_result(0.55, 800, seconds=51.0)}]}  # fmt: skip
    result["runs"][0]["probes"] = {"pretrained": {"top1": 0.375, "l2": 0.01},
                                   "scratch": {"top1": 0.29, "l2": 1.0}}  # fmt: skip
    result["runs"][1]["probes"] = {"pretrained": {"top1": 0.25, "l2": 0.1},
                                   "scratch": {"top1": 0.3, "l2": 0.001}}  # fmt: skip
    for run, loss in zip(result["runs"], (0.98412, 0.99), strict=True):
        run["pretraining"] = {"loss": loss, "mean_prediction": 127 / 128}
    text = bench_ssl.table(result, 720.0, "vjax bench ssl")
    assert "fine-tuned from it and from scratch" in text  # no head-only stage
    result["head_steps"] = 200
    text = bench_ssl.table(result, 720.0, "vjax bench ssl")
    assert "fine-tuned from it (LP-FT: first 200 steps of the head alone on the frozen " in text
    assert (
        "Pre-training's validation loss: 0.9841 / 0.9900 (seeds 0 / 1); predicting each hidden "
        "tubelet's own mean scores 0.9922, so only the loss below that is what" in text
    )
    result["runs"][0]["pretraining"]["mean_prediction"] = None  # raw-pixel targets
    raw = bench_ssl.table(result, 720.0, "vjax bench ssl")
    assert "Pre-training's validation loss: 0.9841 / 0.9900 (seeds 0 / 1).\n" in raw
    result["runs"] = result["runs"][:1]
    assert "validation loss: 0.9841 (seed 0).\n" in bench_ssl.table(result, 1.0, "vjax bench ssl")
    rows = {c["seed"]: c for c in table_cells(text.split("Each encoder frozen")[0])}
    assert rows["0"]["VideoMAE pre-trained, fine-tuned: test top-1 (95% CI)"].startswith("0.750 (")
    assert rows["0"]["from scratch: test top-1 (95% CI)"].startswith("0.500 (")
    assert rows["0"]["gain (points)"] == "+25.0" and rows["1"]["gain (points)"] == "+5.0"
    assert rows["1"]["train s"] == "61 / 51"
    assert rows["1"]["clip by clip"].startswith("only pre-trained right on 40 of the 800 test")
    assert "Gain from pre-training: +15.0 points on average over 2 seeds (+5.0 to +25.0; " in text
    assert "pre-training (2000 steps, 600 s on average)" in text and "(10% of the labels)" in text
    probes = {c["seed"]: c for c in table_cells(text.split("tested on the test split:")[1])}
    assert probes["0"] == {
        "seed": "0", "linear probe of the pre-trained encoder: test top-1": "0.375 (L2 0.01)",
        "of the random encoder": "0.290 (L2 1)", "gain (points)": "+8.5"}  # fmt: skip
    assert probes["1"]["gain (points)"] == "-5.0"
    assert text.endswith("Linear probe gain: +1.8 points on average.")


def test_a_gain_over_seeds_is_tested_over_the_seeds():
    """The words under the ssl (and any seeded) table: the mean, the range, how many seeds
    favour B, and the paired t-test over the seeds, which scipy's ttest_rel gives too."""
    from scipy.stats import ttest_rel

    def seeded(a, b):  # (seed, A's result, B's) per seed, as the benches hand them over
        return [
            (seed, {"top1": x}, {"top1": y}) for seed, (x, y) in enumerate(zip(a, b, strict=True))
        ]

    a, b = [0.50, 0.55, 0.60], [0.56, 0.55, 0.70]
    p = ttest_rel(b, a).pvalue
    assert bench.across_seeds_words(seeded(a, b), ("alone", "distilled")) == (
        "+5.3 points on average over 3 seeds (+0.0 to +10.0; distilled better on 2 of 3; "
        f"paired t-test over the seeds p = {p:.2g})"
    )
    assert bench.across_seeds_words(seeded([0.5], [0.6]), ("a", "b")) == (
        "+10.0 points on average over 1 seed (one seed: the spread over seeds is unknown)"
    )
    assert bench.across_seeds_words(seeded([0.5, 0.6], [0.6, 0.7]), ("a", "b")) == (
        "+10.0 points on average over 2 seeds (+10.0 to +10.0; b better on 2 of 2)"
    )


# --------------------------------------------------------------- vjax/bench_distill.py


def test_distill_flags_reach_the_teacher_and_both_students(monkeypatch, tmp_path):
    """Both students of each seed: the small model, the same share of clips, steps, mixup and
    that seed; only the distilled one has the teacher, at the temperature and alpha asked for."""
    trained = {}

    def fake_train_and_test(config, workdir):  # the checkpoint's step, as evaluate gives it
        trained[os.path.basename(workdir)] = config
        return {"step": config.train.num_steps, "top1": 0.5, "seconds": 1.0, "num_examples": 8}

    monkeypatch.setattr(bench_distill, "train_and_test", fake_train_and_test)
    monkeypatch.setattr(bench_distill, "_size", lambda config: {"params": 1, "gmacs": 1.0})
    workdir = str(tmp_path)
    result = bench_distill.run(
        workdir, "data", teacher_steps=7, student_steps=None, temperature=3.0, alpha=0.25,
        tiny=True, train_fraction=0.25, mixup_alpha=0.5, seeds=2,
    )  # fmt: skip
    assert sorted(trained) == ["alone_seed0", "alone_seed1", "distilled_seed0",
                               "distilled_seed1", "teacher"]  # fmt: skip
    teacher = trained["teacher"]
    assert teacher.train.num_steps == 7 and teacher.dataset.num_train == 64
    demo_steps = bench.vjax_recipe("demo.py:tiny", {}).train.num_steps
    for seed in (0, 1):
        alone, distilled = trained[f"alone_seed{seed}"], trained[f"distilled_seed{seed}"]
        for config in (alone, distilled):
            assert config.model.hidden_size == bench_distill.TINY_STUDENT["hidden_size"]
            assert config.dataset.num_train == 16 and config.input.mixup_alpha == 0.5
            assert config.seed == seed and config.train.num_steps == 2 * demo_steps
            assert config.dataset.data_dir == "data"
        assert not alone.train.distill.teacher
        assert distilled.train.distill.teacher == os.path.join(workdir, "teacher")
        assert distilled.train.distill.temperature == 3.0 and distilled.train.distill.alpha == 0.25
    assert [run["seed"] for run in result["runs"]] == [0, 1]
    assert result["student"]["steps"] == 2 * demo_steps


def test_a_given_teacher_is_tested_on_the_test_split(monkeypatch, tmp_path):
    from vjax import train

    splits = []

    def fake_evaluate(config, workdir, split):
        splits.append((workdir, split))
        return {"step": 123, "top1": 0.9, "num_examples": 8}

    monkeypatch.setattr(train, "evaluate_checkpoint", fake_evaluate)
    monkeypatch.setattr(bench_distill, "train_and_test",
                        lambda c, w: {"step": c.train.num_steps, "top1": 0.5, "seconds": 1.0,
                                      "num_examples": 8})  # fmt: skip
    monkeypatch.setattr(bench_distill, "_size", lambda config: {"params": 1, "gmacs": 1.0})
    result = bench_distill.run(str(tmp_path), "data", None, 3, teacher="runs/vivit", tiny=True)
    assert splits == [("runs/vivit", "test")]
    assert result["teacher"]["steps"] == 123  # its checkpoint's, not the recipe's


def test_bench_prune_refuses_steps_for_a_given_run(capsys):
    """``--vivit_steps`` trains the model here; beside ``--vivit=DIR`` it did nothing."""
    from vjax.cli import main

    assert main(["bench", "prune", "--vivit=runs/vivit", "--vivit_steps=400", "--models=vivit",
                 "--out="]) == 2  # fmt: skip
    assert "--vivit_steps trains vivit here; --vivit=runs/vivit is used at its own" in (
        capsys.readouterr().err)  # fmt: skip


def distill_result(teacher_top1, seeds):
    """A bench distill result: the teacher's size and test, and per seed (alone, distilled)
    test top-1 on 800 clips."""
    return {
        "teacher": scored_result(teacher_top1, 800, params=600000, gmacs=0.0300, steps=800),
        "student": {"params": 100000, "gmacs": 0.0100, "steps": 1600, "hidden_size": 48,
                    "num_layers": 2},
        "runs": [{"seed": seed, "alone": scored_result(a, 800, seconds=60.0),
                  "distilled": scored_result(d, 800, seconds=70.0)}
                 for seed, (a, d) in enumerate(seeds)],
        "num_classes": 6, "temperature": 1.0, "alpha": 1.0, "num_train": (400, 4000),
        "mixup_alpha": 0.0,
    }  # fmt: skip


def test_the_distill_table_states_the_gflops_ratio_not_the_parameter_ratio():
    text = bench_distill.table(distill_result(0.9, [(0.7, 0.8)]), 60.0, "vjax bench distill")
    assert "3.0x fewer GFLOPs than the teacher" in text


def test_the_distill_table_has_a_row_per_seed_and_the_teacher_gap_over_them():
    result = distill_result(0.95, [(0.80, 0.85), (0.85, 0.87), (0.82, 0.89)])
    text = bench_distill.table(result, 60.0, "vjax bench distill")
    rows = table_cells(text.split("\n\n| seed")[0])
    assert rows[0]["model"] == "teacher (demo ViViT)" and rows[0]["steps"] == "800"
    assert rows[0]["test top-1 (95% CI)"].startswith("0.950 (")
    assert rows[1]["params"] == "100,000" and rows[1]["steps"] == "1600"
    seeds = {c["seed"]: c for c in table_cells("| seed" + text.split("\n\n| seed")[1])}
    assert seeds["2"]["gain (points)"] == "+7.0" and seeds["2"]["train s"] == "70 / 60"
    assert seeds["1"]["distilled: test top-1 (95% CI)"].startswith("0.870 (")
    assert seeds["1"]["alone: test top-1 (95% CI)"].startswith("0.850 (")
    assert (
        "Distilled vs alone: +4.7 points on average over 3 seeds (+2.0 to +7.0; distilled " in text
    )
    assert "the distilled students 8.0 points below the teacher on average" in text


# ------------------------------------------------------------------ vjax/bench_prune.py


def prune_result(speedup, lost_points):
    def row(top1, ms):
        return scored_result(top1, 800, params=1000, gmacs=1.0, steps=10, latency_ms=ms, p90_ms=ms,
                      clips_per_s=1.0)  # fmt: skip

    rows = {"original": row(0.9, 4.0), "pruned": row(0.5, 4.0 / speedup),
            "fine-tuned": row(0.9 - lost_points / 100, 4.0 / speedup)}  # fmt: skip
    model = {"rows": rows, "units": {"heads": (4, 2)}, "num_classes": 6, "finetune_lr": 1e-3,
             "by": "magnitude", "granularity": "unit"}  # fmt: skip
    return {"models": {"r2plus1d": model}, "ratio": 0.5, "batch": 8, "repeats": 20}


@pytest.mark.parametrize(
    ("speedup", "lost", "verdict"),
    # (2.0, 2.0): exactly 2 points (16 of 800 clips) is within the target, float error aside.
    [
        (2.0, 1.0, "met)"),
        (2.0, 5.0, "not met)"),
        (1.2, 1.0, "not met)"),
        (2.0, 2.0, "met)"),
        (1.6, 2.125, "not met)"),
    ],
)
def test_the_prune_target_needs_both_the_speed_up_and_the_accuracy(speedup, lost, verdict):
    text = bench_prune.table(prune_result(speedup, lost), 60.0, "vjax bench prune")
    assert text.endswith(f"; target: >= 1.6x at <= 2 points: {verdict}.")


def _fake_prune_steps(monkeypatch, evaluated_step: int) -> dict:
    """bench_prune with training, evaluation (a checkpoint at ``evaluated_step``), pruning and
    timing faked: returns the configs trained, by run folder name."""
    from vjax import pruning, train

    trained = {}

    def fake_train_and_test(config, workdir):  # the checkpoint's step, as evaluate gives it
        trained[os.path.basename(workdir)] = config
        return {"step": config.train.num_steps, "top1": 0.9, "seconds": 1.0}

    monkeypatch.setattr(bench_prune, "train_and_test", fake_train_and_test)
    monkeypatch.setattr(
        train, "evaluate_checkpoint", lambda c, w, s: {"step": evaluated_step, "top1": 0.5}
    )
    monkeypatch.setattr(pruning, "prune_checkpoint",
                        lambda *a, **k: {"units": {"heads": [4, 2]}})  # fmt: skip
    speeds = {"original": {"latency_ms": 4.0, "params": 10, "gmacs": 2.0},
              "pruned": {"latency_ms": 2.0, "params": 5, "gmacs": 1.0}}  # fmt: skip
    monkeypatch.setattr(bench_prune, "_speeds", lambda folders, batch, repeats: speeds)
    return trained


def test_prune_fine_tunes_a_tenth_of_the_steps_from_the_pruned_weights(monkeypatch, tmp_path):
    """The fine-tuning: init from the pruned folder, a tenth of the steps, the learning rate
    given, the original as teacher; the fine-tuned row has the pruned model's speed."""
    trained = _fake_prune_steps(monkeypatch, 0)
    workdir = str(tmp_path)
    result = bench_prune.run_model("vivit", workdir, "data", 30, ratio=0.5, by="taylor",
                                   tiny=True, finetune_lr=3e-4, distill=True)  # fmt: skip
    finetune = trained["vivit_finetuned"]
    assert finetune.train.init_from == os.path.join(workdir, "vivit_pruned")
    assert finetune.train.num_steps == 3 and finetune.optimizer.lr == 3e-4
    assert finetune.train.distill.teacher == os.path.join(workdir, "vivit")
    assert trained["vivit"].train.num_steps == 30
    rows = result["rows"]
    assert rows["fine-tuned"]["latency_ms"] == 2.0 and rows["fine-tuned"]["params"] == 5
    assert rows["fine-tuned"]["steps"] == 3 and rows["original"]["latency_ms"] == 4.0


def test_a_given_run_to_prune_is_tested_and_fine_tuned_at_its_own_steps(monkeypatch, tmp_path):
    """``vjax bench prune --vivit=DIR``: the original row's steps are its checkpoint's (3000),
    not the recipe's (the table said 800), and the fine-tuning takes a tenth of them."""
    trained = _fake_prune_steps(monkeypatch, 3000)
    result = bench_prune.run_model("vivit", str(tmp_path), "data", None, source="runs/vivit",
                                   tiny=True)  # fmt: skip
    assert "vivit" not in trained  # given, not trained
    assert result["rows"]["original"]["steps"] == 3000
    assert (
        trained["vivit_finetuned"].train.num_steps == 300 == result["rows"]["fine-tuned"]["steps"]
    )


def test_prune_flags_reach_each_model(monkeypatch):
    seen = {}

    def fake_run_model(name, workdir, data_dir, steps, source, ratio, by, tiny, batch, repeats,
                       finetune_lr, distill, granularity):  # fmt: skip
        seen[name] = (by, granularity, finetune_lr, batch, repeats, distill, steps)
        return {}

    monkeypatch.setattr(bench_prune, "run_model", fake_run_model)
    monkeypatch.setattr(bench_prune, "publish", lambda *a: 0)
    argv = ["--models=r2plus1d", "--by=taylor", "--finetune_lr=0.01", "--batch=3",
            "--repeats=5", "--no-distill", "--r2plus1d_steps=9", "--out="]  # fmt: skip
    assert bench_prune.main(argv) == 0
    assert seen == {"r2plus1d": ("taylor", "unit", 0.01, 3, 5, False, 9)}


def test_prune_speeds_time_both_models_in_turn_at_the_given_batch_and_repeats(monkeypatch):
    import vjax.flops

    seen = []
    model = types.SimpleNamespace(clip_shape=(4, 8, 8, 3), config=None, module=None, variables=None)
    monkeypatch.setitem(sys.modules, "vjax.loaded", types.SimpleNamespace(load=lambda p: model))
    monkeypatch.setitem(sys.modules, "vjax.deploy.export",
                        types.SimpleNamespace(inference_function=lambda c, m, v: None))  # fmt: skip
    monkeypatch.setattr(vjax.bench_infer, "compiled_runner", lambda fn, clip: (fn, None))

    def fake_forms(runs, clip, batch, repeats, budget_s=math.inf):
        seen.append((sorted(runs), tuple(clip), batch, repeats, budget_s))
        return {form: {"latency_ms": 1.0} for form in runs}

    monkeypatch.setattr(vjax.bench_infer, "bench_forms", fake_forms)
    monkeypatch.setattr(vjax.flops, "count_params", lambda *a: 10)
    monkeypatch.setattr(vjax.flops, "count_macs", lambda *a: 2e9)
    speeds = bench_prune._speeds({"original": "a", "pruned": "b"}, batch=3, repeats=7)
    assert seen == [(["original", "pruned"], (4, 8, 8), 3, 7, math.inf)]
    assert speeds["pruned"] == {"params": 10, "gmacs": 2.0, "latency_ms": 1.0}
