"""Recurrent heads against PyTorch's LSTM/GRU and flax's ConvLSTM, LRCN's frame ResNet against
torchvision's ResNet-18, a recurrent head over a backbone's features, and training."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from vjax.models import build_model
from vjax.models.recurrent import ConvLSTMCell, RecurrentHead


def _torch():
    return pytest.importorskip("torch", reason="torch is not installed (pip install -e .[torch])")


def _torch_rnn_params(rnn, kind: str, layers: int, bidirectional: bool) -> dict:
    """PyTorch's stacked (bi)RNN weights as RecurrentHead params (gates i,f,g,o / r,z,n)."""
    gates = {"lstm": ["i", "f", "g", "o"], "gru": ["r", "z", "n"]}[kind]
    params = {}
    for layer in range(layers):
        for direction in ("forward", "backward") if bidirectional else ("forward",):
            suffix = f"l{layer}" + ("_reverse" if direction == "backward" else "")
            w_ih, w_hh, b_ih, b_hh = (
                getattr(rnn, f"{n}_{suffix}").detach().numpy()
                for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            )
            cell = {}
            for k, gate in enumerate(gates):
                rows = slice(k * rnn.hidden_size, (k + 1) * rnn.hidden_size)
                cell[f"i{gate}"] = {"kernel": w_ih[rows].T}
                cell[f"h{gate}"] = {"kernel": w_hh[rows].T}
                if kind == "lstm":  # flax keeps one bias per gate, on the hidden side
                    cell[f"h{gate}"]["bias"] = b_ih[rows] + b_hh[rows]
                elif gate == "n":  # GRU: n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
                    cell["in"]["bias"], cell["hn"]["bias"] = b_ih[rows], b_hh[rows]
                else:
                    cell[f"i{gate}"]["bias"] = b_ih[rows] + b_hh[rows]
            name = f"{direction}{layer}" if bidirectional else f"layer{layer}"
            params[name] = {"cell": cell}
    return params


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_recurrent_head_matches_pytorch(kind, bidirectional):
    torch = _torch()
    torch.manual_seed(0)
    rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](
        6, 5, num_layers=2, batch_first=True, bidirectional=bidirectional
    )
    x = np.random.default_rng(0).normal(size=(3, 7, 6)).astype(np.float32)
    with torch.no_grad():
        out, h_n = rnn(torch.from_numpy(x))
    h_n = (h_n[0] if kind == "lstm" else h_n).numpy()
    last = np.concatenate([h_n[-2], h_n[-1]], -1) if bidirectional else h_n[-1]

    params = _torch_rnn_params(rnn, kind, 2, bidirectional)
    for pooling, expected in (("last", last), ("mean", out.numpy().mean(axis=1))):
        head = RecurrentHead(kind, 5, num_layers=2, bidirectional=bidirectional, pooling=pooling)
        shapes = jax.eval_shape(head.init, jax.random.key(0), x)["params"]
        assert jax.tree.structure(nn.meta.unbox(shapes)) == jax.tree.structure(params)
        got = head.apply({"params": params}, x)
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_conv_lstm_cell_matches_flax_conv_lstm():
    x = jax.random.normal(jax.random.key(0), (2, 5, 6, 6, 3))
    ours = nn.RNN(ConvLSTMCell(4, (3, 3), parent=None))
    reference = nn.RNN(nn.ConvLSTMCell(4, (3, 3)))
    params = nn.meta.unbox(ours.init(jax.random.key(1), x))
    np.testing.assert_allclose(ours.apply(params, x), reference.apply(params, x), atol=1e-6)


def test_lrcn_frame_backbone_is_a_resnet18():
    torchvision = pytest.importorskip("torchvision", reason="torchvision is not installed")
    resnet = torchvision.models.resnet18()
    backbone = sum(p.numel() for n, p in resnet.named_parameters() if not n.startswith("fc."))
    model = build_model({"name": "lrcn", "hidden_size": 8}, num_classes=3)
    video = jax.ShapeDtypeStruct((1, 2, 64, 64, 3), jnp.float32)
    variables = jax.eval_shape(lambda v: model.init(jax.random.key(0), v, train=False), video)
    params = nn.meta.unbox(variables["params"])
    ours = sum(x.size for k, v in params.items() if k not in ("head", "classifier")
               for x in jax.tree.leaves(v))  # fmt: skip
    assert ours == backbone == 11_176_512


