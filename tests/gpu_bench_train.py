"""Issue 14's GPU table in one command: ``vjax bench train --peers`` at the published sizes on
one H100/H200 (ViViT-B/16x2 32x224x224 model 1, VideoMAE-B 16x224x224, TimeSformer-B
8x224x224 divided, R(2+1)D-18 and R3D-18 16x112x112; bf16, batch 16), written to
BENCHMARKS.md, then checks that every vjax row ran and that cuDNN's fused attention is the
kernel vjax's transformer steps compiled to (its custom call in the compiled HLO).

The run is bounded: 5 s of timed steps per measurement, 240 s per process, and no process
starts after 480 s (a row then says so), so it ends in about 8 minutes whatever compiles
slowly; ``torch.compile`` runs for VideoMAE and R(2+1)D, the two targets that name it.

    python tests/gpu_bench_train.py              # on the GPU machine; exit 1 if a check fails
    python tests/gpu_bench_train.py --cpu-smoke  # the same code at toy sizes on CPU, eager
                                                 # only, no cuDNN check: proves it runs
                                                 # (writes no BENCHMARKS.md unless --out=F)

Extra arguments go to ``vjax bench train`` (e.g. ``--out=`` to write nothing, ``--batch=8``).
Not collected by pytest (not a ``test_*.py`` file).

Both GPU scripts in one device call (at most 600 s; the machine is given back 30 s after a
call, and a fresh start costs minutes of the session's 15): issue 19's checks first, bounded,
then this table in the time left; the outputs and BENCHMARKS.md come back under ``$OUT``.
Both ran under the image's versions (Python 3.12, jax 0.11.2, torch 2.11, transformers 5.17)
in their CPU smoke modes; the image has no ml_collections or TensorFlow, and needs none.

    export PYTHONUNBUFFERED=1; timeout 170 python3 tests/gpu_checks.py 2>&1 | tee $OUT/checks.log;
    python3 tests/gpu_bench_train.py --deadline=$((560 - SECONDS)) 2>&1 | tee $OUT/bench.log;
    cp BENCHMARKS.md $OUT/
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPU_ARGS = ["--peers", "--steps=10", "--budget=5", "--timeout=240", "--deadline=480",
            "--compile_models=hf_videomae,r2plus1d_18"]  # fmt: skip
TINY_HF = "num_hidden_layers=1,hidden_size=32,num_attention_heads=2,intermediate_size=64"
SMOKE_ARGS = ["--peers", "--models", f"hf_vivit:{TINY_HF}@4x32x32", "r3d_18@2x16x16", "--batch=2",
              "--forms=torch", "--steps=1", "--budget=0", "--deadline=600", "--out="]  # fmt: skip


def problems(rows: Sequence[dict[str, Any]], gpu: bool) -> list[str]:
    """What the run failed to show: a vjax row that did not run, a first-step loss that
    differs from the eager peer's (same weights and batch: bf16 tolerance on GPU) and, on GPU,
    a transformer whose compiled step holds no cuDNN fused-attention call."""
    found = []
    for row in rows:
        vjax, eager = row["vjax"], row.get("torch", {})
        if "error" in vjax:
            found.append(f"{row['model']}: vjax did not run: {vjax['error']}")
            continue
        if "first_loss" in eager:
            a, b = vjax["first_loss"], eager["first_loss"]
            if abs(a - b) > (2e-2 if gpu else 1e-4) * abs(b):
                found.append(f"{row['model']}: first-step loss {a:.5f} (vjax) != {b:.5f} (torch)")
        if gpu and row["model"].startswith("hf_") and not vjax["fused_attention_calls"]:
            found.append(f"{row['model']}: no cuDNN fused attention in vjax's compiled step")
    return found


def run(argv: Sequence[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """The table's rows and :func:`problems` of a run with ``argv`` (``--cpu-smoke``: the
    toy CPU run) plus the fixed GPU or smoke arguments."""
    argv = list(argv)
    smoke = "--cpu-smoke" in argv
    if smoke:
        argv.remove("--cpu-smoke")
        os.environ["JAX_PLATFORMS"] = "cpu"
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    from vjax import bench_train

    args, parser = bench_train.parse_args([*(SMOKE_ARGS if smoke else GPU_ARGS), *argv])
    rows = bench_train.run_peers(args, parser)
    return rows, problems(rows, gpu=not smoke)


def main(argv: Sequence[str] | None = None) -> int:
    _, found = run(sys.argv[1:] if argv is None else argv)
    for line in found:
        print(f"FAILED {line}")
    print("all checks passed" if not found else f"{len(found)} check(s) failed")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
