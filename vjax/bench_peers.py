"""The PyTorch peers of ``vjax bench infer`` and ``vjax bench train --peers``: one spec names an
architecture on a clip, and the same spec builds the random PyTorch model (Hugging Face ViViT,
VideoMAE, TimeSformer; torchvision R(2+1)D-18, R3D-18), its vjax twin (converted from that very
model) and the peer's training step (AdamW, clipping, bf16 autocast on GPU).

A spec is ``name[:field=value,...]@TxHxW``. For ``hf_*`` names the fields set the
transformers config (``size=Ti``, ``S`` or ``B`` picks the ViT width and depth; without it the
small 4-layer config ``vjax bench infer`` measures), e.g. ``hf_timesformer:size=B@8x224x224``;
for any other name they are vjax model fields (``vivit:size=Ti/16x2@8x112x112``, no peer).

Each peer measurement runs in its own process, so memory and threads are not shared:

    python -m vjax.bench_peers torch "hf_vivit:size=Ti@8x112x112" --batch=4
    python -m vjax.bench_peers vjax "r2plus1d_18@8x112x112" --batch=4   # the vjax side

prints one ``RESULT {json}`` line (:func:`run_child` reads it). Imports no TensorFlow.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

HF_CLASSES = {"hf_vivit": "Vivit", "hf_videomae": "VideoMAE", "hf_timesformer": "Timesformer"}
TORCHVISION = ("r2plus1d_18", "r3d_18")
# ViT widths and depths (hidden, layers, heads, MLP); None: the 4-layer Ti-wide default.
HF_SIZES: dict[str | None, dict[str, int]] = {
    None: dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768),
    "Ti": dict(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768),
    "S": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536),
    "B": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
              intermediate_size=3072),
}  # fmt: skip
MEAN, STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)
NUM_CLASSES = 400
# The optimiser both sides train with: vjax.optim's config (a constant lr: no warmup, cosine
# to the same value) and torch.optim.AdamW at the same lr, betas, eps and decay on the same
# weights, after clip_grad_norm_.
OPTIMIZER = {"name": "adamw", "lr": 1e-3, "end_lr": 1e-3, "warmup_steps": 0, "b1": 0.9,
             "b2": 0.999, "weight_decay": 0.05, "grad_clip_norm": 1.0}  # fmt: skip
RESULT = "RESULT "


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """``name[:field=value,...]@TxHxW``: a model config and the clip it runs on."""

    config: dict[str, Any]
    clip: tuple[int, int, int]

    @classmethod
    def parse(cls, text: str, names: Sequence[str] | None = None) -> ModelSpec:
        """The spec ``text``; a malformed one, or a name not in ``names`` (when given), is a
        UserError naming it."""
        from vjax.errors import UserError
        from vjax.suggest import closest_hint

        model, sep, clip = text.partition("@")
        if not sep:
            raise UserError(f"model spec {text!r} needs @TxHxW, e.g. 'r2plus1d_18@16x112x112'")
        name, _, fields = model.partition(":")
        if names is not None and name not in names:
            raise UserError(f"unknown model {name!r} in {text!r}{closest_hint(name, names)}")
        config: dict[str, Any] = {"name": name}
        for item in filter(None, fields.split(",")):
            key, eq, value = item.partition("=")
            if not eq:
                raise UserError(f"model field {item!r} in {text!r} is not key=value")
            try:
                config[key] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                config[key] = value  # a bare string such as B/16x2
        sizes = clip.split("x")
        if len(sizes) != 3 or not all(v.isdigit() and int(v) > 0 for v in sizes):
            raise UserError(
                f"the clip of {text!r} must be TxHxW (three whole numbers), got {clip!r}"
            )
        frames, height, width = (int(v) for v in sizes)
        return cls(config, (frames, height, width))

    @property
    def name(self) -> str:
        return self.config["name"]

    @property
    def fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.config.items() if k != "name"}

    @property
    def label(self) -> str:
        fields = ",".join(f"{k}={v}" for k, v in self.fields.items())
        return self.name + (f" {fields}" if fields else "")

    @property
    def text(self) -> str:
        """The spec as :meth:`parse` reads it."""
        fields = ",".join(f"{k}={v}" for k, v in self.fields.items())
        return self.name + (f":{fields}" if fields else "") + "@" + "x".join(map(str, self.clip))


PEERS = (*HF_CLASSES, *TORCHVISION)  # the specs that have a PyTorch twin


def has_peer(spec: ModelSpec) -> bool:
    return spec.name in PEERS


def hf_config(spec: ModelSpec) -> Any:
    """The transformers config of an ``hf_*`` spec: size preset, clip, 400 labels, fields."""
    import transformers

    fields = spec.fields
    size = fields.pop("size", None)
    if size not in HF_SIZES:
        raise ValueError(f"unknown size {size!r} in {spec.text!r}; valid: Ti, S, B")
    frames, height, _ = spec.clip
    kind = HF_CLASSES[spec.name]
    shape = {"hf_vivit": {"tubelet_size": [2, 16, 16]},
             "hf_videomae": {"patch_size": 16, "tubelet_size": 2},
             "hf_timesformer": {"patch_size": 16}}[spec.name]  # fmt: skip
    values = {**HF_SIZES[size], **shape, "num_frames": frames, "image_size": height, **fields}
    return getattr(transformers, f"{kind}Config")(**values, num_labels=NUM_CLASSES)


def torch_model(spec: ModelSpec) -> Any:
    """The random PyTorch model of a peer spec (seed 0), in eval mode."""
    import torch

    torch.manual_seed(0)
    if spec.name in HF_CLASSES:
        import transformers

        cls = getattr(transformers, f"{HF_CLASSES[spec.name]}ForVideoClassification")
        return cls(hf_config(spec)).eval()
    import torchvision

    return getattr(torchvision.models.video, spec.name)(num_classes=NUM_CLASSES).eval()


def build_pair(spec: ModelSpec) -> tuple[Any, dict, dict, Any]:
    """``(vjax model, variables, model config, torch module)``: the random PyTorch model and
    the vjax twin converted from its very weights."""
    import flax.linen as nn

    from vjax.models import build_model

    module = torch_model(spec)
    if spec.name in HF_CLASSES:
        from vjax.convert.hf import hf_variables

        model_config, _, variables, *_ = hf_variables(module.state_dict(), module.config)
    else:
        from vjax.convert.torchvision import torchvision_variables

        model_config, variables = torchvision_variables(module.state_dict(), spec.name)
    model_config = dict(model_config)
    return build_model(model_config, NUM_CLASSES), nn.meta.unbox(variables), model_config, module


def converted_twin(spec_text: str) -> tuple[dict, dict]:
    """``(variables, model config)`` of a peer's vjax twin, converted from the random PyTorch
    model's weights as host arrays. The vjax side runs it in a process of its own, so torch
    stays out of the measured process's memory (it added 0.74 GiB to vjax's RSS on CPU)."""
    from flax import traverse_util

    _, variables, config, _ = build_pair(ModelSpec.parse(spec_text))
    flat = traverse_util.flatten_dict(variables)
    return {key: np.asarray(value) for key, value in flat.items()}, config


def synthetic_batch(batch: int, clip: Sequence[int], seed: int = 0) -> dict[str, np.ndarray]:
    """uint8 clips ``(batch, T, H, W, 3)`` and int32 labels, the same for every runtime."""
    rng = np.random.default_rng(seed)
    return {
        "video": rng.integers(0, 256, (batch, *clip, 3), dtype=np.uint8),
        "label": rng.integers(0, NUM_CLASSES, (batch,), dtype=np.int32),
    }


def time_calls(
    run: Callable[[], Any], repeats: int, budget_s: float = math.inf, least: int = 1
) -> list[float]:
    """Seconds of up to ``repeats`` calls of ``run`` (it returns once its work is done);
    after ``least`` calls, none starts once ``budget_s`` seconds have passed (slow runtimes
    get fewer samples, not hours)."""
    times: list[float] = []
    begin = time.perf_counter()
    while len(times) < repeats and (len(times) < least or time.perf_counter() - begin < budget_s):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def _decays(name: str, param: Any) -> bool:
    """vjax's decay mask in torch terms: kernels decay; biases, norms, position tables and
    class tokens do not."""
    tables = ("cls_token", "position_embeddings", "time_embeddings")
    return param.ndim >= 2 and not name.endswith(tables)


def torch_train_step(
    module: Any, dtype: str, device: Any, compile: bool = False
) -> Callable[[Any, Any], Any]:
    """``step(video uint8 (B, T, H, W, 3), labels) -> loss before the update``: the PyTorch
    twin of :func:`vjax.step.make_train_step` (normalise, forward, mean cross-entropy,
    backward, clip the global norm, AdamW), bf16 autocast for ``dtype="bfloat16"``."""
    import torch

    hf = hasattr(module, "config")
    module.train().to(device)
    channels_last = not hf and device.type == "cuda"
    if channels_last:  # torchvision's fast 3D-conv layout on GPU
        module.to(memory_format=torch.channels_last_3d)
    named = list(module.named_parameters())
    groups = [
        {
            "params": [p for n, p in named if _decays(n, p)],
            "weight_decay": OPTIMIZER["weight_decay"],
        },
        {"params": [p for n, p in named if not _decays(n, p)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(
        groups, lr=OPTIMIZER["lr"], betas=(OPTIMIZER["b1"], OPTIMIZER["b2"]), eps=1e-8
    )
    forward = torch.compile(module) if compile else module
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1, 1)
    params = [p for _, p in named]

    def step(video: Any, labels: Any) -> Any:
        x = (video.permute(0, 4, 1, 2, 3).float() / 255.0 - mean) / std  # B C T H W
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast(device.type, torch.bfloat16, enabled=dtype == "bfloat16"):
            # transformers take (B, T, C, H, W)
            logits = forward(pixel_values=x.transpose(1, 2)).logits if hf else forward(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, OPTIMIZER["grad_clip_norm"])
        optimizer.step()
        return loss.detach()

    return step


def rss_gib() -> float:
    """This process's resident-memory high-water mark (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def bench_torch(
    spec: ModelSpec, form: str, batch: int, dtype: str, steps: int, budget_s: float
) -> dict[str, Any]:
    """One peer's training speed: first-step seconds (torch.compile compiles there), then up
    to ``steps`` timed steps (at least 2) within ``budget_s``."""
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # cuDNN picks its fastest kernel per shape, as torchvision's video training script sets.
    torch.backends.cudnn.benchmark = device.type == "cuda"
    step = torch_train_step(torch_model(spec), dtype, device, compile=form == "torch.compile")
    data = synthetic_batch(batch, spec.clip)
    video = torch.from_numpy(data["video"]).to(device)
    labels = torch.from_numpy(data["label"]).long().to(device)

    def run() -> None:
        step(video, labels)
        if device.type == "cuda":
            torch.cuda.synchronize()

    start = time.perf_counter()
    first_loss = float(step(video, labels))  # before any update; compiles for torch.compile
    first = time.perf_counter() - start
    times = time_calls(run, steps, budget_s, least=2)
    step_s = statistics.median(times)  # as the vjax side's
    cuda = device.type == "cuda"
    return {
        "first_loss": first_loss,
        "compile_s": first,
        "clips_per_s": batch / step_s,
        "steps": len(times),
        "memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else rss_gib(),
        "memory_kind": "torch.cuda.max_memory_allocated" if cuda else "RSS high-water",
        "threads": torch.get_num_threads(),
    }


