"""The pure train and eval steps, and the state they carry; no data, I/O or mesh code here."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from vjax import objectives
from vjax.loss_scale import initial_loss_scale, keep_if_finite, scaled_value_and_grad
from vjax.models.registry import model_modalities
from vjax.objectives import cross_entropy, task_losses, topk_correct  # noqa: F401 (re-exported)
from vjax.optim import stop_frozen_gradients

Batch = Mapping[str, Any]


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue: the step, parameters, optimiser state, the model's
    other variable collections (``model_state``, e.g. BatchNorm's ``batch_stats``; empty for
    transformers) and, for float16 compute, the dynamic loss scale
    (:mod:`vjax.loss_scale`; None otherwise)."""

    step: jax.Array
    params: Any
    opt_state: Any
    model_state: Any = flax.struct.field(default_factory=dict)
    loss_scale: Any = None

    @property
    def variables(self) -> dict[str, Any]:
        """What ``model.apply`` takes: ``{"params": ..., **model_state}``."""
        return {"params": self.params, **self.model_state}


InputShapes = Sequence[int] | Mapping[str, Sequence[int]]
"""A model input's shape without the batch axis: one array's (``(T, H, W, C)`` of a video
model), or ``{modality: shape}`` for a model that takes several (:func:`model_input`)."""


def batched(shapes: InputShapes, batch: int) -> Any:
    """``shapes`` with a leading batch axis of ``batch`` (what ``model.check_input`` takes)."""
    if isinstance(shapes, Mapping):
        return {name: (batch, *shape) for name, shape in shapes.items()}
    return (batch, *shapes)


PARAM_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Folded into a step's key for the stochastic rounding of bf16 parameters (apply_updates)
# and of the optimiser's bf16 state (update_optimizer).
ROUNDING = 0x524E44
STATE_ROUNDING = 0x535452


def check_param_dtype(name: str) -> Any:
    """The dtype ``train.param_dtype`` names; a ValueError naming the valid ones otherwise."""
    if name not in PARAM_DTYPES:
        raise ValueError(f"unknown param_dtype {name!r}; valid: {', '.join(PARAM_DTYPES)}")
    return PARAM_DTYPES[name]


def cast_floating(tree: Any, dtype: Any) -> Any:
    """Every floating-point leaf of ``tree`` as ``dtype`` (integer leaves kept)."""
    floating = lambda x: jnp.issubdtype(x.dtype, jnp.floating)  # noqa: E731
    return jax.tree.map(lambda x: x.astype(dtype) if floating(x) else x, tree)


def make_init_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    input_shape: InputShapes,
    param_dtype: str = "float32",
) -> Callable[[jax.Array], TrainState]:
    """Returns ``init(key) -> TrainState`` for inputs of ``input_shape`` (a clip's
    ``(T, H, W, C)``, or ``{modality: shape}`` for a model of several modalities): step 0,
    the model's parameters and other collections, the optimiser's initial state, a loss scale
    when the model computes in float16. Parameters keep their logical-axis boxes, so
    ``jax.eval_shape`` of it gives the shardings. ``param_dtype="bfloat16"`` stores the
    parameters, and so the optimiser's moments and the gradients, in bf16 (half the memory;
    other collections such as BatchNorm statistics stay float32; updates are rounded
    stochastically, :func:`apply_updates`)."""
    dtype = check_param_dtype(param_dtype)

    def init(key: jax.Array) -> TrainState:
        dummy = jax.tree.map(
            lambda shape: jnp.zeros(shape, jnp.float32),
            batched(input_shape, 1),
            is_leaf=lambda x: isinstance(x, tuple),
        )
        variables = dict(model.init({"params": key}, dummy, train=False))
        params = cast_floating(variables.pop("params"), dtype)
        return TrainState(
            jnp.zeros((), jnp.int32),
            params,
            tx.init(params),
            variables,
            initial_loss_scale(model.dtype),
        )

    return init


