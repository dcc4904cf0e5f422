"""``vjax export``: the demo's ViViT, R(2+1)D and LRCN, a full-depth R(2+1)D-18 (ONNX) and a
converted Hugging Face VideoMAE, each exported once with a symbolic batch, give JAX's logits
(within 1e-4) in each format's own runtime for batch 1 and batch 3; StableHLO runs where vjax
and flax cannot be imported; ``vjax predict`` on an exported folder equals predict on the
checkpoint without loading the training stack."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import randomized

pytest.importorskip("jax2onnx", reason="jax2onnx is not installed (pip install -e .[deploy])")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e .[deploy])")

from vjax.convert import pretrained_config, save_converted  # noqa: E402
from vjax.deploy.export import export_model, main  # noqa: E402
from vjax.deploy.runtime import load_exported  # noqa: E402
from vjax.loaded import load  # noqa: E402
from vjax.models import build_model  # noqa: E402
from vjax.predict import make_apply  # noqa: E402

TOL = 1e-4
CLIP = (4, 16, 16, 3)
NAMES = [f"c{i}" for i in range(5)]
MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
# The demo's three families (configs/demo.py) at test size, and where each is exported to.
MODELS = {
    "vivit": {"name": "vivit", "size": "Ti/8x2", "num_layers": 1, "hidden_size": 32,
              "num_heads": 2, "mlp_dim": 64},
    "r2plus1d": {"name": "r2plus1d_18", "layers": (1, 1, 1, 1), "width": 8},
    "lrcn": {"name": "lrcn", "frame_layers": (1, 1, 1, 1), "frame_width": 8, "hidden_size": 16},
    # Full depth (2 blocks per stage): its ONNX file once failed to load in onnxruntime.
    "r2plus1d_18": {"name": "r2plus1d_18", "layers": (2, 2, 2, 2), "width": 8},
}  # fmt: skip
FORMATS = ["stablehlo", "onnx", "savedmodel"]
# Each model's formats (default FORMATS; ViViT adds TFLite, the full-depth R(2+1)D-18 is an
# ONNX-only check).
MODEL_FORMATS = {"vivit": [*FORMATS, "tflite"], "r2plus1d_18": ["onnx"]}


def save_model(root, name: str, model_config: dict) -> str:
    model = build_model(model_config, len(NAMES))
    init = jax.jit(lambda key: model.init(key, np.zeros((1, *CLIP)), train=False))
    variables = randomized(jax.device_get(init(jax.random.key(0))))
    config = pretrained_config(model_config, CLIP, NAMES, mean=MEAN, std=STD, source="test")
    return save_converted(str(root / name), config, variables)


def save_hf_videomae(root) -> str:
    """A random tiny transformers VideoMAE classifier, converted (vjax convert --from=hf)."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    from vjax.convert.hf import from_hf

    hf_config = transformers.VideoMAEConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        image_size=16, patch_size=8, num_frames=4, tubelet_size=2, num_labels=len(NAMES),
    )  # fmt: skip
    torch.manual_seed(0)
    hf = transformers.VideoMAEForVideoClassification(hf_config).eval()
    with torch.no_grad():
        for tensor in hf.state_dict().values():
            tensor.add_(0.2 * torch.randn(tensor.shape))
    config, variables = from_hf(hf.state_dict(), hf.config)
    with config.unlocked():
        config.class_names = NAMES
    return save_converted(str(root / "hf_videomae"), config, variables)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``{name: (checkpoint dir, export dir, JAX logits of the 3-clip batch)}``."""
    root = tmp_path_factory.mktemp("export")
    video = np.random.default_rng(1).integers(0, 256, (3, *CLIP), np.uint8)
    dirs = {name: save_model(root, name, cfg) for name, cfg in MODELS.items()}
    dirs["hf_videomae"] = save_hf_videomae(root)
    out = {}
    for name, model_dir in dirs.items():
        export_model(model_dir, str(root / f"{name}_exported"), MODEL_FORMATS.get(name, FORMATS))
        config, model, variables = load(model_dir)
        out[name] = (
            model_dir,
            str(root / f"{name}_exported"),
            make_apply(config, model, variables)(video),
        )
    return root, video, out


@pytest.mark.parametrize("name", [*MODELS, "hf_videomae"])
def test_each_format_in_its_runtime_equals_jax_for_batch_1_and_3(exported, name):
    _, video, models = exported
    _, folder, expected = models[name]
    assert np.abs(expected).max() < 100 and np.ptp(expected, axis=0).max() > 1e-3  # real logits
    signature = json.load(open(os.path.join(folder, "signature.json")))
    assert signature["input"]["shape"] == [None, *CLIP] and signature["input"]["dtype"] == "uint8"
    assert signature["class_names"] == NAMES and signature["tasks"]["label"]["columns"] == [0, 5]
    assert signature["sampling"]["num_frames"] == 4 and signature["sampling"]["crop"] == [16, 16]
    for fmt in signature["files"]:
        model = load_exported(folder, fmt)
        for batch in (1, 3):
            logits, probs = model(video[:batch])
            np.testing.assert_allclose(logits, expected[:batch], atol=TOL, err_msg=fmt)
            softmax = np.exp(expected[:batch]) / np.exp(expected[:batch]).sum(-1, keepdims=True)
            np.testing.assert_allclose(probs, softmax, atol=TOL, err_msg=fmt)
    assert set(signature["files"]) == set(MODEL_FORMATS.get(name, FORMATS))


def test_stablehlo_runs_where_vjax_and_flax_cannot_be_imported(exported, tmp_path):
    _, video, models = exported
    np.save(tmp_path / "video.npy", video)
    script = f"""
