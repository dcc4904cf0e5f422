"""int8 ONNX of a ``vjax quantize`` folder, run by onnxruntime's quantized kernels.

jax2onnx cannot express qwix's int8 kernels, so the plain model is exported with the float
kernels the int8 model computes with (each int8 kernel times its scales), then onnxruntime's
quantizer rewrites the ops that carry a weight (Conv, MatMul with a weight, Gemm), as vjax's
qwix rules do. It quantizes those kernels again on its own uint8 grid (per channel; zero
points other than qwix's 0, steps about absmax/127 against qwix's absmax/127.5), so the
file's integers are not the JAX model's: each weight moves by up to half a step, a second
rounding (``signature.json``'s ``onnx_quantization`` measures the logits' distance).

* ``int8``: static QDQ (QuantizeLinear/DequantizeLinear pairs, which onnxruntime fuses into
  QLinearConv, QLinearMatMul, QGemm), per-channel 8-bit weights, uint8 activations whose
  ranges are calibrated (min/max, one per tensor) on the same training batches
  ``vjax quantize`` used.
* ``int8_weights``: dynamic quantization (ConvInteger, MatMulInteger): per-channel 8-bit
  weights; onnxruntime has no float-activation int8 kernels, so it quantizes each input
  per call instead of keeping it float (one range per call: a clip's logits move a little
  with the other clips of its batch, which the JAX int8_weights model's do not).

The weights are stored as uint8 (zero point per channel), not int8: x86 CPUs without VNNI
run onnxruntime's uint8 x int8 kernels with 16-bit partial sums that saturate (its
quantization docs), which put a tiny ViViT's int8_weights logits 0.18 away from the JAX int8
model's (range 1.16) where uint8 x uint8 gives 0.010.

Ops between two activations (attention scores) stay float, as in the JAX int8 model. The
attention projections and the tubelet embedding, which jax2onnx writes as ``Einsum``, stay
float too (onnxruntime quantizes Conv, MatMul and Gemm).

    vjax export --model=runs/demo/vivit_int8 --out=exported/vivit_int8 --format=onnx
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from onnxruntime import quantization as oq

WEIGHT_OPS = ("Conv", "MatMul", "Gemm")


def to_onnx_int8(
    config: Any,
    metadata: dict,
    variables: dict,
    clip: Sequence[int],
    path: str,
    data_dir: str | None = None,
    reference: Callable[[np.ndarray], Any] | None = None,
) -> dict[str, Any]:
    """Writes the int8 ONNX file of a quantized checkpoint's ``variables`` to ``path``;
    returns how it was quantized and, given the JAX int8 model's ``reference(video) ->
    (logits, ...)``, how far the file's logits are from it on two random clips (for
    ``signature.json``: onnxruntime's int8 arithmetic is not qwix's)."""
    from vjax.deploy.export import inference_function, to_onnx
    from vjax.deploy.quantize import calibration_clips, dequantized_params
    from vjax.loaded import plain_module

    info = metadata["quantization"]
    float_variables = {**variables, "params": dequantized_params(variables["params"])}
    multi_label = bool(metadata.get("multi_label", False))
    fn = inference_function(config, plain_module(config, metadata), float_variables, multi_label)
    with tempfile.TemporaryDirectory(prefix="vjax_onnx_int8_") as tmp:
        float_path = os.path.join(tmp, "float.onnx")
        to_onnx(fn, clip, float_path, config.model.name)  # checked against JAX
        if info["mode"] == "int8":
            batches = int(info.get("calibration_batches", 8))
            clips = calibration_clips(config, batches, data_dir)
            quantize_onnx(float_path, path, "int8", clips, tmp)
            how = f"onnxruntime static QDQ, calibrated on {batches} training batches"
        else:
            quantize_onnx(float_path, path, "int8_weights", (), tmp)
            how = "onnxruntime dynamic (int8 weights, activations quantized per call)"
    return {"method": how, **_check_runs(path, clip, reference)}


def _check_runs(
    path: str, clip: Sequence[int], reference: Callable[[np.ndarray], Any] | None
) -> dict[str, float]:
    """The int8 file must load in onnxruntime and give finite logits for a 2-clip batch;
    returns their largest distance from ``reference``'s and the range of those."""
    from vjax.deploy.runtime import RUNNERS

    video = np.random.default_rng(0).integers(0, 256, (2, *clip), np.uint8)
    logits = np.asarray(RUNNERS["onnx"](path, {})(video)[0])
    if logits.shape[0] != 2 or not np.isfinite(logits).all():
        raise ValueError(f"the int8 ONNX graph gives logits of shape {logits.shape} with NaN/inf")
    if reference is None:
        return {}
    expected = np.asarray(reference(video)[0], np.float32)
    return {
        "max_abs_logit_difference_from_jax": float(np.abs(logits - expected).max()),
        "jax_logit_range": float(np.ptp(expected)),
    }


def quantize_onnx(
    float_path: str,
    out_path: str,
    mode: str,
    calibration: Iterable[np.ndarray] = (),
    tmp: str | None = None,
) -> None:
    """onnxruntime's int8 form of a float ONNX file (see the module docstring); ``int8``
    calibrates on ``calibration``, uint8 ``video`` batches."""
    import onnx

    with tempfile.TemporaryDirectory() as own:
        prepared = os.path.join(tmp or own, "prepared.onnx")
        # Its graph optimisation folds a conv net's BatchNorm and kernel layout ops into
        # constant conv weights (which the quantizer needs), but it also constant-folds
        # jax2onnx's per-token broadcast of each attention kernel (one copy per token: a tiny
        # ViViT's int8 file grew to 2.3x the float one at 9 tokens, 6.1x at 33), and a
        # transformer's dense weights quantize without it: only a graph with convs gets it.
        convs = any(n.op_type == "Conv" for n in onnx.load(float_path).graph.node)
        oq.quant_pre_process(float_path, prepared, skip_optimization=not convs)
        model = onnx.load(prepared)
        weights = {i.name for i in model.graph.initializer}
        # qwix's rules: only ops with a weight; activation x activation products stay float.
        float_ops = [
            n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] not in weights
        ]
        common = {
            "per_channel": True,
            "weight_type": oq.QuantType.QUInt8,  # see the module docstring
            "op_types_to_quantize": list(WEIGHT_OPS),
            "nodes_to_exclude": float_ops,
        }
        if mode == "int8_weights":
            oq.quantize_dynamic(prepared, out_path, **common)
            return
        reader = _Batches(calibration)
        oq.quantize_static(prepared, out_path, reader, quant_format=oq.QuantFormat.QDQ,
                           activation_type=oq.QuantType.QUInt8, **common)  # fmt: skip
        if not reader.count:
            raise ValueError("int8 ONNX needs at least one calibration batch")


class _Batches(oq.CalibrationDataReader):
    """onnxruntime's calibration reader over uint8 video batches (counts what it served)."""

    def __init__(self, batches: Iterable[np.ndarray]):
        self._batches, self.count = iter(batches), 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        if batch is None:
            return None
        self.count += 1
        return {"video": np.asarray(batch, np.uint8)}