def test_lrcn_frame_cnn_never_mixes_frames():
    """The per-frame ResNet's features of frame t depend on frame t only."""
    model = build_model(
        {"name": "lrcn", "frame_layers": (1, 1, 1, 1), "frame_width": 8, "hidden_size": 6},
        num_classes=3,
    )
    video = jax.random.normal(jax.random.key(0), (2, 4, 32, 32, 3))
    variables = jax.jit(lambda k: model.init(k, video, train=False))(jax.random.key(1))

    @jax.jit
    def frame_features(clip):
        _, state = model.apply(
            variables, clip, train=False, mutable=["intermediates"],
            capture_intermediates=lambda m, _: m.name == "layer4",
        )  # fmt: skip
        return state["intermediates"]["layer4"]["__call__"][0]

    before, after = frame_features(video), frame_features(video.at[:, 3].set(0.0))
    np.testing.assert_array_equal(before[:, :3], after[:, :3])
    assert not np.allclose(before[:, 3], after[:, 3])


def test_recurrent_over_stops_its_backbone_before_its_classifier_and_names_what_it_cannot_read():
    """(Its logits, the head on the backbone's captured features, are checked with a random
    classifier in test_models.py: through the zero-initialised one any features gave them.)"""
    small_r3d = {"name": "r3d_18", "layers": (1, 1, 1, 1), "width": 8}
    config = {"name": "recurrent_over", "backbone": small_r3d, "hidden_size": 8}
    model = build_model(config, num_classes=4)
    video = jax.ShapeDtypeStruct((2, 8, 32, 32, 3), jnp.float32)

    def init_shapes(model):  # traced only: the tree's names and the trace-time errors
        init = lambda key, x: model.init(key, x, train=False)  # noqa: E731
        return jax.eval_shape(init, jax.random.key(1), video)

    variables = init_shapes(model)
    assert set(variables["params"]) == {"backbone_model", "head", "classifier"}
    assert "classifier" not in variables["params"]["backbone_model"]  # stopped before it

    with pytest.raises(ValueError, match="has no sub-module named 'layer9'"):
        init_shapes(build_model({**config, "feature_module": "layer9"}, num_classes=4))
    # A rematerialised backbone hid the capture (UnexpectedTracerError); a per-frame stage's
    # (B*T', ...) output gave (B*T') logits.
    remat = {**config, "backbone": {**small_r3d, "remat": "block"}}
    with pytest.raises(ValueError, match="model.backbone.remat"):
        init_shapes(build_model(remat, num_classes=4))
    frames = {"name": "vivit", "variant": "factorised_encoder", "size": "Ti/8x2", "num_layers": 1,
              "hidden_size": 16, "num_heads": 2, "mlp_dim": 32, "temporal_layers": 1}  # fmt: skip
    per_frame = {**config, "backbone": frames, "feature_module": "encoder"}
    with pytest.raises(ValueError, match="rows for 2 clips"):
        init_shapes(build_model(per_frame, num_classes=4))


def test_precise_bn_measures_a_frozen_backbone_inside_recurrent_over():
    """recurrent_over keeps frozen_bn in its backbone section: precise BN unfroze only the top
    level, the frozen layers never wrote, and every statistic came back 0 (logits x18)."""
    from vjax.models.precise_bn import has_frozen_bn, precise_batch_stats

    backbone = {"name": "r3d_18", "layers": (1, 1, 1, 1), "width": 8}
    frozen = build_model({"name": "recurrent_over", "backbone": {**backbone, "frozen_bn": True},
                          "hidden_size": 8}, num_classes=4)  # fmt: skip
    plain = build_model({"name": "recurrent_over", "backbone": backbone, "hidden_size": 8}, 4)
    assert has_frozen_bn(frozen) and not has_frozen_bn(plain)
    video = jax.random.normal(jax.random.key(0), (2, 8, 32, 32, 3))
    variables = nn.meta.unbox(frozen.init(jax.random.key(1), video, train=False))
    got = precise_batch_stats(frozen, variables, [video, 2 * video])["batch_stats"]
    want = precise_batch_stats(plain, variables, [video, 2 * video])["batch_stats"]
    jax.tree.map(np.testing.assert_array_equal, got, want)
    assert all(np.abs(leaf).max() > 0 for leaf in jax.tree.leaves(got))


@pytest.mark.parametrize(
    "model_config",
    [
        {"name": "lrcn", "frame_layers": (1, 1, 1, 1), "frame_width": 8, "hidden_size": 16},
        {"name": "conv_lstm", "stem_features": 8, "hidden_features": (8,)},
    ],
)
def test_recurrent_models_train_through_the_loop(data_dir, tmp_path, model_config):
    import ml_collections

    from vjax import train

    config = tiny_config(data_dir, **{"train.num_steps": "3", "train.eval_every": "3"})
    config.unlock()
    config.model = ml_collections.ConfigDict(model_config)
    result = train.train(config, str(tmp_path))
    assert np.isfinite(result["loss"]) and result["num_examples"] == 16
    _, model, variables = __import__("vjax").load(str(tmp_path))
    if model_config["name"] == "lrcn":  # BatchNorm statistics were trained and saved
        stats = variables["batch_stats"]["stem"]["norm"]
        assert not np.allclose(stats["mean"], 0.0) and not np.allclose(stats["var"], 1.0)


