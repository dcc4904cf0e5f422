"""Exported models checked against onnxruntime and hand computations (found by mutation
testing): each format loads its own file, TFLite at batch two, multi-task exports, the ONNX
check, and the signature's rate and normalisation."""

import json
import os

import jax
import numpy as np
import pytest
from test_predict_contracts import (
    CLIP,
    MEAN,
    MODEL,
    NAMES,
    STD,
    by_hand_logits,
    normalised,
    random_vivit,
    softmax,
    write_model,
)


# kills rt01
def test_load_exported_runs_the_format_it_is_asked_for(tmp_path):
    """``load_exported(folder, "onnx")`` runs model.onnx (what onnxruntime itself gives for
    that file, bit for bit), not the StableHLO file beside it: the export test's loop over
    the formats checks each file only so."""
    pytest.importorskip(
        "onnxruntime", reason="onnxruntime is not installed (pip install -e .[deploy])"
    )
    import onnxruntime as ort

    from vjax.deploy.export import export_model
    from vjax.deploy.runtime import load_exported

    _, variables = random_vivit(8)
    folder = write_model(str(tmp_path / "model"), variables)
    out = str(tmp_path / "exported")
    export_model(folder, out, ["stablehlo", "onnx"])
    video = np.random.default_rng(9).integers(0, 256, (2, *CLIP), np.uint8)
    model = load_exported(out, "onnx")
    assert model.format == "onnx"
    session = ort.InferenceSession(os.path.join(out, "model.onnx"),
                                   providers=["CPUExecutionProvider"])  # fmt: skip
    logits, probs = session.run(["logits", "probabilities"], {"video": video})
    got = model(video)
    np.testing.assert_array_equal(got[0], logits)
    np.testing.assert_array_equal(got[1], probs)
    assert load_exported(out).format == "stablehlo"  # the documented default


# kills rt03, ex07
def test_a_tflite_export_of_batch_two_runs_in_pieces_of_two(tmp_path):
    """``--tflite_batch=2``: the signature records 2, a 4-clip batch runs as two pieces of 2
    and gives the model's logits (by hand, numpy normalisation); 3 clips and 1 clip (vjax
    predict's batches need not divide it) give their own logits."""
    from vjax.deploy.export import export_model
    from vjax.deploy.runtime import load_exported

    model, variables = random_vivit(10)
    folder = write_model(str(tmp_path / "model"), variables)
    out = str(tmp_path / "exported")
    signature = export_model(folder, out, ["tflite"], tflite_batch=2)
    assert signature["tflite_batch"] == 2
    assert json.load(open(os.path.join(out, "signature.json")))["tflite_batch"] == 2
    video = np.random.default_rng(11).integers(0, 256, (4, *CLIP), np.uint8)
    expected = np.stack([by_hand_logits(model, variables, clip) for clip in video])
    logits, probs = load_exported(out, "tflite")(video)
    np.testing.assert_allclose(logits, expected, atol=1e-4)
    for count in (3, 1):
        logits, probs = load_exported(out, "tflite")(video[:count])
        np.testing.assert_allclose(logits, expected[:count], atol=1e-4)
        assert probs.shape == (count, len(NAMES))


# kills ex02, sg04, sg05
def test_a_multi_task_export_has_each_tasks_columns_and_softmax(tmp_path):
    """Two tasks (verb: 3 classes, then noun: 2): outputs 5 wide, ``tasks`` gives verb columns
    [0, 3] and noun [3, 5], the probabilities are a softmax within each task's columns (numpy,
    of the model's own per-task logits), and vjax predict's logits have the same columns."""
    import flax.linen as nn

    from vjax.deploy.export import export_model
    from vjax.deploy.runtime import load_exported
    from vjax.models import build_model
    from vjax.predict import open_model

    # Epic-Kitchens' order, verb before noun: not a-z, which is the order a dict comes back in
    # through a jax.jit (the export and vjax predict once concatenated the tasks that way).
    names = {"verb": ["v0", "v1", "v2"], "noun": ["n0", "n1"]}
    model = build_model(MODEL, {"verb": 3, "noun": 2})
    variables = jax.device_get(
        nn.meta.unbox(
            jax.jit(lambda k: model.init(k, np.zeros((1, *CLIP)), train=False))(jax.random.key(0))
        )
    )
    rng = np.random.default_rng(12)
    variables = jax.tree.map(
        lambda p: np.asarray(p + 0.3 * rng.standard_normal(p.shape), np.float32), variables
    )
    # As training records them (the builder's task order; a ConfigDict would sort them).
    folder = write_model(str(tmp_path / "model"), variables, names=names, class_names=names)
    out = str(tmp_path / "exported")
    signature = export_model(folder, out, ["stablehlo"])
    assert signature["outputs"]["logits"] == [None, 5]
    assert signature["tasks"] == {
        "verb": {"classes": ["v0", "v1", "v2"], "columns": [0, 3]},
        "noun": {"classes": ["n0", "n1"], "columns": [3, 5]},
    }
    video = np.random.default_rng(13).integers(0, 256, (2, *CLIP), np.uint8)
    x = normalised(video)
    heads = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
    logits, probs = load_exported(out)(video)
    predicted = open_model(folder).apply(video)  # vjax predict on the checkpoint
    for task, (a, b) in (("verb", (0, 3)), ("noun", (3, 5))):
        np.testing.assert_allclose(logits[:, a:b], np.asarray(heads[task]), atol=1e-4)
        np.testing.assert_allclose(predicted[:, a:b], np.asarray(heads[task]), atol=1e-4)
        expected = np.stack([softmax(np.asarray(row)) for row in heads[task]])
        np.testing.assert_allclose(probs[:, a:b], expected, atol=1e-5)
        np.testing.assert_allclose(probs[:, a:b].sum(-1), 1.0, atol=1e-5)  # one per task


