"""The XLA compile options of the steps vjax compiles itself (the trainer's train and eval
steps, a loaded model's ``model(video)`` and ``vjax predict``, `vjax bench train` and `vjax
bench infer`); jax only takes them on a top-level jit, so functions that others may trace
inside their own (``vjax.loaded.normalized_apply``, exports) go without.

On CPU, XLA (jaxlib 0.10) hands convolutions, reductions, elementwise ops and matmuls to
YNNPACK by default, and on this 2-core machine every one of them ran slower there than in
XLA's own kernels (Eigen's convolutions and matmuls, its emitted loops). Each pair compiled in
one process and called in turn, same losses to 7 digits:

* R(2+1)D-18's train step (8x112x112, batch 4, float32): 0.58-0.64 clips/s with the default,
  1.17-1.26 with YNNPACK for matmuls only; without YNNPACK 1.03-1.07x faster again.
* Without YNNPACK against YNNPACK for matmuls only: VideoMAE-Ti's train step 1.09-1.21x,
  ViViT-Ti's 1.07x; their float32 forward 1.22-1.32x (batch 1 and 8), R(2+1)D's the same.
  Plain float32 matmuls from 784x192x576 to 2048^3 ran at the same rate both ways.

So vjax turns YNNPACK off on CPU (an empty ``xla_cpu_experimental_ynn_fusion_type``), asks
nothing of GPUs and TPUs, and leaves the choice to the user where ``XLA_FLAGS`` already makes
it.

>>> step = jax.jit(train_step, compiler_options=compiler_options())
"""

from __future__ import annotations

import functools
import os

import jax

YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"
CPU_OPTIONS = {YNN_OPTION: ""}


def compiler_options(backend: str | None = None) -> dict[str, str] | None:
    """``jax.jit``'s ``compiler_options`` for ``backend`` (default: JAX's): no YNNPACK on CPU;
    None elsewhere, where ``XLA_FLAGS`` sets the option, or where this jaxlib does not know
    it."""
    if (backend or jax.default_backend()) != "cpu" or YNN_OPTION in os.environ.get("XLA_FLAGS", ""):
        return None
    return dict(CPU_OPTIONS) if _jaxlib_knows_cpu_options() else None


@functools.cache
def _jaxlib_knows_cpu_options() -> bool:
    """Whether XLA:CPU accepts :data:`CPU_OPTIONS` (older and newer jaxlibs may not)."""
    try:
        jax.jit(lambda x: x * 2, compiler_options=CPU_OPTIONS).lower(1.0).compile()
    except jax.errors.JaxRuntimeError:
        return False
    return True
