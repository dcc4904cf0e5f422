"""``vjax bench train``: training-step speed and memory of models at their published input sizes.

For each model: parameters, forward GFLOPs (multiply-accumulates, :mod:`vjax.flops`), compile
seconds, median step time, clips/s, achieved TFLOP/s (a training step counted as 3 forward
passes, 2 FLOPs per multiply-accumulate), MFU against the device's peak where it is known,
and peak device memory. Inputs are synthetic uint8 clips, so only the model and the step are
measured (``vjax bench data`` measures the input pipeline). Data-parallel over all local
devices. Imports no TensorFlow: it runs where only JAX is installed.

``--peers``: each model beside its PyTorch peer (:mod:`vjax.bench_peers`: Hugging Face
ViViT / VideoMAE / TimeSformer, torchvision R(2+1)D-18 / R3D-18), eager and
``torch.compile``, on the same configuration, clip, batch and optimiser, every runtime in its
own process (memory and threads unshared; on a GPU, JAX's preallocation would otherwise
starve torch); the vjax twin starts from the peer's converted weights, so both first-step
losses must agree. One table: clips/s, ratios, TFLOP/s, MFU, peak memory, compile seconds.

    vjax bench train --models "vivit:size=B/16x2@32x224x224" "r2plus1d_18@16x112x112" \\
        --batch=8 --dtype=bfloat16
    vjax bench train --peers      # CPU: ViViT-Ti, VideoMAE-Ti, R(2+1)D-18; GPU: issue 14's table
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vjax import parallel
from vjax.bench import budget_words, device_name, update_benchmarks
from vjax.bench_peers import (
    MEAN,
    OPTIMIZER,
    PEERS,
    STD,
    ModelSpec,
    has_peer,
    run_child,
    synthetic_batch,
    time_calls,
)
from vjax.compile_options import compiler_options
from vjax.errors import (
    ArgumentParser,
    non_negative_float,
    non_negative_int,
    optional_output_file,
    positive_int,
)
from vjax.flops import count_macs
from vjax.huge_pages import ENV, tunable_value
from vjax.models import available_models, build_model
from vjax.models.layers import REMAT_POLICIES
from vjax.optim import make_optimizer
from vjax.step import (
    PARAM_DTYPES,
    TrainState,
    cast_floating,
    check_param_dtype,
    make_init_state,
    make_train_step,
)

DEFAULT_MODELS = (
    "vivit:size=B/16x2@32x224x224",
    "timesformer:size=B/16@8x224x224",
    "videomae:size=B/16x2@16x224x224",
    "r2plus1d_18@16x112x112",
    "x3d_m@16x224x224",
    "slowfast_r50@32x224x224",
)
# `--peers` defaults: the issue's CPU row (Ti transformers, float32) and its GPU table.
CPU_PEERS = ("hf_vivit:size=Ti@8x112x112", "hf_videomae:size=Ti@8x112x112",
             "r2plus1d_18@8x112x112")  # fmt: skip
GPU_PEERS = ("hf_vivit:size=B@32x224x224", "hf_videomae:size=B@16x224x224",
             "hf_timesformer:size=B@8x224x224", "r2plus1d_18@16x112x112",
             "r3d_18@16x112x112")  # fmt: skip
DEFAULT_CPU_BATCH, DEFAULT_GPU_BATCH = 4, 16
DEFAULT_BUDGET_S = 30.0
# The custom call of cuDNN's fused attention in XLA:GPU's compiled HLO.
CUDNN_ATTENTION = 'custom_call_target="__cudnn$fmha'
# Dense peak TFLOP/s per device kind (vendor figures, without sparsity; first match wins: a
# PCIe or NVL H100 before the SXM part), for bfloat16 and for float32 (GPUs: the TF32 tensor
# cores XLA's default float32 matmuls run on; TPUs: their default float32 matmuls run
# bfloat16 passes).
PEAK_TFLOPS = {
    "H100 PCIe": (756.0, 378.0),
    "H100 NVL": (835.0, 418.0),
    "H100": (989.0, 494.0),
    "H200": (989.0, 494.0),
    "A100": (312.0, 156.0),
    "TPU v4": (275.0, 275.0),
    "TPU v5e": (197.0, 197.0),
    "TPU v5 lite": (197.0, 197.0),
    "TPU v5p": (459.0, 459.0),
    "TPU v5": (459.0, 459.0),  # v5p as a TPU VM names it (after "TPU v5 lite": first match)
    "TPU v6e": (918.0, 918.0),
    "TPU v6 lite": (918.0, 918.0),
}


VJAX_DEFAULTS = {"remat": "none", "param_dtype": "float32"}


def with_remat(spec: ModelSpec, remat: str) -> ModelSpec:
    """``spec`` with ``model.remat`` set (unchanged for ``none``, so any model takes it)."""
    return spec if remat == "none" else ModelSpec({**spec.config, "remat": remat}, spec.clip)


def peak_tflops(device: jax.Device, dtype: str = "bfloat16") -> float | None:
    """The device's dense peak TFLOP/s for ``dtype`` compute (None for an unknown kind)."""
    kind = device.device_kind.lower()
    peaks = next((v for k, v in PEAK_TFLOPS.items() if k.lower() in kind), None)
    return None if peaks is None else peaks[0 if dtype == "bfloat16" else 1]


