"""``vjax quantize`` and ``train.quantization``: int8 kernels (per channel) a quarter of the
float bytes, logits close to the float model's, a folder that vjax.load, vjax eval, vjax
export and predict open; quantization-aware training runs and its checkpoint quantizes."""

import os

import jax
import numpy as np
import pytest
from conftest import tiny_config
from test_conv import conv_ranks

pytest.importorskip("qwix", reason="qwix is not installed (pip install -e .[deploy])")
pytest.importorskip("jax2onnx", reason="jax2onnx is not installed (pip install -e .[deploy])")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e .[deploy])")

import vjax  # noqa: E402
from vjax import train  # noqa: E402
from vjax.deploy import quantize  # noqa: E402
from vjax.deploy.export import export_model  # noqa: E402
from vjax.deploy.export import main as export_main  # noqa: E402
from vjax.deploy.runtime import load_exported  # noqa: E402
from vjax.loaded import load  # noqa: E402
from vjax.predict import make_apply  # noqa: E402

R2PLUS1D = {"name": "r2plus1d_18", "layers": (1, 1, 1, 1), "width": 8}
CLIP = (4, 16, 16, 3)


@pytest.fixture(scope="module")
def qat_run(data_dir, tmp_path_factory):
    """A tiny ViViT trained 6 steps with int8 quantization-aware training."""
    workdir = str(tmp_path_factory.mktemp("qat"))
    config = tiny_config(data_dir, **{"train.quantization": "int8"})
    train.train(config, workdir)
    return config, workdir


def _int8_leaves(tree) -> list:
    return [x for x in jax.tree.leaves(tree) if x.dtype == np.int8]


def test_qat_checkpoint_quantizes_to_int8_and_eval_export_accept_it(qat_run, tmp_path, capsys):
    config, workdir = qat_run
    fake = load(workdir)  # the fake-quantized model
    assert "quant_stats" not in fake.variables  # per-example activation scales while training
    out = str(tmp_path / "int8")
    assert quantize.main([f"--model={workdir}", f"--out={out}", "--mode=int8",
                          "--calibration_batches=2"]) == 0  # fmt: skip
    assert "smaller" in capsys.readouterr().out
    _, model, qvariables = vjax.load(out)
    assert len(_int8_leaves(qvariables["params"])) >= 6  # conv, q/k/v/out, mlp, head kernels
    video = np.random.default_rng(0).integers(0, 256, (4, *CLIP), np.uint8)
    float_config, float_model, float_vars = load(workdir, float_model=True)
    expected = make_apply(float_config, float_model, float_vars)(video)
    got = make_apply(config, model, qvariables)(video)
    # Within a tenth of the logits' scale (4e-3 after 6 steps; measured errors 1.5e-4, 1e-4):
    # with "+ 1e-3" a zero or a 30%-off output passed too.
    assert np.abs(got - expected).max() <= 0.1 * np.abs(expected).max()
    # The loaded QAT run itself can be called (it raised qwix's bare AssertionError: its host
    # kernels were copied on the way in, and qwix finds kernels by identity).
    assert np.abs(fake(video) - expected).max() <= 0.1 * np.abs(expected).max()
    # vjax eval on the quantized folder: the same number of test videos, a real accuracy.
    result = train.evaluate_checkpoint(config, out, "test")
    assert result["num_examples"] == 16 and 0 <= result["top1"] <= 1
    # StableHLO of the int8 model equals it.
    export_model(out, str(tmp_path / "exported"), ["stablehlo"])
    logits, _ = load_exported(str(tmp_path / "exported"))(video)
    np.testing.assert_allclose(logits, got, atol=1e-4)
    # ONNX: onnxruntime's int8 ops, calibrated on the same 2 training batches.
    assert export_main([f"--model={out}", f"--out={tmp_path}/onnx", "--format=onnx"]) == 0
    # fc1, fc2 and the head: the projections jax2onnx writes as Einsum stay float
    _check_int8_onnx(str(tmp_path / "onnx"), "QuantizeLinear", 3, expected, video)
    # No larger than the float weights (the attention kernels were stored once per token).
    float_bytes = 4 * sum(x.size for x in jax.tree.leaves(float_vars["params"]))
    assert os.path.getsize(tmp_path / "onnx" / "model.onnx") < 1.2 * float_bytes


