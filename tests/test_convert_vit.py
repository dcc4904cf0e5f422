"""Image ViT ``.npz`` checkpoints (big_vision, original ViT / scenic layouts) as the
initialisation of vjax video models, checked against a NumPy image ViT written here.

The property inflation must have: a clip whose frames all show the same image gets the image
model's prediction. With either inflation the tubelet embedding of such a clip equals the
image patch embedding, and the position table is tiled over time, so every time slice holds
the same tokens. Joint attention over ``T'`` identical slices gives each spatial key ``T'``
times the weight, which cancels in the softmax, except against a class token, which appears
once: its attention weight is diluted by ``T'``. So the outputs are exactly equal when there
is no class token (GAP pooling), or when ``T' = 1``, or when spatial attention stays within a
slice (the average-pool baseline, class token and all). The tests check each case and that
the class-token case with ``T' > 1`` does differ.
"""

import math
from functools import partial

import jax
import numpy as np
import pytest

from vjax.convert import ConversionError
from vjax.convert.vit import from_vit_npz, image_vit_params
from vjax.models import build_model

D, HEADS, MLP, PATCH, IMAGE, LAYERS, CLASSES = 32, 2, 64, 8, 32, 2, 5
GRID = (IMAGE // PATCH) ** 2


def big_vision_params(seed: int = 0, cls: bool = True) -> dict[str, np.ndarray]:
    """Random weights of a tiny image ViT in big_vision's ``vit.py`` naming."""
    rng = np.random.default_rng(seed)

    def normal(*shape, scale=None):
        fan_in = shape[0] if scale is None else 1
        return (rng.standard_normal(shape) * (scale or fan_in**-0.5)).astype(np.float32)

    kv = D // HEADS
    p = {
        "embedding/kernel": normal(PATCH, PATCH, 3, D, scale=(PATCH * PATCH * 3) ** -0.5),
        "embedding/bias": normal(D, scale=0.3),
        "pos_embedding": normal(1, GRID, D, scale=0.3),
        "Transformer/encoder_norm/scale": 1 + normal(D, scale=0.2),
        "Transformer/encoder_norm/bias": normal(D, scale=0.2),
        "head/kernel": normal(D, CLASSES),
        "head/bias": normal(CLASSES, scale=0.3),
    }
    if cls:
        p["cls"] = normal(1, 1, D, scale=0.3)
    for i in range(LAYERS):
        b = f"Transformer/encoderblock_{i}"
        for norm in ("LayerNorm_0", "LayerNorm_1"):
            p[f"{b}/{norm}/scale"] = 1 + normal(D, scale=0.2)
            p[f"{b}/{norm}/bias"] = normal(D, scale=0.2)
        a = f"{b}/MultiHeadDotProductAttention_0"
        for name in ("query", "key", "value"):
            p[f"{a}/{name}/kernel"] = normal(D, HEADS, kv)
            p[f"{a}/{name}/bias"] = normal(HEADS, kv, scale=0.2)
        p[f"{a}/out/kernel"] = normal(HEADS, kv, D, scale=D**-0.5)
        p[f"{a}/out/bias"] = normal(D, scale=0.2)
        p[f"{b}/MlpBlock_0/Dense_0/kernel"] = normal(D, MLP)
        p[f"{b}/MlpBlock_0/Dense_0/bias"] = normal(MLP, scale=0.2)
        p[f"{b}/MlpBlock_0/Dense_1/kernel"] = normal(MLP, D)
        p[f"{b}/MlpBlock_0/Dense_1/bias"] = normal(D, scale=0.2)
    return p


def original_vit_layout(p: dict) -> dict:
    """The same weights as google-research/vision_transformer stores them: old linen
    numbering in the blocks, and the position table inside the encoder with a class row
    (``cls`` adjusted so the network is unchanged)."""
    out = {}
    for key, value in p.items():
        key = key.replace("MultiHeadDotProductAttention_0", "MultiHeadDotProductAttention_1")
        key = key.replace("LayerNorm_1", "LayerNorm_2").replace("MlpBlock_0", "MlpBlock_3")
        out[key] = value
    row = np.random.default_rng(9).standard_normal((1, 1, D)).astype(np.float32)
    out["cls"] = p["cls"] - row
    out["Transformer/posembed_input/pos_embedding"] = np.concatenate(
        [row, out.pop("pos_embedding")], axis=1
    )
    return out


def _layer_norm(x, scale, bias, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def reference_image_logits(p: dict, image: np.ndarray) -> np.ndarray:
    """The image ViT (big_vision naming) on one ``(H, W, C)`` image, in float64 NumPy."""
    p = {k: v.astype(np.float64) for k, v in p.items()}
    g = IMAGE // PATCH
    patches = image.reshape(g, PATCH, g, PATCH, 3).transpose(0, 2, 1, 3, 4)
    x = np.einsum("ijabc,abcd->ijd", patches, p["embedding/kernel"]).reshape(GRID, D)
    x = x + p["embedding/bias"] + p["pos_embedding"][0]
    if "cls" in p:
        x = np.concatenate([p["cls"][0], x], axis=0)
    for i in range(LAYERS):
        b = f"Transformer/encoderblock_{i}"
        a = f"{b}/MultiHeadDotProductAttention_0"
        y = _layer_norm(x, p[f"{b}/LayerNorm_0/scale"], p[f"{b}/LayerNorm_0/bias"])
        q, k, v = (
            np.einsum("nd,dhk->nhk", y, p[f"{a}/{n}/kernel"]) + p[f"{a}/{n}/bias"]
            for n in ("query", "key", "value")
        )
        logits = np.einsum("qhk,shk->hqs", q, k) / math.sqrt(D // HEADS)
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        attended = np.einsum("hqs,shk->qhk", weights, v)
        x = x + np.einsum("qhk,hkd->qd", attended, p[f"{a}/out/kernel"]) + p[f"{a}/out/bias"]
        y = _layer_norm(x, p[f"{b}/LayerNorm_1/scale"], p[f"{b}/LayerNorm_1/bias"])
        m = f"{b}/MlpBlock_0"
        y = _gelu_tanh(y @ p[f"{m}/Dense_0/kernel"] + p[f"{m}/Dense_0/bias"])
        x = x + y @ p[f"{m}/Dense_1/kernel"] + p[f"{m}/Dense_1/bias"]
    x = _layer_norm(x, p["Transformer/encoder_norm/scale"], p["Transformer/encoder_norm/bias"])
    pooled = x[0] if "cls" in p else x.mean(0)
    return pooled @ p["head/kernel"] + p["head/bias"]


def video_config(frames: int, tubelet_time: int, **model):
    return {
        "model": {
            "name": "vivit",
            "size": f"B/{PATCH}x{tubelet_time}",
            "hidden_size": D,
            "num_layers": LAYERS,
            "num_heads": HEADS,
            "mlp_dim": MLP,
            **model,
        },
        "input": {"clip": [frames, IMAGE, IMAGE, 3]},
        "class_names": [f"c{i}" for i in range(CLASSES)],
    }


def video_and_image_logits(tmp_path, params, config, inflation="average"):
    path = str(tmp_path / "vit.npz")
    np.savez(path, **params)
    converted, variables = from_vit_npz(path, config, inflation=inflation)
    image = np.random.default_rng(3).standard_normal((IMAGE, IMAGE, 3)).astype(np.float32)
    video = np.broadcast_to(image, (1, config["input"]["clip"][0], IMAGE, IMAGE, 3))
    model = build_model(converted.model, CLASSES)
    logits = np.asarray(jax.jit(partial(model.apply, train=False))(variables, video))[0]
    return logits, reference_image_logits(params, image), converted


@pytest.mark.parametrize("inflation", ["average", "central"])
def test_static_clip_matches_image_model_without_class_token(tmp_path, inflation):
    params = big_vision_params(cls=False)
    config = video_config(4, 2, variant="spacetime", pooling="gap")
    logits, expected, converted = video_and_image_logits(tmp_path, params, config, inflation)
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)
    assert f"{inflation} inflation" in converted.source
    assert converted.model.activation == "gelu_tanh"


def test_static_clip_with_class_token_needs_one_time_slice_or_per_slice_attention(tmp_path):
    params = big_vision_params(cls=True)
    one_slice = video_config(2, 2, variant="spacetime", pooling="cls")
    logits, expected, _ = video_and_image_logits(tmp_path, params, one_slice)
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)
    per_slice = video_config(4, 2, variant="average_pool", pooling="cls")
    logits, expected, _ = video_and_image_logits(tmp_path, params, per_slice)
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)
    # Two slices under joint attention: the class token's weight is diluted, so they differ.
    diluted = video_config(4, 2, variant="spacetime", pooling="cls")
    logits, expected, _ = video_and_image_logits(tmp_path, params, diluted)
    assert np.abs(logits - expected).max() > 1e-3


