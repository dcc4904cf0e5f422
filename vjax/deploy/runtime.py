"""Runs an exported model in its own runtime, without the training stack (no flax, optax,
TensorFlow or vjax models): StableHLO with plain jax, ONNX with onnxruntime, the SavedModel
and TFLite files with TensorFlow.

>>> model = load_exported("exported/vivit")            # StableHLO if there, else ONNX
>>> logits, probs = model(video)                        # uint8 (B, T, H, W, 3) numpy
>>> model.signature["tasks"]["label"]["classes"]
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from vjax.deploy.signature import SIGNATURE_FILE, read_signature
from vjax.errors import NotFoundError, UserError, one_line

OUTPUTS = ("logits", "probabilities")
# What `vjax predict` and load_exported pick by default, in order.
PREFERRED = ("stablehlo", "onnx")

Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class ExportedModel:
    """An exported inference function: ``model(video) -> (logits, probabilities)``."""

    def __init__(self, folder: str, fmt: str, run: Runner, signature: dict[str, Any]):
        self.folder, self.format, self.signature, self._run = folder, fmt, signature, run

    def __call__(self, video: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        expected = tuple(self.signature["input"]["shape"][1:])
        video = np.asarray(video)
        if video.dtype != np.uint8 or video.ndim != 5 or video.shape[1:] != expected:
            raise UserError(
                f"{self.folder} takes uint8 clips of shape (batch, {', '.join(map(str, expected))})"
                f"; got {video.dtype} {video.shape}"
            )
        logits, probs = self._run(video)
        return np.asarray(logits, np.float32), np.asarray(probs, np.float32)


def _stablehlo(path: str, signature: dict) -> Runner:
    import jax

    with open(path, "rb") as f:
        exported = jax.export.deserialize(bytearray(f.read()))
    backend = jax.default_backend()
    here = {"gpu": ("cuda", "rocm")}.get(backend, (backend,))
    if not set(here) & set(exported.platforms):
        wanted = ",".join((*exported.platforms, here[0]))
        raise UserError(
            f"{path} was exported for {', '.join(exported.platforms)}, and this machine runs "
            f"{backend}: export it again with --platforms={wanted}"
        )
    return jax.jit(exported.call)


def _onnx(path: str, signature: dict) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # no shape-merge warnings on every load
    session = ort.InferenceSession(path, options, providers=ort.get_available_providers())

    def run(video: np.ndarray):
        return session.run(list(OUTPUTS), {"video": video})

    return run


def _savedmodel(path: str, signature: dict) -> Runner:
    import tensorflow as tf

    serve = tf.saved_model.load(path).signatures["serving_default"]

    def run(video: np.ndarray):
        out = serve(video=tf.constant(video))
        return tuple(out[name].numpy() for name in OUTPUTS)

    return run


def _tflite(path: str, signature: dict) -> Runner:
    """The TFLite model has a fixed batch (``tflite_batch``): other batches run in pieces of
    it, the last one filled up with copies of its last clip whose outputs are dropped."""
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=path)
    serve = interpreter.get_signature_runner()  # named inputs and outputs
    batch = signature["tflite_batch"]

    def run(video: np.ndarray):
        count = len(video)
        filler = np.repeat(video[-1:], -count % batch, axis=0)
        padded = np.concatenate([video, filler]) if len(filler) else video
        parts = [serve(video=padded[i : i + batch]) for i in range(0, len(padded), batch)]
        return tuple(np.concatenate([p[name] for p in parts])[:count] for name in OUTPUTS)

    return run


RUNNERS = {"stablehlo": _stablehlo, "onnx": _onnx, "savedmodel": _savedmodel, "tflite": _tflite}


def load_exported(folder: str, fmt: str | None = None) -> ExportedModel:
    """The exported model in ``folder`` in format ``fmt`` (default: the first of
    :data:`PREFERRED` that was exported)."""
    signature = read_signature(folder)
    files = signature["files"]
    if fmt is None:
        fmt = next((f for f in PREFERRED if f in files), None) or next(iter(files), None)
    if fmt not in files:
        raise NotFoundError(
            f"{folder!r} holds no {fmt} export (it has: {', '.join(files) or 'none'}); "
            f"export it with vjax export --format={fmt}"
        )
    return ExportedModel(folder, fmt, _open_runner(folder, fmt, files[fmt], signature), signature)


def _open_runner(folder: str, fmt: str, file: str, signature: dict) -> Runner:
    """The runner of ``fmt``'s file; a missing or unreadable (truncated, not a model) file is
    a UserError naming it. A runtime that is not installed keeps its ImportError."""
    from vjax import storage

    path = os.path.join(folder, file)
    if not storage.path(path).exists():
        raise NotFoundError(
            f"{path} is missing ({SIGNATURE_FILE} lists it as the {fmt} export); re-export "
            f"with vjax export --format={fmt}"
        )
    # The runtimes open local files: an export in a bucket runs from a downloaded copy of
    # the format's file or folder and its sidecars (ONNX keeps weights over 1 MB in
    # model.onnx.data), not of the other formats.
    here = storage.local_copy(folder, only=lambda name: name.split("/")[0].startswith(file))
    try:
        return RUNNERS[fmt](os.path.join(here, file), signature)
    except ImportError:
        raise
    except Exception as e:  # noqa: BLE001  (the runtimes raise anything on a bad file)
        raise UserError(
            f"{path} is not a readable {fmt} model ({one_line(e)[:200]}); re-export with "
            f"vjax export --format={fmt}"
        ) from e