def _check_int8_onnx(folder: str, quantized_op: str, int8_weights: int, expected, video):
    """The folder's ONNX file holds ``int8_weights`` 8-bit weight tensors and ``quantized_op``
    nodes, runs in onnxruntime for batch 1 and 3, and its logits are within 10% of the float
    logits' range (int8 steps are ~1/255 of each calibrated activation range and 1/127 of each
    weight channel's; a few percent over the model's layers, while a broken graph is off by
    the whole range), and the same top-1 for every clip whose float top-1 leads by more than
    twice that error (closer calls may flip between CPUs)."""
    import onnx

    graph = onnx.load(f"{folder}/model.onnx").graph
    eight_bit = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)  # zero points are 8-bit too
    weights = [i for i in graph.initializer if not i.name.endswith("_zero_point")]
    assert sum(i.data_type in eight_bit for i in weights) >= int8_weights
    assert quantized_op in {n.op_type for n in graph.node}
    model = load_exported(folder, "onnx")
    measured = model.signature["onnx_quantization"]  # the distance from the JAX int8 model
    assert "onnxruntime" in measured["method"]
    assert 0 < measured["max_abs_logit_difference_from_jax"] < measured["jax_logit_range"]
    compared = 0
    for batch in (1, 3):
        logits, _ = model(video[:batch])
        error = np.abs(logits - expected[:batch]).max()
        print(f"batch {batch}: error {error:.2e}, float range {np.ptp(expected[:batch]):.2e}")
        assert 1e-6 < error <= 0.1 * np.ptp(expected[:batch]), error  # quantized, and close
        top2 = np.sort(expected[:batch], axis=-1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 2 * error
        np.testing.assert_array_equal(logits.argmax(-1)[clear], expected[:batch].argmax(-1)[clear])
        compared += clear.sum()
    assert compared  # some clip's top-1 was clear enough to compare


def test_int8_weights_are_a_quarter_of_the_bytes_and_close_to_float(tmp_path):
    from vjax.convert import pretrained_config, save_converted

    model = vjax.models.build_model(R2PLUS1D, 5)
    variables = jax.device_get(
        jax.jit(lambda k: model.init(k, np.zeros((1, *CLIP)), train=False))(jax.random.key(0))
    )
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda p: p + 0.05 * rng.standard_normal(p.shape), variables["params"])
    variables = {**variables, "params": jax.tree.map(np.float32, params)}
    config = pretrained_config(R2PLUS1D, CLIP, list("abcde"), source="test")
    save_converted(str(tmp_path / "float"), config, variables)
    sizes = quantize.quantize_checkpoint(str(tmp_path / "float"), str(tmp_path / "w8"),
                                         "int8_weights")  # fmt: skip
    assert 3.5 < sizes["float_bytes"] / sizes["quantized_bytes"] < 4.0
    loaded = load(str(tmp_path / "w8"))
    config, qmodel, qvariables = loaded
    metadata = loaded.metadata
    assert metadata["quantization"]["mode"] == "int8_weights"
    kernels = [x for x in jax.tree.leaves(variables["params"]) if x.ndim >= 2]
    assert len(_int8_leaves(qvariables["params"])) == len(kernels)  # every conv and dense
    video = rng.integers(0, 256, (2, *CLIP), np.uint8)
    expected = make_apply(config, model, variables)(video)
    got = make_apply(config, qmodel, qvariables)(video)
    assert np.abs(got - expected).max() <= 0.05 * np.abs(expected).max()
    # The dequantized kernels run in vjax's 2D conv forms, as the float model's do.
    clips = np.zeros((2, *CLIP), np.float32)
    jaxpr = jax.make_jaxpr(lambda x: qmodel.apply(qvariables, x, train=False))(clips).jaxpr
    assert conv_ranks(jaxpr) and 5 not in conv_ranks(jaxpr)
    # ONNX: onnxruntime's dynamic int8 (int8 weights, activations quantized per call).
    export_model(str(tmp_path / "w8"), str(tmp_path / "w8_onnx"), ["onnx"])
    _check_int8_onnx(str(tmp_path / "w8_onnx"), "ConvInteger", len(kernels) - 1, expected, video)
    # int8 calibrates on training data, which a converted model does not record.
    with pytest.raises(quantize.QuantizationError, match="records no dataset"):
        quantize.quantize_checkpoint(str(tmp_path / "float"), str(tmp_path / "a8"), "int8")


# (vjax/deploy/quantize.py)


