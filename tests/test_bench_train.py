"""``vjax bench train``: spec parsing, the table, and the BENCHMARKS.md section it writes."""

import itertools

import pytest

from vjax.bench_train import ModelSpec, bench_model, main
from vjax.flops import count_macs, count_params
from vjax.models import build_model

TINY = "vivit:size=Ti/8x2,num_layers=1,hidden_size=32,num_heads=2,mlp_dim=64@4x16x16"


def test_model_spec_parses_fields_and_clip():
    spec = ModelSpec.parse(TINY)
    assert spec.config == {"name": "vivit", "size": "Ti/8x2", "num_layers": 1, "hidden_size": 32,
                           "num_heads": 2, "mlp_dim": 64}  # fmt: skip
    assert spec.clip == (4, 16, 16)
    with pytest.raises(ValueError, match="needs @TxHxW"):
        ModelSpec.parse("r3d_18")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--models", "r3d_18@1x2"], "the clip of 'r3d_18@1x2' must be TxHxW"),
        (["train", "--models", "vivit@2x0x16"], "the clip of 'vivit@2x0x16' must be TxHxW"),
        (["train", "--models", "foo@1x8x8"], "unknown model 'foo' in 'foo@1x8x8'"),
        (["train", "--peers", "--models", "vivit@2x32x32"], "did you mean hf_vivit"),
        (["infer", "--models", "hf_vivit@2x32"], "the clip of 'hf_vivit@2x32' must be TxHxW"),
        (["infer", "--models", "hf_vivit:size@2x32x32"], "'size' in 'hf_vivit:size@2x32x32' is "
         "not key=value"),
    ],
)  # fmt: skip
def test_a_bad_model_spec_is_one_line_before_anything_is_measured(argv, message, capsys):
    """Tracebacks (an unpacking error, torchvision's missing attribute, the registry's
    ValueError) before; each spec is now read, and its name checked, before the first one is
    measured."""
    from vjax.cli import main

    assert main(["bench", *argv, "--out="]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_measures_are_consistent_with_the_model():
    spec = ModelSpec.parse(TINY)
    row = bench_model(spec, batch=8, steps=2, dtype="float32")
    model = build_model(spec.config, 400)
    assert row["params_m"] * 1e6 == pytest.approx(count_params(model, (1, 4, 16, 16, 3)))
    macs = count_macs(model, (1, 4, 16, 16, 3))
    assert row["gflops"] == pytest.approx(macs / 1e9)
    # TFLOP/s = 3 passes x 2 FLOPs/MAC x MACs x clips / step time, shared over the devices.
    devices = 8  # tests/conftest.py: 8 host devices, the step is data parallel over them
    expected = 6 * macs * 8 / (row["step_ms"] / 1e3) / 1e12 / devices
    assert row["tflops"] == pytest.approx(expected)
    assert row["clips_per_s"] == pytest.approx(8 / (row["step_ms"] / 1e3))
    assert row["mfu"] is None and row["memory_gib"] > 0  # CPU: no known peak


def test_writes_its_section_and_keeps_the_others(tmp_path, capsys):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\n## vjax bench data\n\nkept\n")
    assert main(["--models", TINY, "--batch=8", "--steps=1", "--dtype=float32", "--remat=block",
                 "--param_dtype=bfloat16", f"--out={path}"]) == 0  # fmt: skip
    text = path.read_text()
    assert "## vjax bench data\n\nkept" in text and "## vjax bench train" in text
    table = [line for line in text.splitlines() if line.startswith("| vivit")]
    assert len(table) == 1 and table[0].count("|") == 11 and "remat=block" in table[0]
    assert "float32 compute / bfloat16 params, remat block" in text
    assert "Command: `vjax bench train --steps=1 --batch=8 --dtype=float32 --remat=block" in text
    assert "| model | clip | params (M)" in capsys.readouterr().out


def test_rounds_measure_each_runtime_in_turn_and_report_the_median(monkeypatch):
    """``--rounds=3``: vjax, eager, vjax, eager, ... each a fresh process; the table's clips/s
    is each side's median round, memory its highest, and every round's ratio is listed."""
    from vjax import bench_train

    calls = []
    speeds = {"vjax": iter([1.0, 3.0, 2.0]), "torch": iter([2.0, 2.0, 4.0])}

    def fake_child(runtime, spec, options, timeout, env, cores):
        calls.append(runtime)
        return {"clips_per_s": next(speeds[runtime]), "memory_gib": len(calls), "rss_gib": 0.5,
                "compile_s": 1.0, "gflops": 1.0, "first_loss": 6.0}  # fmt: skip

    monkeypatch.setattr(bench_train, "run_child", fake_child)
    options = bench_train.PeerOptions(batch=2, dtype="float32", steps=2, forms=("torch",),
                                      rounds=3)  # fmt: skip
    spec = ModelSpec.parse("hf_vivit:size=Ti@2x32x32")
    (row,) = bench_train.bench_peers([spec], options)
    assert calls == ["vjax", "torch"] * 3
    assert row["vjax"]["clips_per_s"] == 2.0 and row["torch"]["clips_per_s"] == 2.0
    assert row["vjax"]["round_clips_per_s"] == [1.0, 3.0, 2.0]
    assert row["torch"]["memory_gib"] == 6 and row["torch.compile"] == {}
    line = bench_train.round_ratios([row])
    assert line == "vjax clips/s ratio in each round: hf_vivit size=Ti / eager: 0.50, 1.50, 0.50"
    # The table's ratio pairs each round's sides: the median ratio 0.50, not 2.0 / 2.0.
    table_row = bench_train.format_peer_table([row], None).splitlines()[2]
    assert "| 2.00 | 2.00 | - | 0.50 | - |" in table_row


def test_rounds_past_the_deadline_keep_the_rounds_measured(monkeypatch):
    """A --deadline that passes after the first round: each side keeps its measured round."""
    from vjax import bench_train

    clock = itertools.chain([0.0, 1.0, 2.0], itertools.repeat(50.0))  # start, round 1, after
    monkeypatch.setattr(bench_train.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(bench_train, "run_child", lambda *a: {"clips_per_s": 1.0,
                        "memory_gib": 1.0, "rss_gib": 1.0})  # fmt: skip
    options = bench_train.PeerOptions(batch=2, dtype="float32", steps=2, forms=("torch",),
                                      rounds=2, deadline_s=10.0)  # fmt: skip
    (row,) = bench_train.bench_peers([ModelSpec.parse("hf_vivit:size=Ti@2x32x32")], options)
    assert row["vjax"]["clips_per_s"] == 1.0 and "round_clips_per_s" not in row["vjax"]
    assert row["torch"]["clips_per_s"] == 1.0


def test_a_side_a_round_short_is_paired_on_the_rounds_both_measured():
    """--rounds with a --deadline can leave torch.compile a round short of vjax: each ratio pairs
    the rounds both sides ran (the table stopped on zip(strict=True) before)."""
    from vjax import bench_train

    vjax = {"clips_per_s": 2.0, "round_clips_per_s": [1.0, 2.0, 4.0]}
    compiled = {"clips_per_s": 2.0, "round_clips_per_s": [2.0, 1.0]}
    assert bench_train.per_round_ratios(vjax, compiled) == [0.5, 2.0]
    assert bench_train.speed_ratio(vjax, compiled) == 1.25


def test_a_round_that_fails_fails_the_side():
    """A side that fails in any round is a failed side (its error), not a median of the rest."""
    from vjax.bench_train import merge_rounds

    ok = {"clips_per_s": 1.0, "memory_gib": 1.0}
    assert merge_rounds([ok, {"error": "exit 1: boom"}, ok]) == {"error": "exit 1: boom"}
    assert merge_rounds([ok]) == ok  # one round: as measured, no per-round list
    assert merge_rounds([{}, {}]) == {}  # not asked for


def test_rounds_below_one_is_one_error_line(capsys):
    from vjax.cli import main as vjax_main

    assert vjax_main(["bench", "train", "--peers", "--rounds=0", "--out="]) == 2
    assert capsys.readouterr().err == (
        "vjax bench: error: argument --rounds: takes a whole number of 1 or more, got '0' "
        "(vjax bench train --help lists the flags)\n"
    )


def test_the_peers_header_names_the_glibc_tunables_its_processes_ran_with(monkeypatch, tmp_path):
    """Every measuring process inherits ``GLIBC_TUNABLES``; the table says which, crediting
    vjax.huge_pages only for its own ``glibc.malloc.hugetlb=1``."""
    pytest.importorskip("torch", reason="the peers table names torch's version")
    from vjax import bench_train

    row = {"clips_per_s": 1.0, "memory_gib": 1.0, "rss_gib": 1.0, "compile_s": 1.0,
           "gflops": 1.0, "first_loss": 6.0}  # fmt: skip
    monkeypatch.setattr(bench_train, "run_child", lambda *a: row)
    for tunables, credited in [("glibc.malloc.hugetlb=1", True),
                               ("glibc.malloc.hugetlb=0", False)]:  # fmt: skip
        monkeypatch.setenv("GLIBC_TUNABLES", tunables)
        out = tmp_path / "BENCHMARKS.md"
        assert main(["--peers", "--models", "hf_vivit:size=Ti@2x32x32", "--forms=torch",
                     "--steps=1", f"--out={out}"]) == 0  # fmt: skip
        named = f"every one with GLIBC_TUNABLES={tunables}"
        assert named in out.read_text()
        assert (f"{named} (vjax.huge_pages)" in out.read_text()) is credited


def test_mfu_peaks_follow_the_part_and_the_compute_dtype():
    """An H100 PCIe is not the SXM part (756 vs 989 dense bf16 TFLOP/s), and float32 matmuls
    run on TF32 tensor cores (half the bf16 peak) on a GPU."""
    from types import SimpleNamespace

    from vjax.bench_train import peak_tflops

    def peak(kind, dtype="bfloat16"):
        return peak_tflops(SimpleNamespace(device_kind=kind), dtype)

    assert peak("NVIDIA H100 80GB HBM3") == 989.0 and peak("NVIDIA H100 PCIe") == 756.0
    assert peak("NVIDIA H200", "float32") == 494.0 and peak("TPU v5 lite") == 197.0
    assert peak("TPU v5") == 459.0 == peak("TPU v5p")  # v5p: "TPU v5" on a TPU VM (audit 21)
    assert peak("cpu") is None
