"""``vjax bench train``: training-step speed and memory of models at their published input sizes.

For each model: parameters, forward GFLOPs (multiply-accumulates, :mod:`vjax.flops`), compile
seconds, median step time, clips/s, achieved TFLOP/s (a training step counted as 3 forward
passes, 2 FLOPs per multiply-accumulate), MFU against the device's peak where it is known,
and peak device memory. Inputs are synthetic uint8 clips, so only the model and the step are
measured (``vjax bench data`` measures the input pipeline). Data-parallel over all local
devices. Imports no TensorFlow: it runs where only JAX is installed.

    vjax bench train --models "vivit:size=B/16x2@32x224x224" "r2plus1d_18@16x112x112" \\
        --batch=8 --dtype=bfloat16
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from vjax import parallel
from vjax.bench import update_benchmarks
from vjax.flops import count_macs
from vjax.models import build_model
from vjax.optim import make_optimizer
from vjax.step import make_init_state, make_train_step

DEFAULT_MODELS = (
    "vivit:size=B/16x2@32x224x224",
    "timesformer:size=B/16@8x224x224",
    "videomae:size=B/16x2@16x224x224",
    "r2plus1d_18@16x112x112",
    "x3d_m@16x224x224",
    "slowfast_r50@32x224x224",
)
# Dense bf16 peak TFLOP/s per device (vendor figures, without sparsity).
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "TPU v4": 275.0, "TPU v5e": 197.0,
               "TPU v5p": 459.0, "TPU v6e": 918.0}  # fmt: skip
OPTIMIZER = {"name": "adamw", "lr": 1e-3, "end_lr": 1e-5, "warmup_steps": 10, "b1": 0.9,
             "b2": 0.999, "weight_decay": 0.05, "grad_clip_norm": 1.0}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """``name[:field=value,...]@TxHxW``: a registry model config and the clip it runs on."""

    config: dict[str, Any]
    clip: tuple[int, int, int]

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        model, sep, clip = text.partition("@")
        if not sep:
            raise ValueError(f"model spec {text!r} needs @TxHxW, e.g. 'r2plus1d_18@16x112x112'")
        name, _, fields = model.partition(":")
        config: dict[str, Any] = {"name": name}
        for item in filter(None, fields.split(",")):
            key, eq, value = item.partition("=")
            if not eq:
                raise ValueError(f"model field {item!r} in {text!r} is not key=value")
            try:
                config[key] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                config[key] = value  # a bare string such as B/16x2
        frames, height, width = (int(v) for v in clip.split("x"))
        return cls(config, (frames, height, width))

    @property
    def label(self) -> str:
        fields = ",".join(f"{k}={v}" for k, v in self.config.items() if k != "name")
        return self.config["name"] + (f" {fields}" if fields else "")


def peak_tflops(device: jax.Device) -> float | None:
    kind = device.device_kind
    return next((v for k, v in PEAK_TFLOPS.items() if k.lower() in kind.lower()), None)


def peak_memory_bytes(device: jax.Device, compiled: Any) -> tuple[float, str]:
    """Peak bytes in use on the device (GPU/TPU allocator) or, where the runtime keeps no
    statistics (CPU), XLA's static estimate for the step (arguments + outputs + temporaries)."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        return float(stats["peak_bytes_in_use"]), "allocator peak"
    m = compiled.memory_analysis()
    return float(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes), (
        "XLA estimate"
    )


