"""The GPU script of issue 19 (tests/gpu_checks.py) runs its CPU smoke mode: the same code at
toy sizes, here on the 8 test devices so its data-sharded padded-attention check runs too, and
without the packages the GPU machine's image lacks (ml_collections, TensorFlow, ...). A GPU
session's few minutes should not be spent finding that the script broke."""

import subprocess
import sys

import gpu_checks
from conftest import NOT_ON_GPU_IMAGE


def test_the_gpu_checks_run_at_toy_sizes_on_cpu_without_the_data_stack(gpu_image_env):
    # The environment really hides them: each import fails, in one process.
    tries = "".join(
        f"try:\n    import {name}\n    print('{name}')\nexcept ModuleNotFoundError:\n    pass\n"
        for name in NOT_ON_GPU_IMAGE
    )
    found = subprocess.run([sys.executable, "-c", tries], env=gpu_image_env, capture_output=True)
    assert found.returncode == 0 and found.stdout == b"", found
    script = [sys.executable, f"{gpu_checks.REPO}/tests/gpu_checks.py", "--cpu-smoke"]
    done = subprocess.run(script, env=gpu_image_env, capture_output=True, text=True)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr[-3000:]
    assert "x 8" in out  # all 8 host devices: the sharded check ran
    assert out.count("[ok] xla padded attention") == 2
    assert "[ok] padded xla under data=8 sharding" in out
    assert "0 restored arrays differ from the saved state" in out
    assert "all checks passed" in out
