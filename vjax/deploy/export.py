"""``vjax export --model=DIR --out=DIR --format=stablehlo,onnx,savedmodel,tflite``.

What is exported is the whole inference function: a uint8 clip ``(batch, T, H, W, 3)`` in,
float32 ``logits`` and ``probabilities`` out (concatenated over the tasks of a multi-task
model, softmax within each task), the training normalisation inside. The batch dimension is
symbolic (one export runs any batch) in every format but TFLite, which needs static shapes
and is exported for ``--tflite_batch`` clips. Beside the files, ``signature.json``
(:mod:`vjax.deploy.signature`) says how to cut and feed clips and how to read the outputs.

* ``stablehlo``: ``model.stablehlo``, ``jax.export`` serialized; runs with plain jax (no vjax,
  no flax): ``jax.export.deserialize(open(f, "rb").read()).call(video)``.
* ``onnx``: ``model.onnx`` through jax2onnx; runs in onnxruntime. From a ``vjax quantize``
  folder: an int8 graph of onnxruntime's quantized ops (:mod:`vjax.deploy.onnx_int8`).
* ``savedmodel``: ``savedmodel/`` through jax2tf, signature ``serving_default``
  (``video`` -> ``logits``, ``probabilities``), for TF Serving. Its StableHLO is written for
  the installed TensorFlow's version and read back by it (:mod:`vjax.deploy.tf_stablehlo`).
* ``tflite``: ``model.tflite`` (LiteRT) converted from the same TF function.

A format that cannot express the model stops with :class:`ExportError` naming the model, the
format and the op. ``DIR`` is a training workdir, a ``vjax convert`` folder or a ``vjax
quantize`` folder.

    vjax export --model=runs/demo/vivit --out=exported/vivit --format=onnx,stablehlo
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from vjax import storage
from vjax.deploy.signature import make_signature, write_signature
from vjax.errors import ArgumentParser, UserError, path_given, positive_int

FORMATS = ("stablehlo", "onnx", "savedmodel", "tflite")
FILES = {
    "stablehlo": "model.stablehlo",
    "onnx": "model.onnx",
    "savedmodel": "savedmodel",
    "tflite": "model.tflite",
}
TOOLS = {"stablehlo": "jax.export", "onnx": "jax2onnx", "savedmodel": "jax2tf",
         "tflite": "the TFLite converter"}  # fmt: skip
OUTPUTS = ("logits", "probabilities")
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")  # what jax.export can target


class ExportError(UserError):
    """A model that a format cannot express (the message names the model, format and op)."""


def inference_function(
    config: Any, model: Any, variables: dict, multi_label: bool = False
) -> Callable[[jax.Array], tuple[jax.Array, jax.Array]]:
    """``uint8 (B, T, H, W, 3) -> (logits, probabilities)``, float32, normalisation inside;
    several tasks: both concatenated over the tasks, probabilities a softmax per task (a
    sigmoid per class for ``multi_label`` models, whose classes are not exclusive)."""
    from vjax.loaded import normalized_apply
    from vjax.tasks import task_outputs

    apply = normalized_apply(config, model, variables)

    def infer(video: jax.Array) -> tuple[jax.Array, jax.Array]:
        out = apply(video)
        logits = [v.astype(jnp.float32) for v in task_outputs(out, model.num_classes).values()]
        score = jax.nn.sigmoid if multi_label else partial(jax.nn.softmax, axis=-1)
        probs = [score(v) for v in logits]
        return jnp.concatenate(logits, axis=-1), jnp.concatenate(probs, axis=-1)

    return infer


def _video_spec(clip: Sequence[int], batch: int | None = None) -> jax.ShapeDtypeStruct:
    """The input: a symbolic batch ``b`` (or a fixed one) of uint8 clips."""
    (b,) = jax.export.symbolic_shape("b") if batch is None else (batch,)
    return jax.ShapeDtypeStruct((b, *clip), jnp.uint8)


def to_stablehlo(fn: Callable, clip: Sequence[int], path: str, platforms: Sequence[str]) -> None:
    exported = jax.export.export(jax.jit(fn), platforms=tuple(platforms))(_video_spec(clip))
    with open(path, "wb") as f:
        f.write(exported.serialize())


@contextlib.contextmanager
def _jax2onnx_without_shape_patch() -> Iterator[None]:
    """jax2onnx (0.17) replaces ``jnp.shape`` while tracing with a version that returns a
    traced array, which breaks flax's ``nn.scan`` (recurrent models); keep the real one."""
    from jax2onnx.plugins.jax.numpy.shape import JnpShapePlugin

    original = JnpShapePlugin.__dict__["binding_specs"]
    JnpShapePlugin.binding_specs = classmethod(lambda cls: [])
    try:
        yield
    finally:
        JnpShapePlugin.binding_specs = original


