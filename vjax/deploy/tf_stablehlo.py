"""StableHLO that the installed TensorFlow can read, for the SavedModel and TFLite exports.

jax2tf embeds the model in an ``XlaCallModule`` op as a StableHLO portable artifact, written
for the version ``jax.export`` targets (about four weeks older than jax's own). TensorFlow
reads artifacts only up to the StableHLO it was built with, which can be older: jax 0.11.2
targets 1.18.0, TensorFlow 2.21 reads up to 1.13.7, and the symbolic batch's shape check then
comes out as an op TensorFlow does not know (``vhlo.custom_call_v2``). The SavedModel saved
and failed only when served. So the artifact targets the older of the two versions
(:func:`serialized_for_tensorflow`), and every embedded artifact is read back with
TensorFlow's own reader before the export counts (:func:`check_tensorflow_reads`).

>>> with serialized_for_tensorflow():
...     concrete = tf_function.get_concrete_function()
>>> check_tensorflow_reads(concrete)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from vjax.errors import UserError


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def tensorflow_stablehlo_version() -> str:
    """The newest StableHLO version the installed TensorFlow reads, e.g. ``"1.13.7"``."""
    from tensorflow.compiler.mlir.stablehlo import stablehlo

    return stablehlo.get_current_version()


@contextlib.contextmanager
def serialized_for_tensorflow() -> Iterator[None]:
    """While open, jax serializes StableHLO for the older of its own target and TensorFlow's
    version. jax has no public setting for the target, so this wraps the one function its
    serializer asks (``hlo.get_version_from_compatibility_requirement``); if a jax release
    stops asking it, :func:`check_tensorflow_reads` still stops an unreadable export."""
    from jax._src.lib.mlir.dialects import hlo

    ask = getattr(hlo, "get_version_from_compatibility_requirement", None)
    if ask is None:
        yield
        return
    readable = tensorflow_stablehlo_version()

    def older_of_both(requirement: Any) -> str:
        return min(ask(requirement), readable, key=_version_key)

    hlo.get_version_from_compatibility_requirement = older_of_both
    try:
        yield
    finally:
        hlo.get_version_from_compatibility_requirement = ask


def embedded_artifacts(concrete_function: Any) -> list[bytes]:
    """The StableHLO artifacts (``XlaCallModule`` ops' ``module``) of a traced TF function."""
    return [
        op.get_attr("module")
        for op in concrete_function.graph.get_operations()
        if op.type == "XlaCallModule"
    ]


class TensorFlowCannotReadError(UserError):
    """The installed TensorFlow cannot read the StableHLO that the installed jax wrote."""


def check_tensorflow_reads(concrete_function: Any) -> int:
    """Reads every ``XlaCallModule`` artifact of a traced TF function with TensorFlow's
    StableHLO reader; returns how many (at least one); an unreadable one is a
    :class:`TensorFlowCannotReadError` naming both versions and what to do."""
    import jax
    import tensorflow as tf
    from tensorflow.compiler.mlir.stablehlo import stablehlo

    modules = embedded_artifacts(concrete_function)
    if not modules:
        raise RuntimeError("the TF function holds no XlaCallModule op: jax2tf changed its output")
    for module in modules:
        try:
            stablehlo.deserialize_portable_artifact_str(module)
        except Exception as e:  # noqa: BLE001  (TF raises a bare ValueError/RuntimeError)
            raise TensorFlowCannotReadError(
                f"TensorFlow {tf.__version__} (StableHLO up to {tensorflow_stablehlo_version()}) "
                f"cannot read the StableHLO that jax {jax.__version__} wrote ({e}); install a "
                f"TensorFlow built with a newer StableHLO or an older jax, or export "
                f"--format=stablehlo,onnx, which do not go through TensorFlow"
            ) from e
    return len(modules)