# kills ex03
def test_the_onnx_check_refuses_a_file_whose_logits_are_not_jaxs(tmp_path):
    """The guard against a silently mis-converted graph: a file compared with a function
    whose logits differ (here by 1) is a ValueError naming the mismatch."""
    pytest.importorskip("jax2onnx", reason="jax2onnx is not installed (pip install -e .[deploy])")
    from vjax.deploy.export import _check_onnx, inference_function, to_onnx
    from vjax.loaded import load

    _, variables = random_vivit(14)
    folder = write_model(str(tmp_path / "model"), variables)
    config, module, loaded_variables = load(folder)
    fn = inference_function(config, module, loaded_variables)
    path = str(tmp_path / "model.onnx")
    to_onnx(fn, CLIP, path, "vivit")  # the file of fn itself passes

    def shifted(video):
        logits, probs = fn(video)
        return logits + 1.0, probs

    with pytest.raises(ValueError, match="mis-converted"):
        _check_onnx(shifted, CLIP, path)


# kills sg01, sg06
def test_formats_are_a_list_or_the_flags_comma_separated_text():
    """``export_model(model, out, "stablehlo")`` listed its letters as unknown formats."""
    from vjax.deploy.export import ExportError, check_formats

    assert check_formats("stablehlo") == ["stablehlo"]
    assert check_formats("onnx, stablehlo,onnx") == ["onnx", "stablehlo"]
    assert check_formats(["tflite"]) == ["tflite"]
    with pytest.raises(ExportError, match=r"unknown export format\(s\) \['pdf'\]"):
        check_formats("pdf")


def test_signature_records_the_trained_rate_and_the_normalisation():
    """``input.fps`` is the rate clips were cut at (``dataset.fps`` the stored one, which
    ``stride_for`` resamples from), so the signature's fps is input.fps when both are set;
    its normalisation is the config's mean and std as given."""
    from vjax.deploy.signature import make_signature

    config = {"model": {"name": "vivit"},
              "input": {"fps": 5.0, "frame_stride": 2, "mean": list(MEAN), "std": list(STD)},
              "dataset": {"fps": 10.0}}  # fmt: skip
    signature = make_signature(config, {"clip_shape": list(CLIP), "class_names": NAMES}, {})
    assert signature["sampling"]["fps"] == 5.0 and signature["sampling"]["frame_stride"] == 2
    assert signature["normalization"] == {"mean": list(MEAN), "std": list(STD),
                                          "applied_inside": True}  # fmt: skip


def test_stablehlo_for_another_platform_is_named_at_load_and_unknown_platforms_refused(
    tmp_path, capsys
):
    """A StableHLO file exported for other machines (``--platforms=cuda,tpu``) failed with
    jax's traceback at the first clip; loading it on this CPU now names both and the fix. A
    platform jax.export does not know was accepted and made a file no machine can run."""
    import jax.numpy as jnp

    from vjax.deploy.export import main as export_main
    from vjax.deploy.runtime import RUNNERS
    from vjax.errors import UserError

    elsewhere = jax.export.export(jax.jit(lambda x: x + 1), platforms=("cuda", "tpu"))
    path = tmp_path / "model.stablehlo"
    path.write_bytes(elsewhere(jax.ShapeDtypeStruct((2,), jnp.float32)).serialize())
    with pytest.raises(UserError, match=r"exported for cuda, tpu, and this machine runs cpu: "
                       r"export it again with --platforms=cuda,tpu,cpu"):  # fmt: skip
        RUNNERS["stablehlo"](str(path), {})
    argv = ["--model=unused", f"--out={tmp_path}/out", "--platforms=cpu,xyz"]
    with pytest.raises(UserError, match=r"unknown --platforms \['xyz'\]; valid: cpu, cuda"):
        export_main(argv)
    assert not (tmp_path / "out").exists()