def to_onnx(fn: Callable, clip: Sequence[int], path: str, name: str) -> None:
    logging.getLogger("jax2onnx").setLevel(logging.ERROR)  # it logs every plugin it skips
    from jax2onnx import to_onnx as convert

    with _jax2onnx_without_shape_patch():
        convert(
            fn,
            [_video_spec(clip)],
            model_name=name,
            input_names=["video"],
            output_names=list(OUTPUTS),
            return_mode="file",
            output_path=path,
        )
    _drop_intermediate_shapes(path)
    _check_onnx(fn, clip, path)


def _drop_intermediate_shapes(path: str) -> None:
    """Removes the graph's shape annotations of intermediate values (inputs and outputs keep
    theirs). jax2onnx (0.17) moves elementwise ops between its channels-first convs out of
    their transposes but keeps their channels-last shapes: onnxruntime then rejects the
    stale shapes at load (R(2+1)D-18: ``Node (node_Add_72) Op (Add) [ShapeInferenceError]``
    at the second block of a stage) and infers the true ones without them."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    del model.graph.value_info[:]
    onnx.save(model, path)


def _check_onnx(fn: Callable, clip: Sequence[int], path: str, atol: float = 1e-4) -> None:
    """The file must load in onnxruntime and give JAX's logits on a random 2-clip batch:
    jax2onnx can mis-convert a graph silently (it did for max pooling with explicit padding,
    see :func:`vjax.models.conv_blocks.max_pool3d`)."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    video = np.random.default_rng(0).integers(0, 256, (2, *clip), np.uint8)
    expected = np.asarray(jax.jit(fn)(video)[0])
    got = session.run(["logits"], {"video": video})[0]
    error = float(np.abs(got - expected).max())
    if not error <= atol * max(1.0, float(np.abs(expected).max())):
        raise ValueError(
            f"the ONNX graph gives logits {error:.3g} away from JAX's: an op of this model "
            f"is mis-converted (error: numerical mismatch)"
        )


def _tf_function(fn: Callable, clip: Sequence[int], batch: int | None):
    """A ``tf.function`` ``video -> {"logits", "probabilities"}`` wrapping the jax function
    (its StableHLO embedded), with a symbolic or fixed batch, and its concrete function:
    traced now, its StableHLO written for and read back by the installed TensorFlow
    (:mod:`vjax.deploy.tf_stablehlo`)."""
    import tensorflow as tf
    from jax.experimental import jax2tf

    from vjax.deploy.tf_stablehlo import check_tensorflow_reads, serialized_for_tensorflow

    dims = ", ".join(str(d) for d in clip)
    converted = jax2tf.convert(
        fn, polymorphic_shapes=[f"({batch or 'b'}, {dims})"], with_gradient=False
    )
    spec = tf.TensorSpec((batch, *clip), tf.uint8, name="video")
    function = tf.function(
        lambda video: dict(zip(OUTPUTS, converted(video), strict=True)),
        autograph=False,
        input_signature=[spec],
    )
    with serialized_for_tensorflow():
        concrete = function.get_concrete_function()
    check_tensorflow_reads(concrete)
    return function, concrete


def to_savedmodel(fn: Callable, clip: Sequence[int], path: str) -> None:
    import tensorflow as tf

    module = tf.Module()
    module.serve, concrete = _tf_function(fn, clip, None)
    tf.saved_model.save(module, path, signatures={"serving_default": concrete})


