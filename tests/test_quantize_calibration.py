"""int8 calibration and loading (found by mutation testing): the batches asked for, in
vjax quantize and its ONNX export; an int8 folder loads int8 activations; a derived model
records its source step."""

import jax
import numpy as np
import pytest
from test_predict_contracts import (
    random_vivit,
    write_model,
)

pytest.importorskip("qwix", reason="qwix is not installed (pip install -e .[deploy])")


@pytest.fixture(scope="module")
def float_run(data_dir, tmp_path_factory):
    """The demo's tiny ViViT trained 2 steps (a run with a dataset to calibrate on)."""
    from conftest import tiny_config

    from vjax import train

    workdir = str(tmp_path_factory.mktemp("float_run"))
    train.train(tiny_config(data_dir, **{"train.num_steps": "2"}), workdir)
    return workdir


# kills qz05, qz07, qz08, oi01, oi09
def test_int8_calibrates_on_the_batches_asked_for_and_so_does_its_onnx(
    float_run, tmp_path, monkeypatch
):
    """``vjax quantize --mode=int8 --calibration_batches=2`` draws 2 training batches and
    calibrates on them normalised as training normalises them (numpy: ``(clip / 255 -
    mean) / std``), and the int8 ONNX export of that folder calibrates onnxruntime on the
    same 2 (counted as the data loader serves them)."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    pytest.importorskip("jax2onnx", reason="jax2onnx is not installed")
    from vjax.data import loaders
    from vjax.deploy import quantize
    from vjax.deploy.export import export_model
    from vjax.loaded import load

    served, clips, original = [], [], loaders.training_batches

    def counting(config, count, data_dir=None):
        served.append(0)
        for batch in original(config, count, data_dir):
            served[-1] += 1
            clips.append(np.asarray(batch["video"]))
            yield batch

    seen, quantize_variables = [], quantize.quantize_variables

    def recording(model, variables, mode, clip_shape, calibration=()):
        seen.extend(np.asarray(v) for v in calibration)
        return quantize_variables(model, variables, mode, clip_shape, list(seen))

    monkeypatch.setattr(loaders, "training_batches", counting)
    monkeypatch.setattr(quantize, "quantize_variables", recording)
    out = str(tmp_path / "int8")
    quantize.quantize_checkpoint(float_run, out, "int8", calibration_batches=2)
    assert served == [2] and len(seen) == 2
    config = load(float_run, float_model=True).config
    mean, std = (np.asarray(config.input[k], np.float32) for k in ("mean", "std"))
    for video, clip in zip(seen, clips, strict=True):
        np.testing.assert_allclose(video, (clip.astype(np.float32) / 255.0 - mean) / std,
                                   rtol=1e-6, atol=1e-6)  # fmt: skip
    signature = export_model(out, str(tmp_path / "onnx"), ["onnx"])
    assert served == [2, 2]
    assert "2 training batches" in signature["onnx_quantization"]["method"]


# kills ld09
def test_an_int8_folder_loads_as_int8_activations_and_an_int8_weights_one_does_not(
    float_run, tmp_path
):
    """``vjax.load`` of a ``--mode=int8`` folder runs its activations in int8 (the jitted
    forward pass converts values to int8 at run time); an ``int8_weights`` folder's int8
    kernels are stored so, and its pass converts nothing to int8."""
    from vjax.deploy.quantize import quantize_checkpoint
    from vjax.loaded import load

    quantize_checkpoint(float_run, str(tmp_path / "a8"), "int8", calibration_batches=1)
    quantize_checkpoint(float_run, str(tmp_path / "w8"), "int8_weights")
    for folder, runtime_int8 in (("a8", True), ("w8", False)):
        model = load(str(tmp_path / folder))
        x = np.zeros((1, *model.clip_shape), np.float32)
        jaxpr = str(jax.make_jaxpr(
            lambda v, m=model: m.module.apply(m.variables, v, train=False))(x))  # fmt: skip
        assert ("new_dtype=int8" in jaxpr) is runtime_int8, folder


# kills qz09
def test_quantizing_a_derived_model_records_the_step_its_weights_come_from(tmp_path):
    """A pruned folder (its own step 0, made from step 7) quantizes to a folder whose
    ``source_step`` is 7, as ``vjax predict`` and export then report."""
    from vjax import checkpoint
    from vjax.deploy.quantize import quantize_checkpoint

    _, variables = random_vivit(15)
    folder = write_model(str(tmp_path / "pruned"), variables, pruning={"source_step": 7})
    quantize_checkpoint(folder, str(tmp_path / "w8"), "int8_weights")
    assert checkpoint.read_metadata(str(tmp_path / "w8"))["quantization"]["source_step"] == 7


def test_the_int8_files_recorded_distance_is_its_largest_logit_difference(tmp_path):
    """signature.json's ``max_abs_logit_difference_from_jax`` is the largest difference over
    the check's clips and classes (not a mean, which hides the one clip that is far off)."""
    pytest.importorskip("onnx", reason="onnx is not installed")
    import onnx
    from onnx import TensorProto, helper

    from vjax.deploy.onnx_int8 import _check_runs

    clip = (1, 1, 1, 2)  # two "classes": the logits are the clip's two channel values
    graph = helper.make_graph(
        [helper.make_node("Cast", ["video"], ["as_float"], to=TensorProto.FLOAT),
         helper.make_node("Reshape", ["as_float", "shape"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1)],
        "channels",
        [helper.make_tensor_value_info("video", TensorProto.UINT8, ["batch", *clip])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 2])
         for name in ("logits", "probabilities")],
        [helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 2])],
    )  # fmt: skip
    path = str(tmp_path / "model.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    offset = np.array([[0.1, -0.5], [0.2, 0.0]], np.float32)
    measured = _check_runs(path, clip, lambda video: (video.reshape(2, 2) + offset,))
    assert measured["max_abs_logit_difference_from_jax"] == pytest.approx(0.5)
    assert _check_runs(path, clip, None) == {}