def peak_memory_bytes(device: jax.Device, compiled: Any) -> tuple[float, str]:
    """Peak bytes in use on the device (GPU/TPU allocator) or, where the runtime keeps no
    statistics (CPU), XLA's static estimate for the step: arguments + outputs + temporaries,
    less the outputs written over donated arguments (the train state, counted once)."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        return float(stats["peak_bytes_in_use"]), "allocator peak"
    m = compiled.memory_analysis()
    live = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
    return float(live + m.temp_size_in_bytes), "XLA estimate"


@dataclasses.dataclass
class CompiledStep:
    """One model's sharded train step, compiled, with its state and a synthetic batch."""

    model: nn.Module
    mesh: jax.sharding.Mesh
    compiled: Any
    state: Any
    data: dict[str, jax.Array]
    key: jax.Array
    compile_s: float

    def __call__(self) -> dict[str, jax.Array]:
        """One step (the state advances); its metrics once they are computed."""
        with jax.set_mesh(self.mesh):
            self.state, metrics = self.compiled(self.state, self.data, self.key)
        return jax.block_until_ready(metrics)


def compile_step(
    model_config: dict[str, Any],
    clip: tuple[int, int, int],
    batch: int,
    dtype: str,
    num_classes: int = 400,
    variables: dict[str, Any] | None = None,
    param_dtype: str = "float32",
    devices: Sequence[jax.Device] | None = None,
) -> CompiledStep:
    """The train step of ``model_config`` data-parallel over ``devices`` (all local ones by
    default), compiled (seconds measured), on :func:`vjax.bench_peers.synthetic_batch`;
    ``variables`` (``{"params": ..., **model_state}``, e.g. converted from a PyTorch peer)
    replace the random initial ones; parameters stored as ``param_dtype``."""
    model = build_model(model_config, num_classes, dtype)
    shape = (batch, *clip, 3)
    model.check_input(shape)
    mesh = parallel.make_mesh([("data", -1)], list(devices or jax.local_devices()))
    rules = (("batch", "data"),)
    tx = make_optimizer(OPTIMIZER, 1000)

    init = make_init_state(model, tx, shape[1:], param_dtype)
    if variables is not None:  # noqa: SIM108
        given = dict(variables)
        params = cast_floating(given.pop("params"), check_param_dtype(param_dtype))

        def init(key: jax.Array) -> TrainState:
            return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), given)

    abstract = jax.eval_shape(init, jax.random.key(0))
    with nn.logical_axis_rules(rules):  # every other logical name stays replicated
        shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh, rules)
    step = make_train_step(model, tx, mean=MEAN, std=STD)
    batch_sharding = parallel.batch_sharding(mesh, rules)
    jitted = jax.jit(
        step,
        in_shardings=(shardings, batch_sharding, parallel.replicated(mesh)),
        out_shardings=(shardings, parallel.replicated(mesh)),
        donate_argnums=0,
        compiler_options=compiler_options(),
    )
    data = parallel.global_batch(synthetic_batch(batch, clip), batch_sharding)
    key = jax.random.key(1)
    with jax.set_mesh(mesh):
        state = jax.jit(lambda k: nn.meta.unbox(init(k)), out_shardings=shardings)(key)
        start = time.perf_counter()
        compiled = jitted.lower(state, data, key).compile()
    return CompiledStep(model, mesh, compiled, state, data, key, time.perf_counter() - start)


