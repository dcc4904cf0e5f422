"""The SavedModel/TFLite exports embed StableHLO that the installed TensorFlow reads: written
for the older of jax's target and TensorFlow's version, read back with TensorFlow's reader,
and an unreadable artifact is an error naming both versions (jax 0.11.2 with TensorFlow 2.21
wrote artifacts that failed only when served)."""

import re
import types

import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
from jax._src.lib.mlir.dialects import hlo

from vjax.deploy.export import _tf_function
from vjax.deploy.tf_stablehlo import (
    TensorFlowCannotReadError,
    _version_key,
    check_tensorflow_reads,
    embedded_artifacts,
    tensorflow_stablehlo_version,
)

CLIP = (2, 4, 4, 3)


def summed(video):
    """A stand-in inference function: two float outputs of a uint8 batch."""
    total = jnp.sum(video.astype(jnp.float32), axis=(1, 2, 3, 4))
    return total, total / 2


@pytest.mark.parametrize("batch", [None, 2])
def test_embedded_stablehlo_is_written_for_tensorflows_version_and_runs(batch):
    function, concrete = _tf_function(summed, CLIP, batch)
    week_4 = hlo.StablehloCompatibilityRequirement.WEEK_4  # what jax.export asks for
    jax_target = hlo.get_version_from_compatibility_requirement(week_4)
    expected = min(jax_target, tensorflow_stablehlo_version(), key=_version_key)
    (module,) = embedded_artifacts(concrete)
    assert re.findall(rb"StableHLO_v([\d.]+)", module) == [expected.encode()]
    assert check_tensorflow_reads(concrete) == 1
    # The patch is undone after tracing.
    assert hlo.get_version_from_compatibility_requirement(week_4) == jax_target
    video = np.arange(2 * np.prod(CLIP), dtype=np.int64).reshape(2, *CLIP) % 256
    out = function(tf.constant(video.astype(np.uint8)))
    expected_sum = video.reshape(2, -1).sum(axis=1).astype(np.float32)
    np.testing.assert_allclose(out["logits"].numpy(), expected_sum, rtol=1e-6)
    np.testing.assert_allclose(out["probabilities"].numpy(), expected_sum / 2, rtol=1e-6)


def test_an_artifact_tensorflow_cannot_read_is_an_error_naming_both_versions():
    _, concrete = _tf_function(summed, CLIP, None)
    (module,) = embedded_artifacts(concrete)
    cut = module[: len(module) // 2]  # what TF's reader makes of bytes it cannot parse
    op = types.SimpleNamespace(type="XlaCallModule", get_attr=lambda name: cut)
    unreadable = types.SimpleNamespace(graph=types.SimpleNamespace(get_operations=lambda: [op]))
    with pytest.raises(TensorFlowCannotReadError) as error:
        check_tensorflow_reads(unreadable)
    message = str(error.value)
    assert f"TensorFlow {tf.__version__}" in message
    assert tensorflow_stablehlo_version() in message
    assert "--format=stablehlo,onnx" in message


# vjax/deploy/tf_stablehlo.py (found by mutation testing, audit 19)
def test_versions_are_compared_as_numbers_and_the_older_is_targeted(monkeypatch):
    """Versions compare as numbers (as text '1.9.5' > '1.10.0'): with jax asking for 1.9.5
    and TensorFlow reading up to 1.10.0, the artifact targets 1.9.5."""
    from jax._src.lib.mlir.dialects import hlo

    from vjax.deploy import tf_stablehlo

    monkeypatch.setattr(hlo, "get_version_from_compatibility_requirement", lambda r: "1.9.5")
    monkeypatch.setattr(tf_stablehlo, "tensorflow_stablehlo_version", lambda: "1.10.0")
    with tf_stablehlo.serialized_for_tensorflow():
        assert hlo.get_version_from_compatibility_requirement(None) == "1.9.5"
    monkeypatch.setattr(tf_stablehlo, "tensorflow_stablehlo_version", lambda: "1.8.12")
    with tf_stablehlo.serialized_for_tensorflow():
        assert hlo.get_version_from_compatibility_requirement(None) == "1.8.12"


def test_the_version_patch_is_undone_on_leaving_even_after_an_error():
    """jax's own function is back (the same object) after the block, also when
    tracing failed inside it; the repository test compares versions read after the leak."""
    from jax._src.lib.mlir.dialects import hlo

    from vjax.deploy.tf_stablehlo import serialized_for_tensorflow

    original = hlo.get_version_from_compatibility_requirement
    with serialized_for_tensorflow():
        assert hlo.get_version_from_compatibility_requirement is not original
    assert hlo.get_version_from_compatibility_requirement is original
    with pytest.raises(RuntimeError), serialized_for_tensorflow():
        raise RuntimeError("tracing failed")
    assert hlo.get_version_from_compatibility_requirement is original


def test_every_embedded_artifact_is_read_back_not_only_the_first():
    """A TF function with a readable and an unreadable XlaCallModule is refused."""
    import types

    from vjax.deploy.export import _tf_function
    from vjax.deploy.tf_stablehlo import (
        TensorFlowCannotReadError,
        check_tensorflow_reads,
        embedded_artifacts,
    )

    def summed(video):
        return video.astype("float32").sum(axis=(1, 2, 3, 4)), video.astype("float32").sum()

    _, concrete = _tf_function(summed, (2, 4, 4, 3), None)
    (module,) = embedded_artifacts(concrete)
    ops = [types.SimpleNamespace(type="XlaCallModule", get_attr=lambda name, m=m: m)
           for m in (module, module[: len(module) // 2])]  # fmt: skip
    two = types.SimpleNamespace(graph=types.SimpleNamespace(get_operations=lambda: ops))
    with pytest.raises(TensorFlowCannotReadError):
        check_tensorflow_reads(two)
    one = types.SimpleNamespace(graph=types.SimpleNamespace(get_operations=lambda: ops[:1]))
    assert check_tensorflow_reads(one) == 1
