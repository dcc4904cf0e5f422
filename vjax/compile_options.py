"""The XLA compile options of the steps vjax compiles itself (the trainer's train and eval
steps, `vjax bench train` and `vjax bench infer`); jax only takes them on a top-level jit, so
functions that others may trace inside their own (``vjax.load``'s apply, exports) go without.

On CPU, XLA (jaxlib 0.10) hands convolutions, reductions and elementwise ops to YNNPACK by
default. For 3D-conv nets that halves the speed: R(2+1)D-18's train step (8x112x112, batch 4,
float32, 2 cores) ran at 0.58-0.64 clips/s with the default and 1.17-1.26 clips/s with YNNPACK
kept for matmuls only, the two compiled in one process and called in turn, with the same loss
to 7 digits; the transformers' steps (ViViT-Ti, VideoMAE-Ti) moved within the noise (0.9-1.16x).
So vjax keeps YNNPACK for matmuls (``LIBRARY_FUSION_TYPE_DOT``; XLA may still give it a conv
it can run as one, e.g. a 1x1 or a tiny strided one) on CPU, asks nothing of GPUs and TPUs,
and leaves the choice to the user where ``XLA_FLAGS`` already makes it.

>>> step = jax.jit(train_step, compiler_options=compiler_options())
"""

from __future__ import annotations

import functools
import os

import jax

YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"
CPU_OPTIONS = {YNN_OPTION: "LIBRARY_FUSION_TYPE_DOT"}


def compiler_options(backend: str | None = None) -> dict[str, str] | None:
    """``jax.jit``'s ``compiler_options`` for ``backend`` (default: JAX's): YNNPACK for matmuls
    only on CPU; None elsewhere, where ``XLA_FLAGS`` sets the option, or where this jaxlib
    does not know it."""
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
