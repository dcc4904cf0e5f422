"""Accelerator checks of issue 19 that CPU cannot show; about two minutes on one H100/H200.

1. cuDNN attention with padding: ``padded_attention(..., "cudnn")`` against float32 XLA for
   ViT-style lengths 197 and 3137 in bfloat16, forward and gradients, all finite; timing of
   the padded cuDNN call, the unpadded cuDNN call (whether this jax/cuDNN still refuses the
   length, or the padding only costs time now) and XLA. With several GPUs, the padded call
   under a data-sharded ``jit`` too (its length arrays follow q's sharding).
2. Async checkpoint, then donation: ``checkpoint.save`` (asynchronous) immediately followed
   by train steps that donate the state; the checkpoint must restore exactly the values held
   when it was saved (on CPU donation frees nothing, so only an accelerator can show it).

    python tests/gpu_checks.py              # on a GPU machine; exit code 1 if a check fails
    python tests/gpu_checks.py --cpu-smoke  # the same code at toy sizes on CPU (XLA in place
                                            # of cuDNN): checks the script runs, proves nothing

Not collected by pytest (not a ``test_*.py`` file).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _timed(fn, *args, repeats: int) -> float:
    """Milliseconds per call of a jitted ``fn`` after one warm-up call."""
    import jax

    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn(*args)
    jax.block_until_ready(out)
    return 1e3 * (time.perf_counter() - start) / repeats


def attention_checks(cpu_smoke: bool) -> bool:
    """cuDNN (padded) vs float32 XLA, forward and gradients, plus timings; True if all pass."""
    import jax

    fused = "xla" if cpu_smoke else "cudnn"  # CPU has no cuDNN: the same padded call on XLA
    shape = (1, 2, 64) if cpu_smoke else (8, 12, 64)  # batch, heads, head_dim (ViT-B)
    ok = True
    for length in (37, 197) if cpu_smoke else (197, 3137):
        ok &= _attention_at(length, shape, fused, repeats=1 if cpu_smoke else 20)
    if jax.device_count() > 1:
        ok &= _sharded_padded(fused)
    return ok


def _attention_at(length: int, shape: tuple[int, int, int], fused: str, repeats: int) -> bool:
    import jax
    import jax.numpy as jnp

    from vjax.models.attention import padded_attention

    batch, heads, dim = shape
    rng = np.random.default_rng(length)
    q, k, v, cot = (
        jnp.asarray(rng.normal(size=(batch, length, heads, dim)), jnp.bfloat16) for _ in range(4)
    )
    kernels = {
        "padded": lambda q, k, v: padded_attention(q, k, v, implementation=fused),
        "unpadded": lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation=fused),
        "xla": lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation="xla"),
        "reference": lambda q, k, v: jax.nn.dot_product_attention(
            *(x.astype(jnp.float32) for x in (q, k, v)), implementation="xla"
        ),
    }

    def grads_of(attend):
        def loss(q, k, v):
            return jnp.sum(attend(q, k, v).astype(jnp.float32) * cot.astype(jnp.float32))

        return jax.jit(jax.grad(loss, (0, 1, 2)))

    def as_f32(tree):
        return [np.asarray(x, np.float32) for x in tree]

    out, ref = (as_f32([jax.jit(kernels[n])(q, k, v)])[0] for n in ("padded", "reference"))
    grads, ref_grads = (as_f32(grads_of(kernels[n])(q, k, v)) for n in ("padded", "reference"))
    finite = all(np.isfinite(x).all() for x in (out, *grads))
    errors = [_relative(a, b) for a, b in zip((out, *grads), (ref, *ref_grads), strict=True)]
    good = bool(finite and max(errors) < 2e-2)  # bfloat16 keeps 8 bits of mantissa
    print(
        f"[{'ok' if good else 'FAIL'}] {fused} padded attention, length {length}, bf16: "
        f"finite={finite}; relative error vs float32 XLA: out {errors[0]:.1e}, "
        f"dq {errors[1]:.1e}, dk {errors[2]:.1e}, dv {errors[3]:.1e}",
        flush=True,
    )
    timings = {}
    for name in ("padded", "unpadded", "xla"):
        try:
            timings[name] = f"{_timed(grads_of(kernels[name]), q, k, v, repeats=repeats):.2f} ms"
        except Exception as e:  # noqa: BLE001  (a refused length is a result to report)
            timings[name] = f"refused ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
    print(
        f"     forward+backward, batch {batch} x {heads} heads x {dim}: "
        + "; ".join(f"{k} {v}" for k, v in timings.items()),
        flush=True,
    )
    return good


def _relative(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-6))


def _sharded_padded(fused: str) -> bool:
    """The padded call under a data-sharded jit equals the unsharded one."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec

    from vjax.models.attention import padded_attention
    from vjax.parallel import make_mesh

    mesh = make_mesh([("data", -1)])
    n = jax.device_count()
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(2 * n, 197, 4, 64)), jnp.bfloat16)
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    fn = jax.jit(lambda q: padded_attention(q, q, q, implementation=fused))
    with jax.set_mesh(mesh), nn.logical_axis_rules((("batch", "data"), ("heads", None))):
        sharded = jax.jit(fn, in_shardings=sharding)(jax.device_put(q, sharding))
    error = _relative(np.asarray(sharded, np.float32), np.asarray(fn(q), np.float32))
    good = error < 1e-2
    print(f"[{'ok' if good else 'FAIL'}] padded {fused} under data={n} sharding: {error:.1e}")
    return good


