"""``vjax bench train``: spec parsing, the table, and the BENCHMARKS.md section it writes."""

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
    assert "| model | clip | params (M)" in capsys.readouterr().out