import sys
sys.modules.update(vjax=None, flax=None)  # importing either now fails
import jax, numpy as np
video = np.load({str(tmp_path / "video.npy")!r})
out = {{}}
for name, path in [("vivit", {models["vivit"][1] + "/model.stablehlo"!r})]:
    model = jax.export.deserialize(bytearray(open(path, "rb").read()))
    out[name + "_1"] = np.asarray(model.call(video[:1])[0])
    out[name + "_3"] = np.asarray(model.call(video)[0])
np.savez({str(tmp_path / "out.npz")!r}, **out)
"""
    env = {**os.environ, "PYTHONPATH": ""}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=tmp_path)
    got = np.load(tmp_path / "out.npz")
    expected = models["vivit"][2]
    np.testing.assert_allclose(got["vivit_1"], expected[:1], atol=TOL)
    np.testing.assert_allclose(got["vivit_3"], expected, atol=TOL)


def test_predict_on_an_exported_folder_equals_the_checkpoint_without_the_training_stack(
    exported,
):
    from vjax.data.video_io import encode_video
    from vjax.predict import predict_files

    root, _, models = exported
    model_dir, folder, _ = models["vivit"]
    frames = np.random.default_rng(2).integers(0, 256, (20, 24, 30, 3), np.uint8)
    video = encode_video(str(root / "clip.mp4"), frames, 10)
    on_checkpoint = predict_files(model_dir, [video], top_k=5)["files"][video]["top"]
    script = f"""
import json, sys
from vjax.predict import predict_files
result = predict_files({folder!r}, [{video!r}], top_k=5)
stack = ("flax", "optax", "tensorflow", "vjax.models", "vjax.train")
heavy = [m for m in stack if m in sys.modules]
print(json.dumps({{"top": result["files"][{video!r}]["top"], "heavy": heavy}}))
"""
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                         text=True, cwd=os.getcwd())  # fmt: skip
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert [t["label"] for t in result["top"]] == [t["label"] for t in on_checkpoint]
    np.testing.assert_allclose([t["score"] for t in result["top"]],
                               [t["score"] for t in on_checkpoint], atol=1e-5)  # fmt: skip


def test_bad_format_and_missing_model_are_one_line_errors(exported, capsys):
    root, _, models = exported
    assert main([f"--model={models['vivit'][0]}", f"--out={root}/x", "--format=onnx,pdf"]) == 2
    assert main([f"--model={root}/nothing_here", f"--out={root}/y"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "unknown export format(s) ['pdf']" in err[0]
    assert "Traceback" not in "".join(err)


def test_multi_label_exports_give_a_sigmoid_per_class(exported):
    """A multi-label model's classes are not exclusive: its exported probabilities (and the
    signature's note) are a sigmoid per class, a single-label model's a softmax."""
    from vjax.deploy.export import inference_function
    from vjax.deploy.signature import make_signature

    _, video, out = exported
    loaded = load(out["vivit"][0])
    config, model, variables = loaded
    metadata = loaded.metadata
    logits = np.asarray(out["vivit"][2])
    for multi_label, expected in ((True, jax.nn.sigmoid(logits)), (False, jax.nn.softmax(logits))):
        got_logits, probs = inference_function(config, model, variables, multi_label)(video)
        np.testing.assert_allclose(got_logits, logits, atol=TOL)
        np.testing.assert_allclose(probs, expected, atol=TOL)
        signature = make_signature(config, {**metadata, "multi_label": multi_label}, {})
        assert signature["multi_label"] is multi_label
        assert ("sigmoid" in signature["outputs"]["note"]) is multi_label
