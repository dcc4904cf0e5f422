"""int8 quantization with qwix: post-training (``vjax quantize``) and quantization-aware
training (``train.quantization=int8``), through the same rules.

Modes: ``int8_weights`` stores every conv / dense / attention-projection kernel as int8 with
one float scale per output channel (activations stay float; the kernel is scaled back on the
fly); ``int8`` also quantizes those ops' input activations to int8 with static scales
calibrated on training batches (a dense or einsum input gets one scale per token position,
qwix reducing over the batch and feature axes; a conv input one per tensor), and the matmuls
and convs run int8 x int8 -> int32.
Ops between two activations (attention scores) stay float.

Why qwix and not AQT: qwix quantizes an unchanged Flax module by intercepting its
``dot_general`` / ``einsum`` / ``conv`` calls, so every vjax family works without touching
model code, and one rule set serves post-training quantization, calibration and QAT. AQT
needs its ``dot_general`` injected into each layer (our attention kernels are raw einsums),
and its last release (2025) predates the jax this project runs on.

>>> qmodel, qvariables = quantize_variables(model, variables, "int8", clip, batches)
>>> logits = qmodel.apply(qvariables, video, train=False)
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import qwix
from qwix._src.utils import flax_util

from vjax import storage
from vjax.errors import ArgumentParser, UserError, path_given
from vjax.models.conv import DIMS_3D, cheapest_conv

MODES = ("int8_weights", "int8")
RECURRENT_CELLS = r"(.*/)?cell/.*"


class QuantizationError(UserError):
    """A quantization request that cannot be carried out (bad mode, no calibration data)."""


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise QuantizationError(f"unknown quantization mode {mode!r}; valid: {', '.join(MODES)}")
    return mode


def rules(mode: str, static: bool = True) -> list[qwix.QtRule]:
    """One rule for every op with a weight: per-channel int8 kernels, plus int8 activations
    for ``int8`` (``static``: calibrated scales, one per token for dense and einsum inputs,
    one per tensor for convs; else computed per example, as quantization-aware training
    uses)."""
    act = jnp.int8 if check_mode(mode) == "int8" else None
    static = static if act else None
    everything = qwix.QtRule(
        module_path=".*", weight_qtype=jnp.int8, act_qtype=act, act_static_scale=static
    )
    # Recurrent cells (flax names an nn.RNN's cell "cell") run inside a scan, where a static
    # activation scale cannot live: their kernels only.
    return [qwix.QtRule(module_path=RECURRENT_CELLS, weight_qtype=jnp.int8), everything]


def _is_weight(x: Any) -> bool:
    """True for a module parameter (or its quantized form), False for an activation."""
    return type(x).__name__ == "WithAux" or flax_util.find_param(x) is not None


class _WeightOpsOnly:
    """Quantizes only ops whose right operand is a weight; activation x activation products
    (attention scores and their weighting) run in float, and are not counted as ops, so the
    PTQ, calibration and QAT models name their activation statistics alike."""

    def einsum(self, einsum_str: str, *operands: jax.Array, **kwargs: Any) -> jax.Array:
        if len(operands) == 2 and _is_weight(operands[1]):
            return super().einsum(einsum_str, *operands, **kwargs)
        return jnp.einsum(einsum_str, *operands, **kwargs)

    def dot_general(self, lhs: jax.Array, rhs: Any, *args: Any, **kwargs: Any) -> jax.Array:
        if _is_weight(rhs):
            return super().dot_general(lhs, rhs, *args, **kwargs)
        return jax.lax.dot_general(lhs, rhs, *args, **kwargs)


class PtqProvider(_WeightOpsOnly, qwix.PtqProvider):
    """qwix's PTQ plus weight-only convolutions (qwix's own PTQ insists on int8 activations
    for convs): the int8 kernel is scaled back to float and the conv runs in float."""

    def conv_general_dilated(self, lhs: jax.Array, rhs: Any, *args: Any, **kwargs: Any):
        rule, _ = self._get_current_rule_and_op_id("conv_general_dilated", only_rule=True)
        if rule is None or rule.act_qtype is not None or rule.weight_qtype is None:
            return super().conv_general_dilated(lhs, rhs, *args, **kwargs)
        if type(rhs).__name__ != "WithAux":  # initialising: make the int8 kernel
            from qwix._src.core import conv_general
            from qwix._src.providers.ptq import create_quantized_param

            numbers = jax.lax.conv_dimension_numbers(
                lhs.shape, rhs.shape, kwargs.get("dimension_numbers")
            )
            how = conv_general.get_how_to_quantize(
                dimension_numbers=numbers,
                for_lhs=False,
                qtype=rule.weight_qtype,
                calibration_method=rule.weight_calibration_method,
            )
            rhs = create_quantized_param(flax_util.find_param(rhs), rhs, how)
        kernel = qwix.dequantize(rhs.array).astype(lhs.dtype)
        if _is_video_conv(lhs, args, kwargs):  # vjax's Conv: its fast 2D forms, in float
            return cheapest_conv(lhs, kernel, *args, kwargs.get("feature_group_count", 1))
        return jax.lax.conv_general_dilated(lhs, kernel, *args, **kwargs)


def _is_video_conv(lhs: jax.Array, args: tuple, kwargs: dict) -> bool:
    """Whether a conv call is :class:`vjax.models.conv.Conv`'s declared 3D conv (channels-last
    video, strides and explicit padding only), which :func:`cheapest_conv` computes alike."""
    return (
        lhs.ndim == 5
        and len(args) == 2
        and not isinstance(args[1], str)
        and set(kwargs) <= {"dimension_numbers", "feature_group_count"}
        and tuple(kwargs.get("dimension_numbers") or ()) == DIMS_3D
    )


class QatProvider(_WeightOpsOnly, qwix.QtProvider):
    """qwix's quantized training (fake-quantized forward, straight-through gradients) on the
    same ops as :class:`PtqProvider`; it also records the activation statistics that
    calibrate ``int8``."""


def ptq_model(model: nn.Module, mode: str) -> nn.Module:
    """The model whose ``params`` hold int8 kernels (``init`` makes them, ``apply`` uses them)."""
    return qwix.quantize_model(model, PtqProvider(rules(mode)))


def qat_model(model: nn.Module, mode: str) -> nn.Module:
    """The model trained with fake quantization (``train.quantization``): float params,
    activations quantized with per-example scales (qwix's static-scale statistics cannot be
    collected inside its convolutions' custom gradients); ``vjax quantize`` calibrates
    static scales afterwards."""
    return qwix.quantize_model(model, QatProvider(rules(mode, static=False)))


def _quantizing_pass(qmodel: nn.Module, variables: dict, video: jax.Array) -> dict:
    """Runs the PTQ model as if initialising but on the given float ``variables``: qwix then
    quantizes each kernel and, for ``int8``, sets each activation scale from this batch."""

    def call(scope, video):
        return qmodel.clone(parent=scope)(video, train=False)

    apply = flax.core.apply(call, mutable=True, flags={"initializing": True})
    _, quantized = apply(variables, video, rngs={"params": jax.random.key(0)})  # unused
    return nn.meta.unbox(quantized)


def quantize_variables(
    model: nn.Module,
    variables: dict,
    mode: str,
    clip_shape: Sequence[int],
    calibration: Iterable[jax.Array] = (),
) -> tuple[nn.Module, dict]:
    """``(quantized model, its variables)`` from a float model. ``int8`` sets each activation
    scale from its absolute maximum averaged over the examples of ``calibration`` (normalised
    float video batches of one size): qwix's static-range calibration."""
    qmodel = ptq_model(model, mode)
    quantize = jax.jit(functools.partial(_quantizing_pass, qmodel))
    variables = {**variables, "params": nn.meta.unbox(variables["params"])}
    if mode == "int8_weights":  # no activation statistics: any input quantizes the kernels
        return qmodel, quantize(variables, jnp.zeros((1, *clip_shape), jnp.float32))
    total, count = None, 0
    for video in calibration:
        out = quantize(variables, video)
        total = out if total is None else jax.tree.map(_add_scales, total, out)
        count += 1
    if not count:
        raise QuantizationError("int8 needs at least one calibration batch")
    return qmodel, jax.tree.map(lambda x: _divide_scales(x, count), total)


def _add_scales(a: jax.Array, b: jax.Array) -> jax.Array:
    """Sums the float leaves (scales) of two passes; int8 kernels are the same in both."""
    return a if jnp.issubdtype(a.dtype, jnp.integer) else a + b


def _divide_scales(x: jax.Array, count: int) -> jax.Array:
    return x if jnp.issubdtype(x.dtype, jnp.integer) else x / count


def _abstract_params(qmodel: nn.Module, clip_shape: Sequence[int]) -> Any:
    """The quantized parameter tree (int8 layout and scales) as shapes, nothing computed."""
    dummy = jnp.zeros((1, *clip_shape), jnp.float32)
    abstract = jax.eval_shape(lambda key: qmodel.init(key, dummy, train=False), jax.random.key(0))
    return nn.meta.unbox(abstract["params"])


def dequantized_params(params: dict) -> dict:
    """The plain model's float parameters from a quantized tree: each int8 kernel times its
    per-channel scales (the values the int8 model computes with); activation scales dropped.
    What the ONNX int8 export starts from (:mod:`vjax.deploy.onnx_int8`)."""
    out = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out[key] = dequantized_params(value)
        elif type(value).__name__ != "WithAux":
            out[key] = value
        elif isinstance(value.array, qwix.QArray):  # else a calibrated activation scale
            out[key] = qwix.dequantize(value.array)
    return out


def to_saved(qvariables: dict) -> dict:
    """Plain nested dicts of arrays (int8 values, float scales) for an Orbax checkpoint."""
    return {k: flax.serialization.to_state_dict(v) for k, v in qvariables.items()}


def from_saved(
    model: nn.Module, mode: str, saved: dict, clip_shape: Sequence[int]
) -> tuple[nn.Module, dict]:
    """``(quantized model, variables)`` from :func:`to_saved`'s form of a checkpoint."""
    qmodel = ptq_model(model, mode)
    params = flax.serialization.from_state_dict(
        _abstract_params(qmodel, clip_shape), saved["params"]
    )
    return qmodel, {**saved, "params": params}


def weight_bytes(tree: Any) -> int:
    """Bytes of every array in a (possibly quantized) parameter tree."""
    return int(sum(np.dtype(x.dtype).itemsize * np.size(x) for x in jax.tree.leaves(tree)))


def calibration_videos(config: Any, batches: int, data_dir: str | None = None) -> Iterator:
    """The :func:`calibration_clips`, normalised (what ``int8`` calibrates its activation
    scales on)."""
    from vjax.step import normalize_video

    mean, std = tuple(config.input.mean), tuple(config.input.std)
    for clips in calibration_clips(config, batches, data_dir):
        yield normalize_video(clips, mean, std, jnp.float32)


def calibration_clips(config: Any, batches: int, data_dir: str | None = None) -> Iterator:
    """The first ``batches`` training batches of the checkpoint's own dataset, uint8
    ``(batch, T, H, W, 3)`` clips as the model takes them."""
    from vjax.data.loaders import training_batches

    if "dataset" not in config:
        raise QuantizationError(
            "int8 calibrates on training batches, and this checkpoint records no dataset "
            "(a converted model?); use --mode=int8_weights, or fine-tune it with vjax train first"
        )
    for batch in training_batches(config, batches, data_dir):
        yield np.asarray(batch["video"])


def quantize_checkpoint(
    model_dir: str,
    out_dir: str,
    mode: str,
    calibration_batches: int = 8,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Writes the int8 model of a checkpoint to ``out_dir`` (a folder :func:`vjax.load`,
    ``vjax eval``, ``vjax predict`` and ``vjax export`` open); returns its byte counts.

    >>> quantize_checkpoint("runs/demo/vivit", "runs/demo/vivit_int8", "int8")
    """
    from vjax.checkpoint import write_single
    from vjax.checkpoint_paths import require_new_output
    from vjax.loaded import load

    check_mode(mode)
    require_new_output(out_dir, QuantizationError)
    loaded = load(model_dir, float_model=True)
    config, model, variables = loaded
    metadata = loaded.metadata
    if metadata.get("quantization"):
        raise QuantizationError(f"{model_dir!r} is quantized already; quantize the float model")
    videos = calibration_videos(config, calibration_batches, data_dir) if mode == "int8" else ()
    _, qvariables = quantize_variables(model, variables, mode, metadata["clip_shape"], videos)
    saved = to_saved(jax.device_get(qvariables))
    params = saved.pop("params")
    info = {
        "mode": mode,
        "library": f"qwix {qwix.__version__}",
        "source": model_dir,
        "source_step": loaded.source_step,
    }
    if mode == "int8":
        info["calibration_batches"] = calibration_batches
    state = {"step": np.zeros((), np.int32), "params": params, "model_state": saved}
    write_single(os.path.join(out_dir, "checkpoints"), state, {**metadata, "quantization": info})
    return {
        "float_bytes": weight_bytes(variables["params"]),
        "quantized_bytes": weight_bytes(params),
        "checkpoint_bytes": storage.folder_bytes(out_dir),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``vjax quantize``."""
    parser = ArgumentParser(
        prog="vjax quantize", description="int8 post-training quantization (qwix)"
    )
    parser.add_argument(
        "--model", type=path_given, required=True, help="workdir or vjax convert folder"
    )
    parser.add_argument(
        "--out", type=path_given, required=True, help="new folder for the int8 model"
    )
    parser.add_argument("--mode", default="int8_weights", choices=MODES)
    parser.add_argument("--calibration_batches", type=int, default=8, help="int8 only")
    parser.add_argument("--data_dir", default=None, help="dataset location, if it moved")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        sizes = quantize_checkpoint(
            args.model, args.out, args.mode, args.calibration_batches, args.data_dir
        )
    except (QuantizationError, FileNotFoundError) as e:
        print(f"quantize error: {e}", file=sys.stderr)
        return 2
    ratio = sizes["float_bytes"] / max(sizes["quantized_bytes"], 1)
    print(
        f"wrote {args.out} ({args.mode}): weights {sizes['float_bytes']:,} -> "
        f"{sizes['quantized_bytes']:,} bytes ({ratio:.2f}x smaller); checkpoint on disk "
        f"{sizes['checkpoint_bytes']:,} bytes"
    )
    return 0
