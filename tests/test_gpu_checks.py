"""The GPU script of issue 19 (tests/gpu_checks.py) runs its CPU smoke mode: the same code at
toy sizes, here on the 8 test devices so its data-sharded padded-attention check runs too. A GPU
session's few minutes should not be spent finding that the script broke."""

import gpu_checks


def test_the_gpu_checks_run_at_toy_sizes_on_cpu(capsys, monkeypatch):
    # The script sets JAX_PLATFORMS and puts the repository on sys.path: both undone afterwards.
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.syspath_prepend(gpu_checks.REPO)
    assert gpu_checks.main(["--cpu-smoke"]) == 0
    out = capsys.readouterr().out
    assert "x 8" in out  # all 8 host devices: the sharded check ran
    assert out.count("[ok] xla padded attention") == 2
    assert "[ok] padded xla under data=8 sharding" in out
    assert "0 restored arrays differ from the saved state" in out
    assert "all checks passed" in out
