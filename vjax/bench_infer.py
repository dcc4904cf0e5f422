"""``vjax bench infer``: inference speed of each model in each form, beside PyTorch.

Per model and form (``float32``, ``bfloat16``, ``int8_weights``, ``int8`` in JAX;
``stablehlo`` deserialized and run by jax; ``onnx`` and ``onnx_int8`` (onnxruntime's static
int8, :mod:`vjax.deploy.onnx_int8`) in onnxruntime; ``savedmodel`` in TensorFlow) and per
PyTorch peer (``torch`` eager, ``torch.compile``): load + compile seconds (first call), batch-1
latency median and p90, throughput at ``--batch`` clips, and peak memory where the runtime
reports it (JAX forms: the weights and XLA's static plan of the rest). Each measurement
repeats up to ``--repeats`` calls but stops after ``--budget`` seconds (at least 3 batch-1
calls and 1 batch call), so slow forms (XLA's int8 convolutions) do not stretch the run; a
form that fails (no C++ compiler for torch.compile, an op an exporter cannot express) becomes
a row saying why. Peers at equal configs: torchvision's R(2+1)D-18 for ``r2plus1d_18``;
Hugging Face ViViT / VideoMAE for ``hf_vivit`` / ``hf_videomae``, whose vjax twins are
converted from the very same random HF model. Every runtime gets the same number of threads
(``--threads``; XLA:CPU uses all cores of the process, so pin the process with ``taskset`` for
fewer). Random weights, uint8 inputs.

    vjax bench infer            # defaults: the three pairs at 8x112x112, every form, batch 4
    vjax bench infer --models r2plus1d_18@4x32x32 --forms=float32,onnx,torch --out=
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from vjax.bench import budget_words, cpu_cores, device_name, update_benchmarks
from vjax.bench_peers import MEAN, PEERS, STD, ModelSpec, build_pair, time_calls
from vjax.compile_options import compiler_options
from vjax.errors import (
    ArgumentParser,
    non_negative_float,
    optional_output_file,
    positive_int,
)

JAX_FORMS = ("float32", "bfloat16", "int8_weights", "int8", "stablehlo", "onnx", "onnx_int8",
             "savedmodel")  # fmt: skip
TORCH_FORMS = ("torch", "torch.compile")
DEFAULT_MODELS = ("r2plus1d_18@8x112x112", "hf_vivit@8x112x112", "hf_videomae@8x112x112")
# Sized so the default run (every form, both peers) ends in minutes (7.7 idle) on 2 CPU
# cores: R(2+1)D-18 at 8x112x112 takes ~1 s per clip there, 5-15 s in XLA's int8 convs.
DEFAULT_BATCH = 4
DEFAULT_BUDGET_S = 10.0


def _jax_runner(form: str, model: Any, variables: dict, model_config: dict, clip, folder: str):
    """``(run(video) -> logits, memory() -> MiB or None)`` of one JAX form; the file forms
    are exported into ``folder`` (the caller's to remove)."""
    from vjax.deploy import quantize
    from vjax.deploy.export import (
        FILES,
        inference_function,
        to_onnx,
        to_savedmodel,
        to_stablehlo,
    )
    from vjax.deploy.onnx_int8 import quantize_onnx
    from vjax.models import build_model

    config = _Config(MEAN, STD)
    if form == "bfloat16":
        model = build_model(model_config, 400, "bfloat16")
    if form in ("int8_weights", "int8"):
        rng = np.random.default_rng(0)
        calibration = [rng.standard_normal((2, *clip, 3)).astype(np.float32)]
        model, variables = quantize.quantize_variables(
            model, variables, form, (*clip, 3), calibration
        )
    fn = inference_function(config, model, variables)
    if form in ("float32", "bfloat16", "int8_weights", "int8"):
        weights = sum(x.nbytes for x in jax.tree.leaves(variables))  # no copy to the host
        return compiled_runner(fn, clip, weights)
    from vjax.deploy.runtime import RUNNERS

    fmt = "onnx" if form == "onnx_int8" else form
    path = os.path.join(folder, FILES[fmt])
    if form == "onnx_int8":  # the float graph, then onnxruntime's static int8 of it
        float_path = os.path.join(folder, "float.onnx")
        to_onnx(fn, (*clip, 3), float_path, model_config["name"])
        calibration = [np.random.default_rng(0).integers(0, 256, (2, *clip, 3), np.uint8)]
        quantize_onnx(float_path, path, "int8", calibration, folder)
    else:
        {"stablehlo": lambda: to_stablehlo(fn, (*clip, 3), path, [jax.default_backend()]),
         "onnx": lambda: to_onnx(fn, (*clip, 3), path, model_config["name"]),
         "savedmodel": lambda: to_savedmodel(fn, (*clip, 3), path)}[form]()  # fmt: skip
    run = RUNNERS[fmt](path, {})
    return lambda video: run(video)[0], None


def compiled_runner(
    fn: Callable, clip, weight_bytes: int = 0
) -> tuple[Callable, Callable[[], float]]:
    """``fn`` compiled once per batch size; the memory of the batch-1 executable (MiB): what
    XLA plans for it (arguments + outputs + temporaries, read from that very compilation) and
    ``weight_bytes``, the weights ``fn`` closes over, which XLA's plan leaves out (they are
    constants of the executable)."""
    jitted, compiled = jax.jit(fn, compiler_options=compiler_options()), {}

    def run(video: np.ndarray) -> jax.Array:
        if video.shape not in compiled:
            spec = jax.ShapeDtypeStruct(video.shape, video.dtype)
            compiled[video.shape] = jitted.lower(spec).compile()
        return compiled[video.shape](video)[0]

    def memory() -> float:
        m = compiled[(1, *clip, 3)].memory_analysis()
        planned = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
        return (planned + weight_bytes) / 2**20

    return run, memory


class _Config:
    """The two fields :func:`inference_function` reads from a config."""

    def __init__(self, mean, std):
        self.input = type("Input", (), {"mean": mean, "std": std})


def _torch_runner(form: str, torch_model: Any, hf: bool) -> Callable:
    """PyTorch's ``uint8 clips -> logits`` on the kind of device the JAX forms run on (a GPU
    when JAX's backend is one: comparing a GPU with a CPU says nothing), the logits brought
    to the host (on a GPU that waits for the work, as the JAX forms' timing does)."""
    import torch

    device = torch.device("cuda" if jax.default_backend() == "gpu" else "cpu")
    torch_model = torch_model.to(device)
    module = torch.compile(torch_model) if form == "torch.compile" else torch_model
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1, 1)

    def run(video: np.ndarray):
        with torch.inference_mode():
            x = torch.from_numpy(video).to(device).permute(0, 4, 1, 2, 3).float() / 255.0
            x = (x - mean) / std  # B C T H W
            if hf:  # transformers take (B, T, C, H, W)
                return module(pixel_values=x.permute(0, 2, 1, 3, 4)).logits.cpu()
            return module(x).cpu()

    return run


