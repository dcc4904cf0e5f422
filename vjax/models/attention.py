"""One scaled dot-product attention for every model, on the fastest kernel the backend has.

``dot_product_attention(q, k, v, implementation=...)`` takes ``(batch, length, heads,
head_dim)`` arrays and dispatches:

* ``"cudnn"``: cuDNN flash attention through ``jax.nn.dot_product_attention``. cuDNN only
  takes half-precision inputs and refuses some sequence lengths (ViT-style lengths such as
  3137 = 16 * 14 * 14 + cls), so the sequence is zero-padded to a multiple of
  :data:`CUDNN_PAD` and the padding is masked out with ``query_seq_lengths`` /
  ``key_value_seq_lengths`` (sharded over the batch like q); the result is sliced back. Every
  variant gets the fast path.
* ``"pallas"``: the Pallas splash-attention kernel for TPU, padded to its block size
  :data:`PALLAS_PAD`, with segment ids masking the padding (real queries see only real keys).
  On a mesh it runs per shard of batch and heads (``shard_map``), never on gathered arrays.
* ``"xla"``: the plain XLA softmax(QK^T)V, which runs everywhere.
* ``"auto"`` (default): ``cudnn`` on GPU for float16/bfloat16 inputs, ``pallas`` on TPU,
  ``xla`` otherwise (float32 on GPU stays on XLA: cuDNN's fused kernel has no float32 mode),
  and ``xla`` for sequences shorter than :data:`MIN_FUSED_LENGTH` (e.g. temporal attention
  over 16 frames), whose small score matrices XLA fuses well and padding would inflate.

A model's ``attention_impl`` config field passes an explicit choice through, and
:func:`set_interpret` runs the Pallas kernel in interpret mode so CPU tests can check it.

>>> q = k = v = jnp.ones((2, 3137, 12, 64), jnp.bfloat16)
>>> out = dot_product_attention(q, k, v)  # cuDNN on a GPU, XLA on this CPU
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange
from jax.sharding import PartitionSpec

IMPLEMENTATIONS = ("auto", "xla", "cudnn", "pallas")
CUDNN_PAD = 64  # sequence padding for cuDNN flash attention
PALLAS_PAD = 128  # the splash kernel's block size
MIN_FUSED_LENGTH = 128  # "auto" keeps shorter sequences on XLA
_HALF = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))
_INTERPRET = {"pallas": False}
_FORCED: dict[str, str | None] = {"implementation": None}


@contextlib.contextmanager
def set_interpret(enabled: bool = True) -> Iterator[None]:
    """Runs the Pallas kernel in interpret mode inside the block (for tests on CPU)."""
    previous = _INTERPRET["pallas"]
    _INTERPRET["pallas"] = enabled
    try:
        yield
    finally:
        _INTERPRET["pallas"] = previous


@contextlib.contextmanager
def force_implementation(implementation: str) -> Iterator[None]:
    """Every attention traced inside the block uses ``implementation``, whatever a model asks
    for: :func:`vjax.flops.count_macs` traces with ``"xla"``, whose two matmuls it counts (a
    cuDNN or Pallas call is one opaque op, and attention's MACs would go uncounted)."""
    previous = _FORCED["implementation"]
    _FORCED["implementation"] = implementation
    try:
        yield
    finally:
        _FORCED["implementation"] = previous


def resolve_implementation(implementation: str, dtype, length: int | None = None) -> str:
    """The kernel ``"auto"`` stands for on the current default backend for sequences of
    ``length`` (None: long), else the choice itself; inside :func:`force_implementation`,
    the forced one."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"attention implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}"
        )
    if _FORCED["implementation"] is not None:
        return _FORCED["implementation"]
    if implementation != "auto":
        return implementation
    if length is not None and length < MIN_FUSED_LENGTH:
        return "xla"
    backend = jax.default_backend()
    if backend in ("gpu", "cuda", "rocm") and jnp.dtype(dtype) in _HALF:
        return "cudnn"
    if backend == "tpu":
        return "pallas"
    return "xla"


def _pad_length(x: jax.Array, length: int) -> jax.Array:
    return jnp.pad(x, ((0, 0), (0, length - x.shape[1]), (0, 0), (0, 0)))


def padded_length(length: int, multiple: int = CUDNN_PAD) -> int:
    """``length`` rounded up to a multiple of ``multiple``."""
    return -(-length // multiple) * multiple


def batch_heads_spec(shape: tuple[int, ...]) -> PartitionSpec | None:
    """How a ``(batch, length, heads, head_dim)`` array is split over the mesh in context
    (``jax.set_mesh``) by the logical rules in context (``nn.logical_axis_rules``): the mesh
    axes (of size > 1) of ``batch`` and ``heads``, each kept only where it divides that
    dimension. None when nothing is split: outside a mesh, without rules, on one device."""
    mesh = jax.sharding.get_abstract_mesh()
    rules = nn.get_logical_axis_rules()
    if mesh.empty or not rules:
        return None
    logical = nn.logical_to_mesh_axes(("batch", None, "heads", None), rules)
    dims = []
    for size, names in zip(shape, logical, strict=True):
        names = (names,) if isinstance(names, str) else names or ()
        axes = tuple(a for a in names if mesh.shape.get(a, 1) > 1)
        dims.append(axes if axes and size % math.prod(mesh.shape[a] for a in axes) == 0 else None)
    return PartitionSpec(*dims) if any(dims) else None


def sequence_lengths(q: jax.Array, length: int) -> jax.Array:
    """``(batch,)`` lengths for cuDNN's masking, sharded over the batch like ``q`` (a constant
    would otherwise be replicated while ``q`` is batch-sharded)."""
    lengths = jnp.full((q.shape[0],), length, jnp.int32)
    spec = batch_heads_spec(q.shape)
    if spec is not None:
        lengths = jax.lax.with_sharding_constraint(lengths, PartitionSpec(spec[0]))
    return lengths


def padded_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, *, implementation: str = "cudnn"
) -> jax.Array:
    """Attention on sequences zero-padded to :data:`CUDNN_PAD`, the padding masked out.

    This is the cuDNN formulation; ``implementation="xla"`` runs the very same padded and
    masked call through XLA, which is how CPU tests check it against plain attention.
    """
    length = q.shape[1]
    padded = padded_length(length)
    if padded == length:
        return jax.nn.dot_product_attention(q, k, v, implementation=implementation)
    lengths = sequence_lengths(q, length)
    out = jax.nn.dot_product_attention(
        _pad_length(q, padded),
        _pad_length(k, padded),
        _pad_length(v, padded),
        query_seq_lengths=lengths,
        key_value_seq_lengths=lengths,
        implementation=implementation,
    )
    return out[:, :length]


@functools.lru_cache(maxsize=64)
def _splash_kernel(heads: int, length: int, interpret: bool):
    """The kernel for ``heads`` heads of ``length`` tokens, built once. Its mask arrays are
    kept as NumPy constants: a cached jax array would carry the trace, mesh or device it was
    first made under (a tracer of that trace, a ``shard_map``'s manual mesh) into every
    later use."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

    mask = sm.MultiHeadMask([sm.FullMask((length, length)) for _ in range(heads)])
    with jax.ensure_compile_time_eval():  # concrete arrays even when built inside a trace
        kernel = sk.make_splash_mha(mask, head_shards=1, q_seq_shards=1, interpret=interpret)
    return jax.tree.map(np.asarray, kernel)  # the kernel is a pytree of its mask arrays


def pallas_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """Pallas splash attention (TPU), padded to :data:`PALLAS_PAD` with the padding masked.

    ``pallas_call`` has no partitioning rule: under a sharded ``jit`` XLA would gather q, k, v
    whole onto every device. So on a mesh the kernel runs in ``shard_map`` on each device's
    own examples and heads (:func:`batch_heads_spec`).
    """
    length, heads = q.shape[1:3]
    spec = batch_heads_spec(q.shape)
    if spec is not None and spec[2]:  # each device holds a slice of the heads
        axes = (spec[2],) if isinstance(spec[2], str) else spec[2]
        heads //= math.prod(jax.sharding.get_abstract_mesh().shape[a] for a in axes)
    kernel = _splash_kernel(heads, padded_length(length, PALLAS_PAD), _INTERPRET["pallas"])
    attend = functools.partial(_splash_attention, kernel=kernel)
    if spec is None:
        return attend(q, k, v)
    return jax.shard_map(attend, in_specs=(spec, spec, spec), out_specs=spec, check_vma=False)(
        q, k, v
    )


def _splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, kernel) -> jax.Array:
    """The splash ``kernel`` on whole arrays. Segment id 1 marks real tokens and 0 padding, so
    real queries attend to real keys only (padded queries see only padding, sliced away)."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk

    length, _, head_dim = q.shape[1:]
    padded = padded_length(length, PALLAS_PAD)
    segments = (jnp.arange(padded) < length).astype(jnp.int32)
    segment_ids = sk.SegmentIds(q=segments, kv=segments)

    def one(q1, k1, v1):  # (heads, length, head_dim) per example
        return kernel(q1, k1, v1, segment_ids=segment_ids)

    # splash does not scale the logits: fold 1/sqrt(head_dim) into the queries.
    q = q * jnp.asarray(1.0 / math.sqrt(head_dim), q.dtype)
    q, k, v = (rearrange(_pad_length(x, padded), "b l h d -> b h l d") for x in (q, k, v))
    out = jax.vmap(one)(q, k, v)
    return rearrange(out, "b h l d -> b l h d")[:, :length]


def dot_product_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, *, implementation: str = "auto"
) -> jax.Array:
    """softmax(q k^T / sqrt(head_dim)) v over ``(batch, length, heads, head_dim)`` arrays.

    >>> out = dot_product_attention(q, k, v, implementation="xla")
    """
    if q.ndim != 4 or q.shape != k.shape or k.shape != v.shape:
        raise ValueError(
            "attention expects q, k, v of one shape (batch, length, heads, head_dim); got "
            f"{q.shape}, {k.shape}, {v.shape}"
        )
    kind = resolve_implementation(implementation, q.dtype, q.shape[1])
    if kind == "cudnn":
        return padded_attention(q, k, v, implementation="cudnn")
    if kind == "pallas":
        return pallas_attention(q, k, v)
    return jax.nn.dot_product_attention(q, k, v, implementation="xla")


def _grid_folding(shape: tuple[int, ...], axes: tuple[int, ...] | None):
    """``(fold, unfold)`` for attention over ``axes`` of a ``(batch, *grid, heads, dim)``
    array: ``fold`` moves the other grid axes into the batch and flattens the attended ones
    into one length; ``unfold`` inverts it."""
    grid = tuple(range(1, len(shape) - 2))
    axes = grid if axes is None else tuple(axes)
    if not axes or any(a not in grid for a in axes):
        raise ValueError(f"attention axes {axes} must be grid axes {grid} of shape {shape}")
    others = tuple(a for a in grid if a not in axes)
    order = (0, *others, *axes, len(shape) - 2, len(shape) - 1)
    moved = tuple(shape[i] for i in order)

    def fold(x: jax.Array) -> jax.Array:
        x = x.transpose(order)
        return x.reshape(-1, math.prod(x.shape[1 + len(others) : -2]), *x.shape[-2:])

    def unfold(x: jax.Array) -> jax.Array:
        inverse = tuple(order.index(i) for i in range(len(shape)))
        return x.reshape(moved).transpose(inverse)

    return fold, unfold, moved[: 1 + len(others)]


def grid_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    axes: tuple[int, ...] | None = None,
    *,
    implementation: str = "auto",
) -> jax.Array:
    """Attention over some axes of a token grid; the other grid axes act as batch.

    ``q``, ``k``, ``v``: ``(batch, *grid, heads, head_dim)``. ``axes`` (indices into that
    shape, 1-based like the grid axes; None means every grid axis) are attended jointly, e.g.
    ``axes=(1,)`` on ``(batch, time, space, heads, dim)`` is temporal attention at every
    spatial position.

    >>> out = grid_attention(q, k, v, axes=(2,))  # spatial attention within each frame
    """
    fold, unfold, _ = _grid_folding(q.shape, axes)
    return unfold(dot_product_attention(fold(q), fold(k), fold(v), implementation=implementation))


def attention_weights(q: jax.Array, k: jax.Array, axes: tuple[int, ...] | None = None):
    """The attention probabilities :func:`grid_attention` applies, materialised (for
    inspection: fused kernels never form them): float32 ``(batch, *other grid axes, heads,
    L, L)``, softmax over keys, ``L`` the attended axes' tokens (flattened in order).

    >>> weights = attention_weights(q, k, axes=(1,))   # (batch, space, heads, time, time)
    """
    fold, _, outer = _grid_folding(q.shape, axes)
    q, k = fold(q).astype(jnp.float32), fold(k).astype(jnp.float32)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    weights = jax.nn.softmax(logits, axis=-1)
    return weights.reshape(*outer, *weights.shape[1:])