def test_original_vit_layout_reads_as_the_same_network():
    params = big_vision_params(cls=True)
    ours, _ = image_vit_params(params)
    theirs, _ = image_vit_params(original_vit_layout(params))
    a, b = _flat(ours), _flat(theirs)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-6, err_msg=key)
    assert ours["embedding"]["conv"]["kernel"].shape == (1, PATCH, PATCH, 3, D)
    # big_vision with scan=True: the blocks stacked along a leading depth axis.
    scanned = {k: v for k, v in params.items() if "encoderblock_" not in k}
    for key in [k for k in params if k.startswith("Transformer/encoderblock_0/")]:
        rest = key.split("/", 2)[2]
        layers = [params[f"Transformer/encoderblock_{i}/{rest}"] for i in range(LAYERS)]
        scanned[f"Transformer/encoderblock/{rest}"] = np.stack(layers)
    stacked, _ = image_vit_params(scanned)
    c = _flat(stacked)
    assert c.keys() == a.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], c[key], err_msg=key)


def _flat(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_factorised_models_keep_their_temporal_parts_initialised(tmp_path):
    params = big_vision_params(cls=True)
    path = str(tmp_path / "vit.npz")
    np.savez(path, **params)
    config = video_config(4, 2, variant="factorised_encoder", temporal_layers=1, pooling="cls")
    converted, variables = from_vit_npz(path, config, inflation="central")
    assert "kept the target's initial temporal_encoder" in converted.source
    kernel = variables["params"]["embedding"]["conv"]["kernel"]
    np.testing.assert_array_equal(kernel[0], 0.0)  # central inflation: frame 1 of 2 only
    np.testing.assert_allclose(kernel[1], params["embedding/kernel"])


def test_bad_checkpoints_are_named(tmp_path):
    path = str(tmp_path / "vit.npz")
    np.savez(path, **big_vision_params())
    wider = video_config(4, 2, pooling="gap")
    wider["model"]["mlp_dim"] = 80
    with pytest.raises(
        ConversionError, match=r"block00/mlp/fc1/bias: source shape \(64,\), target shape \(80,\)"
    ):
        from_vit_npz(path, wider)
    for layers in (LAYERS - 1, LAYERS + 1):  # a block dropped, or one left at random values
        deeper = video_config(4, 2, pooling="gap", num_layers=layers)
        with pytest.raises(ConversionError, match=f"{LAYERS} encoder blocks and the model "
                           f"{layers}: set model.num_layers={LAYERS}"):  # fmt: skip
            from_vit_npz(path, deeper)
    with pytest.raises(ConversionError, match="MAPHead_0"):
        image_vit_params({**big_vision_params(), "MAPHead_0/probe": np.zeros((1, 1, D))})
    extra = {**big_vision_params(), "Transformer/encoderblock_0/Extra_0/kernel": np.zeros(2)}
    with pytest.raises(ConversionError, match="encoderblock_0"):
        image_vit_params(extra)
    missing = dict(big_vision_params())
    del missing["Transformer/encoderblock_1/MlpBlock_0/Dense_1/bias"]
    with pytest.raises(ConversionError, match=r"encoderblock_1/MlpBlock_0/Dense_1/bias: missing"):
        image_vit_params(missing)


def test_convert_command_reads_the_video_config_file(tmp_path):
    from vjax.convert.vit import from_cli

    path = str(tmp_path / "vit.npz")
    np.savez(path, **big_vision_params(cls=False))
    config = video_config(4, 2, pooling="gap")
    (tmp_path / "video.py").write_text(
        f"import ml_collections\n\n\ndef get_config(arg=None):\n"
        f"    return ml_collections.ConfigDict({config!r})\n"
    )
    converted, variables = from_cli(path, "average", str(tmp_path / "video.py"))
    direct, expected = from_vit_npz(path, config, inflation="average")
    assert converted.model == direct.model
    jax.tree.map(np.testing.assert_array_equal, variables, expected)
    with pytest.raises(ConversionError, match="--config"):
        from_cli(path, None, None)