@pytest.mark.parametrize("mesh", ["data=2,fsdp=2,tensor=2"])
def test_lrcn_sharded_step_with_batchnorm_matches_one_device(data_dir, mesh):
    """BatchNorm statistics under a sharded batch are global (the mean over all devices'
    rows), so the sharded step equals the one-device step, statistics included."""
    import ml_collections
    from conftest import moved_below_the_head
    from test_sharding import MESHES, _one_step, with_random_params

    from vjax import train
    from vjax.data.pipeline import TrainBatches

    def config(mesh_spec: str):
        c = tiny_config(data_dir, **{"sharding.mesh": mesh_spec, "optimizer.warmup_steps": "0"})
        c.unlock()
        c.model = ml_collections.ConfigDict(
            {"name": "lrcn", "frame_layers": (1, 1, 1, 1), "frame_width": 8, "hidden_size": 16}
        )
        return c

    single = train.setup(
        config("(('data', -1), ('fsdp', 1), ('tensor', 1))"), devices=jax.devices()[:1]
    )
    state = with_random_params(jax.device_get(train.create_state(single, seed=0)))
    batch = TrainBatches(single.builder.as_data_source("train"), 8, seed=0)(0)
    state1, metrics1 = _one_step(single, state, batch)
    assert moved_below_the_head(state.params, state1.params)  # the gradient reached the LSTM
    state8, metrics8 = _one_step(train.setup(config(MESHES[mesh])), state, batch)
    np.testing.assert_allclose(metrics8["loss"], metrics1["loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(state1), jax.tree.leaves(jax.device_get(state8)), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
    stats_moved = jax.tree.map(
        lambda a, b: not np.allclose(a, b), state.model_state, jax.device_get(state1.model_state)
    )
    assert all(jax.tree.leaves(stats_moved))


def test_conv_lstm_net_classifies_the_spatial_mean_of_its_last_hidden_state():
    """ConvLSTM (Shi et al. 2015) as a clip classifier: the last step's hidden map, averaged
    over space, through the linear head (not an average over every time step)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from flax import traverse_util

    from vjax.models import build_model

    model = build_model({"name": "conv_lstm", "stem_features": 4, "hidden_features": [6]}, 3)
    video = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 8, 8, 3)), jnp.float32)
    variables = nn.meta.unbox(model.init(jax.random.key(0), video, train=False))
    rng = np.random.default_rng(1)
    head = variables["params"]["classifier"]["head"]
    head["kernel"] = jnp.asarray(rng.normal(size=head["kernel"].shape), jnp.float32)
    head["bias"] = jnp.asarray(rng.normal(size=head["bias"].shape), jnp.float32)
    logits, state = model.apply(variables, video, train=False, capture_intermediates=True)
    flat = traverse_util.flatten_dict(state["intermediates"], sep="/")
    hidden = np.asarray(flat["conv_lstm0/__call__"][0])  # (B, T, H, W, 6)
    want = hidden[:, -1].mean(axis=(1, 2)) @ np.asarray(head["kernel"]) + np.asarray(head["bias"])
    np.testing.assert_allclose(np.asarray(logits), want, rtol=1e-5, atol=1e-5)


def test_lrcn_frame_features_are_resnet18s_average_pooled_layer4():
    """LRCN (Donahue et al. 2015) on a ResNet-18 frame CNN: each frame's feature is the
    global average of layer4's map (torchvision's avgpool), and layer4's map has
    torchvision's size (the stem's 3x3/2 max pool included) for the same frame size."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e .[torch])")
    torchvision = pytest.importorskip("torchvision", reason="torchvision is not installed")
    from flax import traverse_util

    from vjax.models import build_model

    resnet = torchvision.models.resnet18().eval()
    with torch.no_grad():
        x = torch.zeros(1, 3, 64, 64)
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            x = getattr(resnet, name)(x)
    model = build_model({"name": "lrcn", "hidden_size": 8, "frame_width": 8}, num_classes=3)
    video = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 64, 64, 3)), jnp.float32)
    variables = model.init(jax.random.key(0), video, train=False)
    seen = {}

    def record(next_fun, args, kwargs, context):
        if context.module.scope.path == ("head",) and context.method_name == "__call__":
            seen["head_input"] = args[0]  # the RecurrentHead (not the classifier's "head")
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        _, state = model.apply(variables, video, train=False, capture_intermediates=True)
    flat = traverse_util.flatten_dict(state["intermediates"], sep="/")
    layer4 = np.asarray(flat["layer4/__call__"][0])  # (B, T, H, W, C)
    assert layer4.shape[2:4] == tuple(x.shape[2:4])  # (2, 2) for 64x64 frames
    np.testing.assert_allclose(
        np.asarray(seen["head_input"]), layer4.mean(axis=(2, 3)), rtol=1e-5, atol=1e-6
    )