def checkpoint_then_donation(cpu_smoke: bool) -> bool:
    """An async save immediately followed by donated steps restores the saved values."""
    import flax.linen as nn
    import jax

    from vjax import checkpoint
    from vjax.bench_peers import OPTIMIZER  # AdamW, clipped; no ml_collections on the GPU image
    from vjax.models import build_model
    from vjax.optim import make_optimizer
    from vjax.step import make_init_state, make_train_step

    width, layers, clip = (16, 1, (4, 16, 16, 3)) if cpu_smoke else (768, 12, (8, 64, 64, 3))
    config = {"name": "vivit", "size": "B/16x2", "hidden_size": width, "num_layers": layers}
    config.update(num_heads=max(width // 64, 1), mlp_dim=4 * width)
    model = build_model(config, num_classes=10, dtype="bfloat16")
    tx = make_optimizer(OPTIMIZER, num_steps=1000)
    init = jax.jit(lambda key: nn.meta.unbox(make_init_state(model, tx, clip)(key)))
    state = init(jax.random.key(0))
    step = jax.jit(make_train_step(model, tx, mean=(0.5,) * 3, std=(0.25,) * 3), donate_argnums=0)
    rng = np.random.default_rng(0)
    batch = {"video": rng.integers(0, 256, (8, *clip), np.uint8), "label": np.arange(8) % 10}
    key = jax.random.key(1)
    state, _ = step(state, batch, key)  # compiled, and a state that is a step's output
    saved = jax.device_get(state)  # the values the checkpoint must hold
    with tempfile.TemporaryDirectory() as workdir:
        manager = checkpoint.make_manager(workdir, max_to_keep=1, async_save=True)
        start = time.perf_counter()
        checkpoint.save(manager, 1, state, {"check": "donation"})
        returned = time.perf_counter() - start
        for _ in range(3):  # donate the saved buffers at once
            state, metrics = step(state, batch, key)
        jax.block_until_ready(state)
        manager.wait_until_finished()
        abstract = checkpoint.abstract_like(state, jax.tree.map(lambda x: x.sharding, state))
        restored, _ = checkpoint.restore_latest(manager, abstract)
    leaves = zip(jax.tree.leaves(jax.device_get(restored)), jax.tree.leaves(saved), strict=True)
    mismatched = sum(not np.array_equal(a, b) for a, b in leaves)
    moved = not np.array_equal(jax.tree.leaves(state.params)[0], jax.tree.leaves(saved.params)[0])
    good = mismatched == 0 and moved
    count = sum(x.size for x in jax.tree.leaves(saved.params))
    print(
        f"[{'ok' if good else 'FAIL'}] async save ({count / 1e6:.1f}M parameters; save "
        f"returned after {returned * 1e3:.0f} ms) then 3 donated steps: {mismatched} restored "
        f"arrays differ from the saved state; training moved on: {moved}",
        flush=True,
    )
    return good


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="toy sizes on CPU")
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        os.environ["JAX_PLATFORMS"] = "cpu"
    sys.path.insert(0, REPO)
    import jax

    backend = jax.default_backend()
    print(
        f"jax {jax.__version__} on {backend}: {jax.devices()[0].device_kind} x {jax.device_count()}"
    )
    if backend != "gpu" and not args.cpu_smoke:
        print("no GPU: run with --cpu-smoke to check the script itself on CPU")
        return 2
    ok = attention_checks(args.cpu_smoke)
    ok &= checkpoint_then_donation(args.cpu_smoke)
    print("all checks passed" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