def _dense_and_batches():
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    class Dense(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            return nn.Dense(4)(x.reshape(x.shape[0], -1))

    model, clip = Dense(), (2, 3, 3, 3)
    variables = model.init(jax.random.key(0), jnp.zeros((1, *clip)))
    rng = np.random.default_rng(0)
    batches = [jnp.asarray(k * rng.standard_normal((4, *clip)), jnp.float32) for k in (1, 3)]
    return model, variables, clip, batches


# kills q03
def test_int8_mode_multiplies_int8_activations_by_int8_weights():
    """--mode=int8 runs its matmuls int8 x int8 -> int32 (activations quantized too)."""
    import jax

    from vjax.deploy.quantize import quantize_variables

    model, variables, clip, batches = _dense_and_batches()
    qmodel, qvariables = quantize_variables(model, variables, "int8", clip, batches)
    jaxpr = jax.make_jaxpr(lambda x: qmodel.apply(qvariables, x, train=False))(batches[0]).jaxpr
    dots = [e for e in jaxpr.eqns if e.primitive.name == "dot_general"]
    assert dots and all(str(v.aval.dtype) == "int8" for e in dots for v in e.invars)


# kills q06
def test_int8_activation_scales_average_the_calibration_batches():
    """Each static activation scale is the mean of the scales the batches give one by one."""
    import jax

    from vjax.deploy.quantize import quantize_variables

    model, variables, clip, batches = _dense_and_batches()
    both = jax.tree.leaves(quantize_variables(model, variables, "int8", clip, batches)[1])
    each = [jax.tree.leaves(quantize_variables(model, variables, "int8", clip, [b])[1])
            for b in batches]  # fmt: skip
    floats = [i for i, x in enumerate(both) if x.dtype == np.float32 and x.size == 1]
    assert floats  # the input activation's scale
    for i in floats:
        assert not np.allclose(each[0][i], each[1][i])
        np.testing.assert_allclose(both[i], (each[0][i] + each[1][i]) / 2, rtol=1e-6)


def test_int8_activation_scales_are_per_token_for_einsums_and_per_tensor_for_convs():
    """What the module doc says of --mode=int8's static scales: a transformer's dense and
    einsum inputs get one per token position, a conv's input one per tensor."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from vjax.deploy.quantize import quantize_variables
    from vjax.models import build_model

    clip = (4, 16, 16, 3)
    vivit = {"name": "vivit", "size": "Ti/8x2", "hidden_size": 32, "num_layers": 1,
             "num_heads": 2, "mlp_dim": 16}  # fmt: skip
    shapes = {}
    for name, config in (("vivit", vivit), ("r2plus1d", {"name": "r2plus1d_18", "width": 8})):
        model = build_model({**config, "layers": (1, 1, 1, 1)} if name != "vivit" else config, 5)
        init = jax.jit(lambda k, model=model: model.init(k, jnp.zeros((1, *clip)), train=False))(
            jax.random.key(0)
        )
        batches = [np.random.default_rng(0).standard_normal((2, *clip)).astype(np.float32)]
        _, qvariables = quantize_variables(model, nn.meta.unbox(init), "int8", clip, batches)
        leaves = jax.tree_util.tree_flatten_with_path(qvariables)[0]
        shapes[name] = {jax.tree_util.keystr(path): np.shape(leaf) for path, leaf in leaves
                        if "lhs" in jax.tree_util.keystr(path)
                        and "scale" in jax.tree_util.keystr(path)}  # fmt: skip
    conv = [shape for path, shape in shapes["r2plus1d"].items() if "classifier" not in path]
    assert conv and all(np.prod(shape) == 1 for shape in conv)
    einsum = [shape for path, shape in shapes["vivit"].items() if "attention" in path]
    assert einsum and all(shape[1] == 9 and np.prod(shape) == 9 for shape in einsum)  # 8 + cls


def test_int8_quantizes_a_recurrent_head_with_its_kernels_only():
    """LRCN to int8: the per-frame convs get int8 kernels and a calibrated activation scale;
    the LSTM cells, which run inside a scan where a static scale cannot live, int8 kernels
    only. The logits stay close to the float model's."""
    from vjax.deploy.quantize import quantize_variables

    lrcn = {"name": "lrcn", "frame_layers": (1, 1, 1, 1), "frame_width": 8, "hidden_size": 8,
            "num_layers": 2}  # fmt: skip
    model = vjax.models.build_model(lrcn, 5)
    variables = jax.device_get(
        jax.jit(lambda k: model.init(k, np.zeros((1, *CLIP)), train=False))(jax.random.key(0))
    )
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda p: p + 0.05 * rng.standard_normal(p.shape), variables["params"])
    variables = {**variables, "params": jax.tree.map(np.float32, params)}
    batches = [rng.standard_normal((2, *CLIP)).astype(np.float32) for _ in range(2)]
    qmodel, qvariables = quantize_variables(model, variables, "int8", CLIP, batches)
    leaves = jax.tree_util.tree_flatten_with_path(qvariables["params"])[0]
    names = {jax.tree_util.keystr(path): leaf.dtype for path, leaf in leaves}
    kernels = [x for x in jax.tree.leaves(variables["params"]) if x.ndim >= 2]
    assert len(_int8_leaves(qvariables["params"])) == len(kernels)
    cells = [n for n in names if "'cell'" in n]
    scales = [n for n in names if "_lhs_scale" in n]
    assert any("'kernel'].array.qvalue" in n for n in cells)
    assert scales and not any("'cell'" in n for n in scales)
    assert any("'stem'" in n for n in scales) and any("'classifier'" in n for n in scales)
    expected = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, batches[0])
    got = jax.jit(lambda v, x: qmodel.apply(v, x, train=False))(qvariables, batches[0])
    assert np.abs(got - expected).max() <= 0.05 * np.abs(expected).max()