def to_tflite(fn: Callable, clip: Sequence[int], path: str, batch: int) -> None:
    import tensorflow as tf

    module = tf.Module()
    module.serve, concrete = _tf_function(fn, clip, batch)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
    with open(path, "wb") as f:
        f.write(converter.convert())


# Where the converters name the operation they cannot express.
_OP_PATTERNS = (
    r"primitive '([\w.\-]+)'",  # jax2onnx: No plugins registered for primitive 'x'
    r"'([\w.\-]+)' op is not",  # MLIR/TFLite: 'vhlo.x' op is not part of ...
    r"Unsupported (conv layouts)",
    r"Op \((\w+)\)",  # onnxruntime: Node (node_Add_74) Op (Add) [ShapeInferenceError]
    r"passed to ([\w.\-]+) at position",  # jax2onnx: a layer converter got a non-array
    r"[Uu]nsupported op(?:eration)?:? '?([\w.\-]+)",
)


def describe_failure(model_name: str, fmt: str, error: BaseException) -> str:
    """One line naming the model, the format, the op (when the converter names one) and why."""
    text = str(error)
    op = next((m.group(1) for p in _OP_PATTERNS if (m := re.search(p, text))), None)
    lines = [line.strip() for line in text.splitlines() if "error" in line.lower()]
    why = (lines or [line.strip() for line in text.splitlines() if line.strip()] or [""])[0]
    problem = (
        f"op {op!r} is not supported by {TOOLS[fmt]} ({why[:300]})"
        if op
        else f"{TOOLS[fmt]} failed: {why[:300]}"
    )
    others = ",".join(f for f in FORMATS if f != fmt)
    return (
        f"cannot export model {model_name!r} to {fmt}: {problem}. The other formats may still "
        f"work: try --format={others}."
    )


def check_formats(formats: Sequence[str] | str) -> list[str]:
    """The formats asked for, each once (``"onnx,stablehlo"`` or a list of them); an unknown
    one or none is an ExportError listing the valid ones."""
    if isinstance(formats, str):  # one or several, as --format takes them; not its letters
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    if not formats:
        raise ExportError(f"--format names no format; give one or more of {','.join(FORMATS)}")
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ExportError(f"unknown export format(s) {unknown}; valid: {', '.join(FORMATS)}")
    return list(dict.fromkeys(formats))


def check_out_dir(out_dir: str) -> None:
    """Raises :class:`ExportError` unless ``out_dir`` (local or in a bucket) is a new or empty
    folder: never a file, a training workdir (its ``checkpoints/``; ``vjax predict`` would then
    pick the export over the newer checkpoints) or a folder with other files, which an export
    would mix with or overwrite; a bucket that cannot be written is named before the export."""
    folder = storage.path(out_dir)
    if folder.is_file():
        raise ExportError(f"--out={out_dir!r} is a file; give a new folder for the export")
    held = sorted(child.name for child in folder.iterdir()) if folder.is_dir() else []
    if "checkpoints" in held:
        raise ExportError(
            f"--out={out_dir!r} is a training workdir (it holds checkpoints/); export into a "
            f"new folder, e.g. --out={os.path.join(out_dir, 'exported')}"
        )
    if held:
        shown = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
        raise ExportError(
            f"--out={out_dir!r} is not empty (it holds {shown}); export into a new or empty folder"
        )
    storage.require_writable(out_dir)


def _make_out_dir(out_dir: str) -> None:
    """Creates the local folder ``out_dir`` (and its parents); a path that cannot be one is an
    ExportError."""
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise ExportError(f"cannot create --out={out_dir!r}: {e.strerror or e}") from e