def bench_model(
    spec: ModelSpec,
    batch: int,
    steps: int,
    dtype: str,
    num_classes: int = 400,
    budget_s: float = math.inf,
    variables: dict[str, Any] | None = None,
    param_dtype: str = "float32",
    devices: Sequence[jax.Device] | None = None,
) -> dict[str, Any]:
    """Compiles and times the sharded train step of one model on synthetic clips: a warm-up
    step (its loss is ``first_loss``), then up to ``steps`` timed ones (at least 2 once
    ``budget_s`` seconds have passed). ``variables``: initial ones (random when None);
    ``devices``: the data-parallel ones (all local ones by default)."""
    step = compile_step(
        spec.config, spec.clip, batch, dtype, num_classes, variables, param_dtype, devices
    )
    first_loss = float(step()["loss"])  # warm-up
    step_s = statistics.median(time_calls(step, steps, budget_s, least=min(2, steps)))
    mesh, compiled = step.mesh, step.compiled
    macs = count_macs(step.model, (1, *spec.clip, 3))
    tflops = 3 * 2 * macs * batch / step_s / 1e12
    device = mesh.devices.flat[0]  # one of those it ran on
    peak = peak_tflops(device, dtype)
    memory, memory_kind = peak_memory_bytes(device, compiled)
    return {
        "first_loss": first_loss,
        "model": spec.label,
        "clip": "x".join(map(str, spec.clip)),
        "params_m": sum(x.size for x in jax.tree.leaves(step.state.params)) / 1e6,
        "gflops": macs / 1e9,
        "compile_s": step.compile_s,
        "step_ms": 1e3 * step_s,
        "clips_per_s": batch / step_s,
        "tflops": tflops / mesh.size,  # per device
        "mfu": tflops / mesh.size / peak if peak else None,
        "memory_gib": memory / 2**30,
        "memory_kind": memory_kind,
        "fused_attention_calls": compiled.as_text().count(CUDNN_ATTENTION),
        "device": f"{mesh.size} x {device.device_kind} ({jax.default_backend()})",
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


def _cell(values: Sequence[float | None], fmt: str) -> str:
    """``a / b / c`` of the values a row has (``-`` where one is missing)."""
    return " / ".join("-" if v is None else format(v, fmt) for v in values)


def per_round_ratios(vjax: dict[str, Any], peer: dict[str, Any]) -> list[float]:
    """vjax's clips/s over the peer's in each round (``--rounds``; the two sides of a round ran
    one after another) that both sides measured (a ``--deadline`` can stop one side a round
    early); empty without rounds."""
    rounds = vjax.get("round_clips_per_s"), peer.get("round_clips_per_s")
    return [a / b for a, b in zip(*rounds, strict=False)] if rounds[0] and rounds[1] else []


def speed_ratio(vjax: dict[str, Any], peer: dict[str, Any]) -> float:
    """vjax's clips/s over the peer's: with rounds, the median of each round's ratio, else of
    the two speeds."""
    ratios = per_round_ratios(vjax, peer)
    return statistics.median(ratios) if ratios else vjax["clips_per_s"] / peer["clips_per_s"]


def format_peer_table(rows: Sequence[dict[str, Any]], peak: float | None) -> str:
    """The ``--peers`` table: per model vjax beside PyTorch eager and ``torch.compile``; a
    side that failed shows ``failed [n]`` and the reasons follow the table."""
    lines = [
        "| model | clip | batch | vjax clips/s | torch eager clips/s | torch.compile clips/s "
        "| vjax / eager | vjax / compiled | TFLOP/s vjax / eager / compiled | MFU % vjax / "
        "eager / compiled | peak memory GiB vjax / eager / compiled | vjax compile s / torch "
        "first step s: vjax / eager / compiled |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes: list[str] = []

    def speed(side: dict[str, Any]) -> str:
        if "error" not in side:
            return f"{side['clips_per_s']:.2f}"
        notes.append(side["error"])
        return f"failed [{len(notes)}]"

    oks = []
    for r in rows:
        sides = [r["vjax"], r["torch"], r["torch.compile"]]
        ok = [s if "error" not in s and s else None for s in sides]
        oks.append(ok)
        gflops = r["vjax"].get("gflops")
        tflops = [6 * gflops * s["clips_per_s"] / 1e3 if s and gflops else None for s in ok]
        mfu = [100 * t / peak if t and peak else None for t in tflops]
        ratio = [speed_ratio(ok[0], s) if ok[0] and s else None for s in ok[1:]]
        cells = [speed(s) if s else "-" for s in sides]
        lines.append(
            f"| {r['model']} | {r['clip']} | {r['batch']} | {' | '.join(cells)} "
            f"| {_cell(ratio[:1], '.2f')} | {_cell(ratio[1:], '.2f')} | {_cell(tflops, '.3g')} "
            f"| {_cell(mfu, '.1f')} | {_cell([s and s['memory_gib'] for s in ok], '.2f')} "
            f"| {_cell([s and s['compile_s'] for s in ok], '.1f')} |"
        )
    lines += [""] + [f"[{i}] {why}" for i, why in enumerate(notes, 1)] if notes else []
    losses = [
        f"{r['model']}: {_cell([s and s.get('first_loss') for s in ok], '.5f')}"
        for r, ok in zip(rows, oks, strict=True)
        if ok[0] and "first_loss" in ok[0]
    ]
    if losses:
        lines += ["", "First-step loss (same weights and batch, before any update) vjax / eager "
                  "/ compiled: " + "; ".join(losses)]  # fmt: skip
    return "\n".join(lines)


@dataclasses.dataclass
class PeerOptions:
    """How ``--peers`` measures: the step (batch, dtype), timing (``steps`` at most,
    ``budget_s`` per measurement), which PyTorch forms (``torch.compile`` only for the model
    names in ``compile_models``, all when empty) and the limits: ``timeout_s`` per process,
    ``deadline_s`` for the whole run (processes due after it become rows saying so);
    ``rounds`` > 1 measures every runtime that many times, in turn, each time in a fresh
    process, so that a machine whose speed drifts during the run moves every side alike."""

    batch: int
    dtype: str
    steps: int
    budget_s: float = math.inf
    forms: Sequence[str] = ("torch", "torch.compile")
    compile_models: Sequence[str] = ()
    timeout_s: float | None = None
    deadline_s: float | None = None
    env: dict[str, str] | None = None
    vjax_flags: Sequence[str] = ()  # --remat / --param_dtype for the vjax processes
    cores: int = 0  # > 0: every process pinned to cores 0..cores-1 (taskset), torch as many
    rounds: int = 1

    def wants(self, runtime: str, spec: ModelSpec) -> bool:
        if runtime == "vjax":
            return True
        compiled = not self.compile_models or spec.name in self.compile_models
        return runtime in self.forms and has_peer(spec) and (runtime == "torch" or compiled)


RUNTIMES = ("vjax", "torch", "torch.compile")


def bench_peers(specs: Sequence[ModelSpec], options: PeerOptions) -> list[dict[str, Any]]:
    """Per spec: vjax's train step and each PyTorch form (``torch``, ``torch.compile``), each
    in a fresh process (:func:`vjax.bench_peers.run_child`), in that order, ``rounds`` times
    (:func:`merge_rounds`)."""
    o = options
    flags = [f"--batch={o.batch}", f"--dtype={o.dtype}", f"--steps={o.steps}",
             f"--budget={o.budget_s}"]  # fmt: skip
    end = time.perf_counter() + (o.deadline_s or math.inf)
    rows = []
    for spec in specs:
        measured: dict[str, list[dict[str, Any]]] = {runtime: [] for runtime in RUNTIMES}
        for _ in range(o.rounds):
            for runtime in RUNTIMES:
                left = end - time.perf_counter()
                if not o.wants(runtime, spec):
                    result = {}
                elif left <= 0 and measured[runtime]:
                    continue  # past the --deadline: the rounds already measured stand
                elif left <= 0:
                    result = {"error": f"not run: the --deadline ({o.deadline_s:g} s) passed"}
                else:
                    timeout = min(o.timeout_s or math.inf, left)
                    given = [*flags, *o.vjax_flags] if runtime == "vjax" else flags
                    result = run_child(
                        runtime, spec, given, None if timeout == math.inf else timeout, o.env,
                        o.cores,
                    )  # fmt: skip
                if runtime == "vjax" and "error" not in result and jax.default_backend() == "cpu":
                    result["memory_gib"] = result["rss_gib"]  # like torch's on CPU
                measured[runtime].append(result)
                print(f"measured {spec.label} {runtime}: {result}", flush=True)
        row = {"model": spec.label, "clip": "x".join(map(str, spec.clip)), "batch": o.batch}
        rows.append(row | {runtime: merge_rounds(measured[runtime]) for runtime in RUNTIMES})
    return rows


def merge_rounds(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One runtime's rounds as one table entry: the first round's (its other timings too),
    with clips/s the median over the rounds (each round's kept, in order, as
    ``round_clips_per_s``) and memory the highest; the first failed round's error if any
    failed (a side that fails sometimes is not a measurement); ``{}`` for a side not asked for."""
    if not results or not results[0]:
        return {}
    failed = [r for r in results if "error" in r]
    if failed:
        return failed[0]
    speeds = [r["clips_per_s"] for r in results]
    merged = {**results[0], "clips_per_s": statistics.median(speeds)}
    merged["memory_gib"] = max(r["memory_gib"] for r in results)
    return merged | ({"round_clips_per_s": speeds} if len(results) > 1 else {})


def round_ratios(rows: Sequence[dict[str, Any]]) -> str:
    """One line, where rows have several rounds: vjax / eager (and / compiled) in each round,
    each ratio between processes that ran one after another."""
    parts = []
    for r in rows:
        for form, label in (("torch", "eager"), ("torch.compile", "compiled")):
            if ratios := per_round_ratios(r["vjax"], r[form]):
                parts.append(f"{r['model']} / {label}: {', '.join(f'{q:.2f}' for q in ratios)}")
    return "vjax clips/s ratio in each round: " + "; ".join(parts) if parts else ""


def fused_attention_note(rows: Sequence[dict[str, Any]]) -> str:
    """One line: how many cuDNN fused-attention custom calls each vjax step compiled to."""
    counts = [f"{r['model']}: {r['vjax']['fused_attention_calls']}" for r in rows
              if "fused_attention_calls" in r["vjax"]]  # fmt: skip
    return "cuDNN fused attention calls in vjax's compiled step: " + "; ".join(counts)


def run_peers(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[dict[str, Any]]:
    """``vjax bench train --peers``: the comparison table, printed and written to ``--out``;
    returns its rows. This process only reads the device, so that the measuring processes
    (given ``args.env``, the environment as it was) get all its memory."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # before jax's backend
    gpu = jax.default_backend() == "gpu"
    models = args.models or list(GPU_PEERS if gpu else CPU_PEERS)
    forms = [f for f in args.forms.split(",") if f]
    if set(forms) - {"torch", "torch.compile"}:
        parser.error(f"--forms takes torch and/or torch.compile, got {args.forms!r}")
    options = PeerOptions(
        batch=args.batch or (DEFAULT_GPU_BATCH if gpu else DEFAULT_CPU_BATCH),
        dtype=args.dtype or ("bfloat16" if gpu else "float32"),
        steps=args.steps,
        budget_s=args.budget or math.inf,
        forms=forms,
        compile_models=[m for m in args.compile_models.split(",") if m],
        timeout_s=args.timeout or None,
        deadline_s=args.deadline or None,
        env=args.env,
        cores=args.cores,
        vjax_flags=[f"--remat={args.remat}", f"--param_dtype={args.param_dtype}"],
        rounds=args.rounds,
    )
    specs = [ModelSpec.parse(m, PEERS) for m in models]  # every one, before any is measured
    begin = time.perf_counter()
    rows = bench_peers(specs, options)
    minutes = (time.perf_counter() - begin) / 60
    import torch

    device = jax.local_devices()[0]
    o = options
    cores = f"pinned to {o.cores} of " if o.cores else ""
    threads = f"{cores}{os.cpu_count()} CPU cores, " if not gpu else ""
    limits = [f" --{k}={getattr(args, k):g}" for k in ("timeout", "deadline", "cores")
              if getattr(args, k)]  # fmt: skip
    limits += [f" --{k}={getattr(args, k)}" for k, default in VJAX_DEFAULTS.items()
               if getattr(args, k) != default]  # fmt: skip
    limits += [f" --rounds={o.rounds}"] if o.rounds > 1 else []
    environ = o.env if o.env is not None else os.environ
    tunables = environ.get(ENV)
    credit = " (vjax.huge_pages)" if tunable_value(environ) == "1" else ""
    in_turn = (f", every one with {ENV}={tunables}{credit}" if tunables else "") + (
        f", {o.rounds} rounds in turn (vjax, eager, compiled, then again), clips/s the "
        f"median over them"
        if o.rounds > 1
        else ""
    )
    extra = "".join(limits) + (
        f" --compile_models={args.compile_models}" if o.compile_models else ""
    )
    setup = (
        f"{device_name(device)} ({jax.default_backend()}), {threads}jax {jax.__version__}, torch "
        f"{torch.__version__}; batch {o.batch}, {o.dtype} compute (torch: "
        f"{'autocast' if o.dtype == 'bfloat16' else 'float32'}), {args.param_dtype} vjax "
        f"parameters (torch: float32), vjax remat {args.remat}, AdamW "
        f"(clipped at {OPTIMIZER['grad_clip_norm']}) on both sides, random weights, uint8 "
        f"clips normalised on the device; each runtime in its own process{in_turn}; median of "
        f"up to "
        f"{o.steps} steps after a warm-up ({budget_words(args.budget)}, "
        f"at least 2 steps); TFLOP/s count a step as 3 forward passes of vjax's MACs; memory: "
        f"{'allocator peaks' if gpu else 'process RSS high-water (runtime included)'}; "
        f"whole run {minutes:.1f} min. Command: `vjax bench train --peers --models "
        f"{' '.join(models)} --batch={o.batch} --dtype={o.dtype} --steps={o.steps} "
        f"--budget={args.budget:g} --forms={args.forms}{extra}`"
    )
    table = format_peer_table(rows, peak_tflops(device, o.dtype))
    if o.rounds > 1:
        table += "\n\n" + round_ratios(rows)
    if gpu:
        table += "\n\n" + fused_attention_note(rows)
    print(f"{setup}\n\n{table}")
    if args.out:
        update_benchmarks(args.out, "vjax bench train --peers", f"{setup}\n\n{table}\n")
    return rows


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, Any]:
    """``vjax bench train``'s flags: ``(args, parser)``."""
    parser = ArgumentParser(prog="vjax bench train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=None)
    parser.add_argument(
        "--batch",
        type=positive_int,
        default=None,
        help="global batch (clips per step); default 8, with --peers 4 on CPU and 16 on GPU",
    )
    parser.add_argument(
        "--steps", type=positive_int, default=10, help="timed steps after a warm-up"
    )
    parser.add_argument(
        "--dtype",
        default=None,
        choices=("float32", "bfloat16"),
        help="default bfloat16; with --peers float32 on CPU",
    )
    parser.add_argument(
        "--out", type=optional_output_file, default="BENCHMARKS.md", help="'' to write nothing"
    )
    parser.add_argument(
        "--remat",
        default="none",
        choices=tuple(REMAT_POLICIES),
        help="model.remat of vjax's transformers",
    )
    parser.add_argument(
        "--param_dtype",
        default="float32",
        choices=tuple(PARAM_DTYPES),
        help="train.param_dtype of vjax's step",
    )
    peers = parser.add_argument_group("--peers: PyTorch beside vjax, each in its own process")
    peers.add_argument("--peers", action="store_true")
    peers.add_argument("--forms", default="torch,torch.compile", help="PyTorch forms")
    peers.add_argument(
        "--budget",
        type=non_negative_float,
        default=DEFAULT_BUDGET_S,
        help="seconds of timed steps per measurement (at least 2 steps); 0: no limit",
    )
    peers.add_argument(
        "--timeout",
        type=non_negative_float,
        default=0,
        help="seconds one process may take (its row then says so); 0: no limit",
    )
    peers.add_argument(
        "--deadline",
        type=non_negative_float,
        default=0,
        help="seconds for the whole run: processes due after it are rows saying so; 0: no limit",
    )
    peers.add_argument(
        "--cores",
        type=non_negative_int,
        default=0,
        help="pin every measuring process to "
        "cores 0..N-1 (taskset; torch gets N threads); 0: all cores",
    )
    peers.add_argument(
        "--rounds",
        type=positive_int,
        default=1,
        help="measure every runtime N times, in turn, each in a fresh process; clips/s the median",
    )
    peers.add_argument("--compile_models", default="", help="comma-separated names (e.g. "
                       "hf_videomae,r2plus1d_18) torch.compile runs for; '': all")  # fmt: skip
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    args.env = dict(os.environ)  # as given: what --peers' measuring processes get
    return args, parser


def main(argv: Sequence[str] | None = None) -> int:
    args, parser = parse_args(argv)
    if args.peers:
        run_peers(args, parser)
        return 0
    args.models = args.models or list(DEFAULT_MODELS)
    args.batch, args.dtype = args.batch or 8, args.dtype or "bfloat16"
    names = available_models()
    specs = [with_remat(ModelSpec.parse(m, names), args.remat) for m in args.models]
    rows = []
    for spec in specs:
        rows.append(bench_model(spec, args.batch, args.steps, args.dtype,
                                param_dtype=args.param_dtype))  # fmt: skip
        print(f"measured {spec.label}", flush=True)
    devices = jax.local_devices()
    setup = (
        f"{len(devices)} x {devices[0].device_kind} ({jax.default_backend()}), jax "
        f"{jax.__version__}, batch {args.batch}, {args.dtype} compute / {args.param_dtype} params, "
        f"remat {args.remat}, AdamW, "
        f"median of {args.steps} steps. Command: `vjax bench train --steps={args.steps} "
        f"--batch={args.batch} "
        f"--dtype={args.dtype} --remat={args.remat} --param_dtype={args.param_dtype} --models "
        f"{' '.join(args.models)}`"
    )
    table = format_table(rows)
    print(f"{setup}\n\n{table}")
    if args.out:
        update_benchmarks(args.out, "vjax bench train", f"{setup}\n\n{table}\n")
    return 0