def round_stochastically(x: jax.Array, seed: jax.Array) -> jax.Array:
    """float32 ``x`` to bfloat16, rounded up or down at random in proportion to the distance
    (unbiased: ``E[result] = x``): uniform noise added below bf16's last mantissa bit, then
    truncated (sign-magnitude bits make it symmetric for negative values). The noise is a
    counter hash of each element's position and ``seed`` (uint32; murmur3's finalizer): a few
    integer ops fused into the update, where threefry's bits cost more than the step's own
    work. Inf and NaN are kept as they are (a carry would turn some NaNs into 0)."""
    x = x.astype(jnp.float32)
    h = jax.lax.iota(jnp.uint32, x.size).reshape(x.shape) * jnp.uint32(0x9E3779B1) + seed
    for shift, multiplier in ((16, 0x85EBCA6B), (13, 0xC2B2AE35)):
        h = (h ^ (h >> shift)) * jnp.uint32(multiplier)
    noise = (h ^ (h >> 16)) >> 16
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    kept = (bits + noise) & jnp.uint32(0xFFFF0000)
    rounded = jax.lax.bitcast_convert_type(kept, jnp.float32)
    return jnp.where(jnp.isfinite(x), rounded, x).astype(jnp.bfloat16)


def apply_updates(params: Any, updates: Any, key: jax.Array) -> Any:
    """``params + updates``, as ``optax.apply_updates``, but a bfloat16 parameter
    (``train.param_dtype``) takes the sum in float32 rounded stochastically to bf16: rounded
    to nearest, an update below half a bf16 step at the weight's size (lr x layer decay late
    in a cosine: ~6e-5 for a weight of 0.02) is lost at every step, and the run stops
    following the float32 one (Zamirai et al. 2020, "Revisiting BFloat16 Training")."""
    leaves, treedef = jax.tree.flatten(params)
    seeds = jax.random.bits(key, (len(leaves),), jnp.uint32)  # one per parameter, this step
    added = []
    for i, (p, u) in enumerate(zip(leaves, treedef.flatten_up_to(updates), strict=True)):
        if u is None:
            added.append(p)
        elif p.dtype == jnp.bfloat16:
            total = p.astype(jnp.float32) + u.astype(jnp.float32)
            added.append(round_stochastically(total, seeds[i]))
        else:
            added.append((p + u).astype(p.dtype))
    return jax.tree.unflatten(treedef, added)


def update_optimizer(
    tx: optax.GradientTransformation, grads: Any, opt_state: Any, params: Any, key: jax.Array
) -> tuple[Any, Any]:
    """``(updates, opt_state)`` of ``tx``, computed in float32; a bfloat16 state leaf (the
    moments of ``train.param_dtype="bfloat16"``) is stored back rounded stochastically, as
    :func:`apply_updates` stores bf16 parameters. Rounded to nearest, AdamW's second moment
    at b2 = 0.999 moves by 0.1% a step, under half a bf16 step: it stopped following the
    gradients (3x too small updates after they shrank tenfold)."""
    leaves, treedef = jax.tree.flatten(opt_state)
    if all(leaf.dtype != jnp.bfloat16 for leaf in leaves):
        return tx.update(grads, opt_state, params)
    f32 = lambda tree: cast_floating(tree, jnp.float32)  # noqa: E731
    updates, new_state = tx.update(f32(grads), f32(opt_state), f32(params))
    seeds = jax.random.bits(key, (len(leaves),), jnp.uint32)
    stored = [
        round_stochastically(new, seeds[i]) if old.dtype == jnp.bfloat16 else new.astype(old.dtype)
        for i, (new, old) in enumerate(zip(treedef.flatten_up_to(new_state), leaves, strict=True))
    ]
    return updates, jax.tree.unflatten(treedef, stored)


def normalize_video(
    video: jax.Array, mean: Sequence[float], std: Sequence[float], dtype: Any
) -> jax.Array:
    """uint8 frames -> float, per-channel standardised (done on device, so hosts ship uint8)."""
    video = video.astype(jnp.float32) / 255.0
    return ((video - jnp.asarray(mean)) / jnp.asarray(std)).astype(dtype)