def export_model(
    model_dir: str,
    out_dir: str,
    formats: Sequence[str] | str = ("stablehlo", "onnx"),
    *,
    tflite_batch: int = 1,
    platforms: Sequence[str] | None = None,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Writes ``formats`` of the checkpoint's inference function and ``signature.json`` into
    ``out_dir``, a new or empty folder (:func:`check_out_dir`); returns the signature. The
    ONNX file of a ``vjax quantize`` folder runs onnxruntime's int8 ops
    (:mod:`vjax.deploy.onnx_int8`; ``int8`` calibrates on the checkpoint's training data,
    found in ``data_dir`` if it moved).

    >>> export_model("runs/demo/vivit", "exported/vivit", ["stablehlo", "onnx"])
    """
    from vjax.loaded import load

    formats = check_formats(formats)
    check_out_dir(out_dir)
    loaded = load(model_dir)
    config, model, variables = loaded
    metadata = loaded.metadata
    clip = [int(v) for v in metadata["clip_shape"]]
    fn = inference_function(config, model, variables, bool(metadata.get("multi_label", False)))
    name = config.model.name
    platforms = list(platforms or [jax.default_backend()])
    # A bucket's export is written locally (the converters take local paths), then uploaded;
    # the signature last, once every file it lists is there.
    with storage.staged_folder(out_dir) as folder:
        _make_out_dir(folder)
        files, extra = {}, {}
        for fmt in formats:
            path = os.path.join(folder, FILES[fmt])
            try:
                if fmt == "stablehlo":
                    to_stablehlo(fn, clip, path, platforms)
                elif fmt == "onnx" and metadata.get("quantization"):
                    from vjax.deploy.onnx_int8 import to_onnx_int8

                    extra["onnx_quantization"] = to_onnx_int8(
                        config, metadata, variables, clip, path, data_dir, reference=fn
                    )
                elif fmt == "onnx":
                    to_onnx(fn, clip, path, name)
                elif fmt == "savedmodel":
                    to_savedmodel(fn, clip, path)
                else:
                    to_tflite(fn, clip, path, tflite_batch)
            except UserError as e:  # already says what to do (e.g. no calibration data)
                raise ExportError(f"cannot export model {name!r} to {fmt}: {e}") from e
            except Exception as e:  # noqa: BLE001  (any converter failure: one clear message)
                raise ExportError(describe_failure(name, fmt, e)) from e
            files[fmt] = FILES[fmt]
    extra.update(
        source=storage.absolute(model_dir), source_step=loaded.source_step, platforms=platforms
    )
    if "tflite" in files:
        extra["tflite_batch"] = tflite_batch
    if metadata.get("quantization"):
        extra["quantization"] = metadata["quantization"]
    signature = make_signature(config.to_dict(), metadata, files, **extra)
    write_signature(out_dir, signature)
    return signature


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``vjax export``; a model a format cannot express exits 2 with one line."""
    parser = ArgumentParser(prog="vjax export", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", type=path_given, required=True, help="workdir, convert or quantize folder"
    )
    parser.add_argument(
        "--out", type=path_given, required=True, help="new folder for the files + signature.json"
    )
    parser.add_argument("--format", default="stablehlo,onnx", help=f"any of {','.join(FORMATS)}")
    parser.add_argument("--tflite_batch", type=positive_int, default=1, help="TFLite's batch")
    parser.add_argument("--platforms", default="", help="StableHLO platforms (default: this one)")
    parser.add_argument("--data_dir", default=None, help="int8 ONNX calibration data, if moved")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    platforms = [p for p in args.platforms.split(",") if p]
    if unknown := [p for p in platforms if p not in PLATFORMS]:
        parser.error(f"unknown --platforms {unknown}; valid: {', '.join(PLATFORMS)}")
    try:
        signature = export_model(
            args.model,
            args.out,
            [f.strip() for f in args.format.split(",") if f.strip()],
            tflite_batch=args.tflite_batch,
            platforms=platforms or None,
            data_dir=args.data_dir,
        )
    except (ExportError, FileNotFoundError) as e:
        print(f"export error: {e}", file=sys.stderr)
        return 2
    for fmt, file in signature["files"].items():
        print(f"{fmt:10s} {os.path.join(args.out, file)}")
    print(f"signature  {os.path.join(args.out, 'signature.json')}")
    return 0