def run_child(
    runtime: str,
    spec: ModelSpec,
    options: Sequence[str],
    timeout_s: float | None = None,
    env: dict[str, str] | None = None,
    cores: int = 0,
) -> dict[str, Any]:
    """``python -m vjax.bench_peers RUNTIME SPEC OPTIONS`` in a fresh process (environment
    ``env``, default this one's; ``cores`` > 0: pinned to CPU cores 0..cores-1 with taskset,
    and torch given as many threads): its RESULT row, or ``{"error": why}`` when it fails or
    runs past ``timeout_s``."""
    command = [sys.executable, "-m", "vjax.bench_peers", runtime, spec.text, *options]
    if cores:
        command = ["taskset", "-c", f"0-{cores - 1}", *command, f"--threads={cores}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:g} s"}
    rows = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode or not rows:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        return {"error": f"exit {done.returncode}: {(lines or [''])[-1].strip()[:240]}"}
    return json.loads(rows[-1][len(RESULT) :])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vjax.bench_peers", description=__doc__)
    parser.add_argument("runtime", choices=("vjax", "torch", "torch.compile"))
    parser.add_argument("spec")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--steps", type=int, default=10, help="most timed steps")
    parser.add_argument("--budget", type=float, default=math.inf, help="seconds of timed steps")
    parser.add_argument("--threads", type=int, default=0, help="torch's threads (0: its own)")
    parser.add_argument("--remat", default="none", help="vjax: model.remat")
    parser.add_argument("--param_dtype", default="float32", help="vjax: train.param_dtype")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    spec = ModelSpec.parse(args.spec)
    if args.runtime == "vjax":
        from vjax.bench_train import bench_model

        # A peer's twin starts from the peer's very weights (its first loss must match).
        variables, config = None, spec.config
        if has_peer(spec):
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            from flax import traverse_util

            spawn = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(1, mp_context=spawn) as converter:
                flat, config = converter.submit(converted_twin, args.spec).result()
            variables = traverse_util.unflatten_dict(flat)
        import jax

        from vjax.bench_train import with_remat

        row = bench_model(  # on one device, as the peer runs on one
            with_remat(ModelSpec(config, spec.clip), args.remat),
            args.batch,
            args.steps,
            args.dtype,
            budget_s=args.budget,
            variables=variables,
            param_dtype=args.param_dtype,
            devices=jax.local_devices()[:1],
        )
        row["rss_gib"] = rss_gib()
    else:
        row = bench_torch(spec, args.runtime, args.batch, args.dtype, args.steps, args.budget)
    print(RESULT + json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