def model_input(model: nn.Module, batch: Batch, mean: Sequence[float], std: Sequence[float]) -> Any:
    """What the model is called with, from a batch: for each of its modalities
    (:func:`~vjax.models.model_modalities`) ``video`` normalised by :func:`normalize_video`,
    ``audio`` (a normalised log-mel spectrogram) cast to the compute dtype. One modality: that
    array; several: ``{modality: array}``, plus ``has_audio`` when the batch has it.

    >>> inputs = model_input(model, batch, mean, std)   # (B, T, H, W, C) or {"video", "audio"}
    >>> logits = model.apply(variables, inputs, train=False)
    """
    modalities = model_modalities(model)
    missing = [name for name in modalities if name not in batch]
    if missing:
        raise KeyError(f"the model takes {modalities}, but the batch has no {missing}")

    def one(name: str) -> jax.Array:
        if name == "video":
            return normalize_video(batch["video"], mean, std, model.dtype)
        return jnp.asarray(batch[name]).astype(model.dtype)

    if len(modalities) == 1:
        return one(modalities[0])
    inputs = {name: one(name) for name in modalities}
    if "has_audio" in batch:
        inputs["has_audio"] = jnp.asarray(batch["has_audio"], bool)
    return inputs


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    label_smoothing: float = 0.0,
    objective: str | objectives.Objective = "classification",
    freeze: str = "",
) -> Callable[..., tuple[TrainState, dict]]:
    """Returns ``step(state, batch, key, frozen=None) -> (state, metrics)`` minimising
    ``objective`` (a name or an :class:`~vjax.objectives.Objective`, e.g. a distilled one);
    dropout (and mask) keys fold in the step. ``frozen``: variables the objective reads but
    never trains (a distillation teacher's), passed to its loss as ``frozen=``. ``freeze``:
    ``optimizer.freeze``, the parameters ``tx`` does not train (their gradients are not
    computed, :func:`~vjax.optim.stop_frozen_gradients`)."""
    spec = objectives.get(objective)
    given = {"label_smoothing": label_smoothing}
    options = {name: given[name] for name in spec.options}

    def train_step(
        state: TrainState, batch: dict[str, jax.Array], key: jax.Array, frozen: Any = None
    ):
        inputs = model_input(model, batch, mean, std)
        dropout_key = jax.random.fold_in(key, state.step)
        extra = {} if frozen is None else {"frozen": jax.lax.stop_gradient(frozen)}

        def loss_fn(params):
            params = stop_frozen_gradients(params, freeze)
            variables = {"params": params, **state.model_state}
            loss, metrics, model_state = spec.loss(
                model, variables, batch, inputs, dropout_key, list(state.model_state),
                **options, **extra,
            )  # fmt: skip
            return loss, (metrics, model_state)

        grad_fn = scaled_value_and_grad(loss_fn, state.loss_scale)
        loss_scale, finite, (_, (metrics, model_state)), grads = grad_fn(state.params)
        state_key = jax.random.fold_in(dropout_key, STATE_ROUNDING)
        updates, opt_state = update_optimizer(tx, grads, state.opt_state, state.params, state_key)
        params = apply_updates(state.params, updates, jax.random.fold_in(dropout_key, ROUNDING))
        metrics["grad_norm"] = optax.tree_utils.tree_norm(grads)
        model_state = dict(model_state)
        if loss_scale is not None:  # float16: an overflowing step only lowers the scale
            new = (params, opt_state, model_state)
            old = (state.params, state.opt_state, state.model_state)
            params, opt_state, model_state = keep_if_finite(finite, new, old)
            metrics["grad_norm"] = jnp.where(finite, metrics["grad_norm"], 0.0)
            metrics["skipped"] = 1.0 - finite.astype(jnp.float32)
            metrics["loss_scale"] = state.loss_scale.scale
        new_state = TrainState(state.step + 1, params, opt_state, model_state, loss_scale)
        return new_state, metrics

    return train_step


def make_eval_step(
    model: nn.Module,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    objective: str | objectives.Objective = "classification",
) -> Callable[[Any, dict[str, jax.Array]], jax.Array]:
    """Returns ``step(variables, batch) -> per-example outputs`` of the batch's model input
    (:func:`model_input`: uint8 ``batch["video"]``, and ``batch["audio"]`` for audio models):
    for classification float32 logits (multi-task: concatenated over the tasks,
    :func:`vjax.tasks.concat_classes`), scored on the host from the gathered logits
    (:mod:`vjax.evaluate`); for other objectives their
    per-example validation losses (:mod:`vjax.objectives`).

    ``variables`` is ``{"params": ..., **model_state}`` (see :attr:`TrainState.variables`).
    """
    evaluate = objectives.get(objective).evaluate

    def eval_step(variables: Any, batch: dict[str, jax.Array]) -> jax.Array:
        return evaluate(model, variables, batch, model_input(model, batch, mean, std))

    return eval_step