def _time_in_turn(
    runs: Mapping[str, Callable],
    video: np.ndarray,
    repeats: int,
    budget_s: float = math.inf,
    least: int = 1,
) -> dict[str, list[float]]:
    """Seconds of each of up to ``repeats`` calls of every ``run(video)`` in ``runs``, taken in
    turn (a call of each, then again) within ``budget_s`` (at least ``least`` rounds), each
    waiting for its result (:func:`vjax.bench_peers.time_calls`)."""
    times: dict[str, list[float]] = {name: [] for name in runs}

    def one_round() -> None:
        for name, run in runs.items():
            start = time.perf_counter()
            jax.block_until_ready(run(video))
            times[name].append(time.perf_counter() - start)

    time_calls(one_round, repeats, budget_s, least)
    return times


def bench_forms(
    runs: Mapping[str, Callable], clip, batch: int, repeats: int, budget_s: float = math.inf
) -> dict[str, dict[str, Any]]:
    """Per runner in ``runs``: first-call seconds, batch-1 latency (median, p90 of up to
    ``repeats`` calls, at least 3) and ``batch``-clip throughput (median of up to
    ``max(2, repeats // 4)`` calls after a warm-up call, at least 1), each measurement
    stopping after ``budget_s`` seconds. The runners' calls alternate (A, B, A, B, ...), so a
    drift in the machine's speed hits each alike and their ratios compare like with like.

    >>> rows = bench_forms({"original": run_a, "pruned": run_b}, (16, 32, 32), 8, 200)
    >>> rows["original"]["latency_ms"] / rows["pruned"]["latency_ms"]   # the speed-up
    """
    rng = np.random.default_rng(0)
    one = rng.integers(0, 256, (1, *clip, 3), np.uint8)
    many = rng.integers(0, 256, (batch, *clip, 3), np.uint8)
    first = _time_in_turn(runs, one, 1)
    latency = _time_in_turn(runs, one, repeats, budget_s, least=3)
    _time_in_turn(runs, many, 1)  # compiles the larger batch where a runtime does
    throughput = _time_in_turn(runs, many, max(2, repeats // 4), budget_s, least=1)
    return {
        name: {
            "first_s": first[name][0],
            "latency_ms": 1e3 * statistics.median(latency[name]),
            "p90_ms": 1e3 * float(np.percentile(latency[name], 90)),
            "clips_per_s": batch / statistics.median(throughput[name]),
            "calls": len(latency[name]),
        }
        for name in runs
    }


def bench_form(
    run: Callable, clip, batch: int, repeats: int, budget_s: float = math.inf
) -> dict[str, Any]:
    """:func:`bench_forms` of one runner."""
    return bench_forms({"": run}, clip, batch, repeats, budget_s)[""]


def bench_model(
    spec: str,
    forms: Sequence[str],
    batch: int,
    repeats: int,
    threads: int,
    budget_s: float = math.inf,
) -> list[dict[str, Any]]:
    """Every requested form of one ``name@TxHxW`` spec, vjax and PyTorch."""
    import torch

    torch.set_num_threads(threads)
    parsed = ModelSpec.parse(spec)
    name, clip, clip_text = parsed.label, parsed.clip, spec.partition("@")[2]
    model, variables, model_config, torch_model = build_pair(parsed)
    rows = []
    for form in forms:
        start = time.perf_counter()
        row = {"model": name, "clip": clip_text, "form": form}
        try:  # a form's exported files (hundreds of MB at published sizes) last as long as it
            with tempfile.TemporaryDirectory(prefix=f"vjax_bench_{form}_") as folder:
                if form in TORCH_FORMS:
                    hf = parsed.name.startswith("hf_")
                    run, memory = _torch_runner(form, torch_model, hf), None
                else:
                    with _onnx_threads(threads):
                        run, memory = _jax_runner(
                            form, model, variables, model_config, clip, folder
                        )
                build_s = time.perf_counter() - start
                row.update(bench_form(run, clip, batch, repeats, budget_s))
        except Exception as e:  # noqa: BLE001  (a form that fails is reported, not fatal)
            rows.append({**row, "error": why_failed(e)})
            print(f"failed {name} {form}: {rows[-1]['error']}", flush=True)
            continue
        row["load_s"] = build_s + row.pop("first_s")
        row["memory_mib"] = memory() if memory is not None else None
        rows.append(row)
        print(f"measured {name} {form}", flush=True)
    return rows


def why_failed(error: BaseException) -> str:
    """One line: the exception's type and first line, and the next line when the first only
    introduces it (torch.compile: "backend='inductor' raised:" then the cause)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [""]
    text = " ".join(lines[:2]) if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    return f"{type(error).__name__}: {text[:240]}"


@contextlib.contextmanager
def _onnx_threads(threads: int):
    """onnxruntime sessions made inside use ``threads`` intra-op threads."""
    import onnxruntime as ort

    original = ort.SessionOptions

    def options():
        made = original()
        made.intra_op_num_threads = threads
        return made

    ort.SessionOptions = options
    try:
        yield
    finally:
        ort.SessionOptions = original


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| model | clip | form | load + compile (s) | batch-1 median (ms) | p90 (ms) "
        "| clips/s at batch | memory, batch 1 (MiB): weights + XLA's plan | batch-1 calls |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['clip']} | {r['form']} | failed: {r['error']} "
                         "| | | | | |")  # fmt: skip
            continue
        memory = f"{r['memory_mib']:.0f}" if r["memory_mib"] is not None else "-"
        lines.append(
            f"| {r['model']} | {r['clip']} | {r['form']} | {r['load_s']:.1f} "
            f"| {r['latency_ms']:.1f} | {r['p90_ms']:.1f} | {r['clips_per_s']:.1f} | {memory} "
            f"| {r['calls']} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="vjax bench infer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--forms", default=",".join((*JAX_FORMS, *TORCH_FORMS)))
    parser.add_argument(
        "--batch", type=positive_int, default=DEFAULT_BATCH, help="clips per call for throughput"
    )
    parser.add_argument("--repeats", type=positive_int, default=20, help="most timed batch-1 calls")
    parser.add_argument("--budget", type=non_negative_float, default=DEFAULT_BUDGET_S,
                        help="seconds per measurement before it stops repeating (at least 3 "
                        "batch-1 calls and 1 batch call); 0: no limit")  # fmt: skip
    parser.add_argument("--threads", type=positive_int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=optional_output_file, default="BENCHMARKS.md",
                        help="'' to write nothing")  # fmt: skip
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    forms = [f for f in args.forms.split(",") if f]
    unknown = [f for f in forms if f not in (*JAX_FORMS, *TORCH_FORMS)]
    if unknown:
        parser.error(f"unknown form(s) {unknown}; valid: {', '.join((*JAX_FORMS, *TORCH_FORMS))}")
    for spec in args.models:  # every one, before any is measured
        ModelSpec.parse(spec, PEERS)
    begin = time.perf_counter()
    budget = args.budget or math.inf
    rows = [r for m in args.models for r in bench_model(m, forms, args.batch, args.repeats,
                                                         args.threads, budget)]  # fmt: skip
    minutes = (time.perf_counter() - begin) / 60
    table = format_table(rows)
    print(table)
    print(f"total {minutes:.1f} min")
    if args.out:
        import torch

        setup = (
            f"{device_name(jax.devices()[0])} ({jax.default_backend()}), {cpu_cores()}, jax "
            f"{jax.__version__}, torch "
            f"{torch.__version__}, {args.threads} threads per runtime, random weights, "
            f"batch-1 latency over up to {args.repeats} calls (at least 3; "
            f"{budget_words(args.budget)}), throughput at batch {args.batch}; whole run "
            f"{minutes:.1f} min. Command: `vjax bench infer --models {' '.join(args.models)} "
            f"--batch={args.batch} --repeats={args.repeats} --budget={args.budget:g} "
            f"--forms={args.forms}`"
        )
        update_benchmarks(args.out, "vjax bench infer", f"{setup}\n\n{table}")
    return 0