def bench_model(
    spec: ModelSpec, batch: int, steps: int, dtype: str, num_classes: int = 400
) -> dict[str, Any]:
    """Compiles and times the sharded train step of one model on synthetic clips."""
    model = build_model(spec.config, num_classes, dtype)
    shape = (batch, *spec.clip, 3)
    model.check_input(shape)
    mesh = parallel.make_mesh([("data", -1)], jax.local_devices())
    rules = (("batch", "data"),)
    tx = make_optimizer(OPTIMIZER, 1000)

    init = make_init_state(model, tx, shape[1:])
    abstract = jax.eval_shape(init, jax.random.key(0))
    with nn.logical_axis_rules(rules):  # every other logical name stays replicated
        shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh, rules)
    step = make_train_step(model, tx, mean=(0.45,) * 3, std=(0.225,) * 3)
    batch_sharding = parallel.batch_sharding(mesh, rules)
    jitted = jax.jit(
        step,
        in_shardings=(shardings, batch_sharding, parallel.replicated(mesh)),
        out_shardings=(shardings, parallel.replicated(mesh)),
        donate_argnums=0,
    )
    rng = np.random.default_rng(0)
    data = parallel.global_batch(
        {
            "video": rng.integers(0, 256, shape, dtype=np.uint8),
            "label": rng.integers(0, num_classes, (batch,), dtype=np.int32),
        },
        batch_sharding,
    )
    key = jax.random.key(1)
    with jax.set_mesh(mesh):
        state = jax.jit(lambda k: nn.meta.unbox(init(k)), out_shardings=shardings)(key)
        start = time.perf_counter()
        compiled = jitted.lower(state, data, key).compile()
        compile_s = time.perf_counter() - start
        state, metrics = compiled(state, data, key)  # warm-up
        jax.block_until_ready(metrics)
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            state, metrics = compiled(state, data, key)
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    macs = count_macs(model, (1, *shape[1:]))
    tflops = 3 * 2 * macs * batch / step_s / 1e12
    device = jax.local_devices()[0]
    peak = peak_tflops(device)
    memory, memory_kind = peak_memory_bytes(device, compiled)
    return {
        "model": spec.label,
        "clip": "x".join(map(str, spec.clip)),
        "params_m": sum(x.size for x in jax.tree.leaves(state.params)) / 1e6,
        "gflops": macs / 1e9,
        "compile_s": compile_s,
        "step_ms": 1e3 * step_s,
        "clips_per_s": batch / step_s,
        "tflops": tflops / mesh.size,  # per device
        "mfu": tflops / mesh.size / peak if peak else None,
        "memory_gib": memory / 2**30,
        "memory_kind": memory_kind,
    }


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table of :func:`bench_model` results."""
    header = (
        "| model | clip | params (M) | GFLOPs/clip | compile (s) | step (ms) | clips/s "
        "| TFLOP/s/device | MFU | peak memory (GiB) |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [header]
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        lines.append(
            f"| {r['model']} | {r['clip']} | {r['params_m']:.1f} | {r['gflops']:.2f} "
            f"| {r['compile_s']:.1f} | {r['step_ms']:.1f} | {r['clips_per_s']:.2f} "
            f"| {r['tflops']:.2f} | {mfu} | {r['memory_gib']:.2f} ({r['memory_kind']}) |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vjax bench train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--batch", type=int, default=8, help="global batch (clips per step)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps after a warm-up")
    parser.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
    parser.add_argument("--out", default="BENCHMARKS.md", help="'' to write nothing")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    specs = [ModelSpec.parse(m) for m in args.models]
    rows = []
    for spec in specs:
        rows.append(bench_model(spec, args.batch, args.steps, args.dtype))
        print(f"measured {spec.label}", flush=True)
    devices = jax.local_devices()
    setup = (
        f"{len(devices)} x {devices[0].device_kind} ({jax.default_backend()}), jax "
        f"{jax.__version__}, batch {args.batch}, {args.dtype} compute / float32 params, AdamW, "
        f"median of {args.steps} steps. Command: `vjax bench train --batch={args.batch} "
        f"--dtype={args.dtype} --models {' '.join(args.models)}`"
    )
    table = format_table(rows)
    print(f"{setup}\n\n{table}")
    if args.out:
        update_benchmarks(args.out, "vjax bench train", f"{setup}\n\n{table}\n")
    return 0
