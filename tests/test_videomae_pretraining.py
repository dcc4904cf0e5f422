"""VideoMAE masked-video pre-training: masks and targets against NumPy, the encoder on visible
tokens only, the reconstruction objective through the one trainer (validation loss, pictures,
sharded step = one-device step), fine-tuning from it with layer decay, unlabelled videos, and
the recipes. (Equality with Hugging Face: tests/test_convert_hf.py; exact resume:
tests/test_resume.py.)"""

import os
import re
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import PRETRAIN_CONFIG, REPO
from flax.traverse_util import flatten_dict

import vjax
from vjax import objectives, train
from vjax.config_utils import ConfigError, apply_overrides, load_config
from vjax.models import build_model
from vjax.models.masking import (
    draw_mask,
    mean_prediction_loss,
    num_masked,
    patch_pixels,
    pixel_targets,
    split_tokens,
    take_tokens,
    target_clip,
    unpatchify,
)
from vjax.optim import layer_decay_scales, make_optimizer

CONFIG = os.path.join(REPO, "configs", "videomae.py")
TINY = dict(size="Ti/8x2", hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64)
DECODER = dict(decoder_hidden_size=16, decoder_num_layers=1, decoder_num_heads=2,
               decoder_mlp_dim=32)  # fmt: skip


def _config(data_dir, recipe, **overrides):
    config = load_config(f"{CONFIG}:{recipe},tiny")
    apply_overrides(config, {"dataset.data_dir": data_dir, **overrides})
    return config


# ------------------------------------------------------------------ masks and targets


def test_tube_and_random_masks():
    grid = (4, 16)
    tube = np.asarray(draw_mask(jax.random.key(0), 3, grid, 0.75, "tube"))
    assert num_masked(grid, 0.75, "tube") == 48
    assert tube.shape == (3, 64) and (tube.sum(1) == 48).all()
    per_time = tube.reshape(3, 4, 16)
    assert (per_time == per_time[:, :1]).all()  # one spatial mask for every time step
    assert len({row.tobytes() for row in per_time[:, 0]}) == 3  # each clip its own
    rand = np.asarray(draw_mask(jax.random.key(0), 3, grid, 0.9, "random"))
    assert (rand.sum(1) == 57).all()
    assert not (rand.reshape(3, 4, 16) == rand.reshape(3, 4, 16)[:, :1]).all()
    again = np.asarray(draw_mask(jax.random.key(0), 3, grid, 0.9, "random"))
    other = np.asarray(draw_mask(jax.random.key(1), 3, grid, 0.9, "random"))
    assert (again == rand).all() and (other != rand).any()  # a pure function of the key


def test_split_and_gather_follow_boolean_indexing():
    mask = np.asarray(draw_mask(jax.random.key(3), 2, (2, 8), 0.75, "random"))
    x = np.random.default_rng(0).standard_normal((2, 16, 5)).astype(np.float32)
    visible, hidden = split_tokens(jnp.asarray(mask), 12)
    # Hugging Face's order: x[~mask] then x[mask], row by row.
    np.testing.assert_array_equal(take_tokens(x, visible), x[~mask].reshape(2, 4, 5))
    np.testing.assert_array_equal(take_tokens(x, hidden), x[mask].reshape(2, 12, 5))


def test_targets_are_per_tubelet_normalised_pixels():
    rng = np.random.default_rng(0)
    video = rng.uniform(size=(2, 4, 8, 12, 3)).astype(np.float32)
    tubelet = (2, 4, 4)
    # NumPy reference: split every axis into (blocks, block size), tubelet pixels last.
    blocks = video.reshape(2, 2, 2, 2, 4, 3, 4, 3).transpose(0, 1, 3, 5, 2, 4, 6, 7)
    blocks = blocks.reshape(2, 12, 32, 3)  # (B, tokens, pixels of a tubelet, C)
    plain = np.asarray(pixel_targets(video, tubelet, normalize=False))
    np.testing.assert_array_equal(plain, blocks.reshape(2, 12, 96))
    mean, std = blocks.mean(2, keepdims=True), blocks.std(2, ddof=1, keepdims=True)
    expected = ((blocks - mean) / (std + 1e-6)).reshape(2, 12, 96)
    np.testing.assert_allclose(pixel_targets(video, tubelet), expected, rtol=1e-5, atol=1e-5)
    assert patch_pixels(video, tubelet).shape == (2, 12, 32, 3)
    np.testing.assert_array_equal(unpatchify(plain, tubelet, (2, 2, 3), 3), video)


def test_predicting_each_tubelets_mean_scores_n_minus_1_over_n():
    """The baseline a normalised-pixel loss is read against: zeros (each tubelet's own mean)
    score the mean squared target, (n - 1) / n for n pixels per channel."""
    rng = np.random.default_rng(1)
    video = rng.uniform(size=(3, 4, 16, 8, 3)).astype(np.float32)
    for tubelet in [(2, 4, 4), (2, 8, 8), (1, 2, 4)]:
        zeros_loss = float(np.mean(np.asarray(pixel_targets(video, tubelet)) ** 2))
        assert zeros_loss == pytest.approx(mean_prediction_loss(tubelet), rel=1e-4)
    assert mean_prediction_loss((2, 8, 8)) == 127 / 128


def test_pretraining_starts_as_videomaes_official_code():
    """From scratch the pre-training model draws its weights as VideoMAE's official
    ``PretrainVisionTransformer`` does (by the distributions' own bounds and stds): q/k/v
    Xavier over the fused (D, 3D) matrix, torch's default Conv3d (kernel and bias U(+-1 /
    sqrt(fan_in))) and Linear for encoder_to_decoder, the mask token N(0, 0.02) cut at +-1
    std; other Linear layers Xavier. ViViT, and ``weight_init="scenic"``, keep scenic's
    ViT's: Xavier per projection, LeCun patch conv with zero bias, N(0, 0.02)."""
    width, decoder = 192, 96  # ViT-B's patches, narrower (the bounds are functions of width)
    narrow = dict(size="B/16x2", hidden_size=width, num_heads=3, mlp_dim=4 * width, num_layers=1,
                  decoder_hidden_size=decoder, decoder_num_heads=3, decoder_mlp_dim=4 * decoder,
                  decoder_num_layers=1)  # fmt: skip
    model = build_model({"name": "videomae_pretraining", **narrow}, 0)
    params = nn.meta.unbox(jax.jit(lambda k: model.init(k, jnp.zeros((1, 4, 32, 32, 3)),
                                      train=False))(jax.random.key(0))["params"])  # fmt: skip

    def uniform(array, bound):
        values = np.asarray(array)
        assert 0.99 * bound < np.abs(values).max() <= bound * (1 + 1e-6)
        assert values.std() == pytest.approx(bound / np.sqrt(3), rel=0.03)

    for stack, dim in [("encoder", width), ("decoder", decoder)]:
        attention = params[stack]["block00"]["attention"]
        for name in ("query", "key", "value"):
            uniform(attention[f"{name}_kernel"], np.sqrt(6 / (dim + 3 * dim)))
        uniform(attention["out_kernel"], np.sqrt(6 / (2 * dim)))
        uniform(params[stack]["block00"]["mlp"]["fc1"]["kernel"], np.sqrt(6 / (5 * dim)))
    fan_in = 2 * 16 * 16 * 3
    uniform(params["embedding"]["conv"]["kernel"], 1 / np.sqrt(fan_in))
    uniform(params["embedding"]["conv"]["bias"], 1 / np.sqrt(fan_in))
    uniform(params["encoder_to_decoder"]["kernel"], 1 / np.sqrt(width))
    uniform(params["decoder_head"]["kernel"], np.sqrt(6 / (decoder + 1536)))
    token = np.asarray(params["mask_token"])
    assert np.abs(token).max() <= 0.02 and token.std() == pytest.approx(0.02 * 0.5395, rel=0.1)
    encoder = {k: v for k, v in narrow.items() if not k.startswith("decoder")}
    vivit = build_model({"name": "vivit", **encoder}, 3)
    vivit_params = nn.meta.unbox(jax.jit(lambda k: vivit.init(k, jnp.zeros((1, 4, 32, 32, 3)),
                                            train=False))(jax.random.key(0))["params"])  # fmt: skip
    query = next(
        v for k, v in flatten_dict(vivit_params, sep="/").items() if k.endswith("query_kernel")
    )
    uniform(query, np.sqrt(6 / (2 * width)))
    assert np.asarray(vivit_params["embedding"]["conv"]["bias"]).max() == 0.0  # LeCun, zero bias
    # model.weight_init="scenic": the pre-training model starts as the other transformers
    scenic = build_model({"name": "videomae_pretraining", **narrow, "weight_init": "scenic"}, 0)
    params = nn.meta.unbox(jax.jit(lambda k: scenic.init(k, jnp.zeros((1, 4, 32, 32, 3)),
                                       train=False))(jax.random.key(0))["params"])  # fmt: skip
    uniform(params["encoder"]["block00"]["attention"]["query_kernel"], np.sqrt(6 / (2 * width)))
    conv = np.asarray(params["embedding"]["conv"]["kernel"])
    assert conv.std() == pytest.approx(1 / np.sqrt(fan_in), rel=0.05)  # LeCun normal
    assert np.asarray(params["embedding"]["conv"]["bias"]).max() == 0.0
    uniform(params["encoder_to_decoder"]["kernel"], np.sqrt(6 / (width + decoder)))
    token = np.asarray(params["mask_token"])
    assert np.abs(token).max() > 0.02 and token.std() == pytest.approx(0.02, rel=0.15)
    with pytest.raises(ValueError, match="weight_init must be one of"):
        wrong = {"name": "videomae_pretraining", **TINY, "weight_init": "torch"}
        build_model(wrong, 0).check_input((1, 4, 16, 16, 3))
    # VideoMAE's official initialisation is its pre-training model's: refused elsewhere
    for name in ("vivit", "videomae", "ast"):
        with pytest.raises(ValueError, match=r"one of \('scenic',\) for"):
            build_model({"name": name, **TINY, "weight_init": "videomae"}, 3).check_options()


def _changes_inside_tubelets(video: np.ndarray, frames: int) -> np.ndarray:
    """NumPy reference: frame t's change to frame t + 1 where both lie in one tubelet of
    ``frames`` frames, else 0 (a tubelet's last frame)."""
    change = np.zeros_like(video)
    for t in range(video.shape[1]):
        if (t + 1) % frames:
            change[:, t] = video[:, t + 1] - video[:, t]
    return change


def test_frame_difference_targets_are_what_moves():
    """``target="frame_difference"``: each frame's change to the next inside its tubelet
    (0.5 + d / 2, a tubelet's last frame 0.5), so a static background is 0.5 everywhere and
    only a moving square is left; normalised per tubelet like pixels (NumPy reference on the
    differences themselves: the per-tubelet normalisation does not see the 0.5 + d / 2
    encoding)."""
    rng = np.random.default_rng(2)
    video = np.repeat(rng.uniform(0.0, 0.4, (1, 1, 8, 8, 3)), 4, axis=1).astype(np.float32)
    for t in range(4):  # a bright 2x2 square one pixel further right each frame
        video[0, t, 3:5, t : t + 2] = 0.9
    tubelet = (2, 4, 4)
    clip = np.asarray(target_clip(video, "frame_difference", tubelet))
    difference = _changes_inside_tubelets(video, 2)
    np.testing.assert_allclose(clip, 0.5 + difference / 2, atol=1e-7)
    moved = np.abs(difference).max(axis=(0, 1, 4)) > 0
    assert np.argwhere(moved).tolist() == [[r, c] for r in (3, 4) for c in (0, 2, 4)]
    assert np.all(clip[0, :, ~moved] == 0.5)
    assert np.all(clip[0, 1] == 0.5) and np.all(clip[0, 3] == 0.5)  # each tubelet's last
    blocks = difference.reshape(1, 2, 2, 2, 4, 2, 4, 3).transpose(0, 1, 3, 5, 2, 4, 6, 7)
    blocks = blocks.reshape(1, 8, 32, 3)
    mean, std = blocks.mean(2, keepdims=True), blocks.std(2, ddof=1, keepdims=True)
    expected = ((blocks - mean) / (std / 2 + 1e-6) / 2).reshape(1, 8, 96)  # std of d / 2
    np.testing.assert_allclose(pixel_targets(clip, tubelet), expected, rtol=1e-4, atol=1e-4)
    four = _changes_inside_tubelets(video, 4)
    np.testing.assert_allclose(
        target_clip(video, "frame_difference", (4, 4, 4)), 0.5 + four / 2, atol=1e-7
    )
    assert target_clip(video, "pixels", tubelet) is video
    with pytest.raises(ValueError, match="target must be one of"):
        target_clip(video, "flow", tubelet)
    with pytest.raises(ValueError, match="needs tubelets of 2 or more frames"):
        target_clip(video, "frame_difference", (1, 4, 4))


def test_a_tubelets_frame_difference_target_reads_only_its_own_frames():
    """No hidden tubelet's target depends on another tubelet's pixels: changing the frames of
    one time step of tubelets changes the normalised targets of those tokens and of no other.
    (A change taken across the boundary put part of a hidden tubelet's target in the next
    tubelet's first frame, which random masking often leaves visible.)"""
    tubelet = (2, 4, 4)
    video = np.random.default_rng(4).uniform(size=(2, 6, 8, 8, 3)).astype(np.float32)
    targets = np.asarray(pixel_targets(target_clip(video, "frame_difference", tubelet), tubelet))
    for step in range(3):
        changed = video.copy()
        changed[:, 2 * step : 2 * step + 2] = np.random.default_rng(step).uniform(
            size=changed[:, :2].shape
        )
        after = pixel_targets(target_clip(changed, "frame_difference", tubelet), tubelet)
        moved = np.abs(np.asarray(after) - targets).max(axis=2).reshape(2, 3, 4) > 1e-6
        assert moved[:, step].all() and not np.delete(moved, step, axis=1).any(), step


def test_the_objective_reconstructs_the_chosen_target():
    """The reconstruction loss of a ``frame_difference`` model is the mean squared error of its
    predictions against the hidden tubelets' normalised frame differences (NumPy), not their
    pixels."""
    model = build_model({"name": "videomae_pretraining", **TINY, **DECODER,
                         "target": "frame_difference"}, 0)  # fmt: skip
    video = np.random.default_rng(3).uniform(size=(2, 4, 16, 16, 3)).astype(np.float32)
    variables = jax.jit(lambda k: model.init(k, video, train=False))(jax.random.key(0))
    mask = draw_mask(jax.random.key(1), 2, (2, 4), model.mask_ratio, model.masking)
    losses, predicted, _ = jax.jit(
        lambda v, m: objectives.masked_pixel_losses(model, v, video, video, m)
    )(variables, mask)
    targets = np.asarray(pixel_targets(_changes_inside_tubelets(video, 2), model.tubelet))
    _, hidden = split_tokens(mask, model.num_masked(video.shape))
    picked = np.take_along_axis(targets, np.asarray(hidden)[..., None], axis=1)
    want = ((np.asarray(predicted) - picked) ** 2).mean(axis=(1, 2))
    np.testing.assert_allclose(losses, want, rtol=1e-4)
    with pytest.raises(ValueError, match="target must be one of"):
        build_model({"name": "videomae_pretraining", **TINY, "target": "x"}, 0).check_input(
            (1, 4, 16, 16, 3)
        )
    one_frame = {**TINY, "size": "Ti/8x1", "target": "frame_difference"}
    with pytest.raises(ValueError, match="needs tubelets of 2 or more frames"):
        build_model({"name": "videomae_pretraining", **one_frame}, 0).check_input((1, 4, 16, 16, 3))


def test_bad_masking_is_named():
    model = build_model({"name": "videomae_pretraining", **TINY, "mask_ratio": 0.1}, 0)
    with pytest.raises(ValueError, match=r"mask_ratio=0.1 with 'tube' masking hides 0 of 8"):
        model.check_input((1, 4, 16, 16, 3))
    with pytest.raises(ValueError, match="masking must be one of"):
        build_model({"name": "videomae_pretraining", **TINY, "masking": "x"}, 0).check_input(
            (1, 4, 16, 16, 3)
        )


# ------------------------------------------------------------------ the model


def test_every_parameter_has_logical_axis_names():
    model = build_model({"name": "videomae_pretraining", **TINY, **DECODER}, 0)
    video = jnp.zeros((1, 4, 16, 16, 3))
    boxed = jax.eval_shape(lambda key: model.init(key, video, train=False), jax.random.key(0))
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
    params = boxed["params"]
    assert params["encoder_to_decoder"]["kernel"].names == (None, "embed")
    assert params["mask_token"].names == (None, None, "embed")
    assert params["decoder_head"]["kernel"].value.shape == (16, 2 * 8 * 8 * 3)


def test_objective_fits_model_and_data():
    mae = build_model({"name": "videomae_pretraining", **TINY}, 0)
    classifier = build_model({"name": "videomae", **TINY}, 4)
    assert objectives.check("reconstruction", mae, "videomae_pretraining", []).name
    with pytest.raises(ConfigError, match="masked autoencoder: train it with"):
        objectives.check("classification", mae, "videomae_pretraining", ["a"])
    with pytest.raises(ConfigError, match="needs a masked autoencoder"):
        objectives.check("reconstruction", classifier, "videomae", ["a"])
    with pytest.raises(ConfigError, match="the dataset has no labels"):
        objectives.check("classification", classifier, "videomae", [])
    with pytest.raises(ConfigError, match="unknown train.objective 'mae'"):
        objectives.get("mae")


# ------------------------------------------------------------------ through the trainer


@pytest.fixture(scope="module")
def pretrained(pretrained_run):
    """The tiny pre-training run (tests/conftest.py): validation at steps 50 and 100."""
    return pretrained_run


def test_encoder_sees_only_the_visible_tubelets(pretrained):
    _, workdir, _ = pretrained
    _, model, variables = vjax.load(workdir)
    rng = np.random.default_rng(0)
    video = rng.standard_normal((3, 2, 4, 16, 16, 3)).astype(np.float32)
    mask = np.asarray(draw_mask(jax.random.key(1), 2, (2, 4), model.mask_ratio, "tube"))
    pixel_mask = unpatchify(np.repeat(mask[..., None], 384, -1), model.tubelet, (2, 2, 2), 3)
    video[1] = np.where(pixel_mask, video[1], video[0])  # other pixels in hidden tubelets only
    video[2] = np.where(pixel_mask, video[0], video[2])  # ... in visible tubelets only
    apply = jax.vmap(lambda v: model.apply(variables, v, mask, train=False))
    out = np.asarray(jax.jit(apply)(video))
    assert out.shape == (3, 2, model.num_masked(video.shape[1:]), 384)
    np.testing.assert_array_equal(out[1], out[0])
    assert not np.allclose(out[2], out[0])


def test_validation_reports_the_reconstruction_loss_of_the_split(pretrained, capsys):
    from vjax.data.datasets import load_dataset
    from vjax.main import main
    from vjax.metric_writers import read_metrics
    from vjax.step import normalize_video

    config, workdir, last_eval = pretrained
    assert set(last_eval) == {"split", "num_examples", "loss"}
    assert last_eval["num_examples"] == config.dataset.num_validation
    records = [r for r in read_metrics(workdir) if r["split"] == "validation"]
    assert [r["step"] for r in records] == [50, 100] and set(records[0]) >= {"loss"}
    # The same per-clip losses computed here, batch by batch, with the same fixed masks.
    _, model, variables = vjax.load(workdir)
    source = load_dataset(config.dataset).as_data_source("validation")
    video = np.stack([np.stack(source[i]["video"]) for i in range(len(source))])
    losses = []
    per_clip = jax.jit(lambda b, v: objectives.reconstruction_losses(model, variables, b, v))
    for batch in np.split(video, len(video) // 8):
        normal = normalize_video(batch, config.input.mean, config.input.std, jnp.float32)
        losses.append(per_clip({"video": batch}, normal))
    assert last_eval["loss"] == pytest.approx(float(np.mean(losses)), rel=1e-5)
    # vjax eval prints (and writes) the loss of another split.
    args = [f"--config={PRETRAIN_CONFIG}", f"--workdir={workdir}", "--split=test"]
    assert main(["--mode=eval", *args, f"--config.dataset.data_dir={config.dataset.data_dir}"]) == 0
    assert "test @ step 100: 16 clips | loss " in capsys.readouterr().out
    for step in (50, 100):
        with open(os.path.join(workdir, f"reconstruction_step{step}.png"), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_bench_ssl_reads_the_pretrainings_validation_loss(pretrained):
    """``vjax bench ssl``'s line on what the pre-training learnt: its checkpoint's loss on the
    validation split (the loss its training last logged, with the same fixed masks), beside
    the mean prediction's 127 / 128 for 2x8x8 tubelets; None for raw-pixel targets."""
    from vjax.bench_ssl import pretraining_loss

    config, workdir, last_eval = pretrained
    learnt = pretraining_loss(config, workdir)
    assert learnt["loss"] == pytest.approx(last_eval["loss"], rel=1e-6)
    assert learnt["mean_prediction"] == 127 / 128
    raw = load_config(PRETRAIN_CONFIG)
    apply_overrides(raw, {"dataset.data_dir": config.dataset.data_dir,
                          "model.norm_pix_loss": "False"})  # fmt: skip
    assert pretraining_loss(raw, workdir)["mean_prediction"] is None


def test_reconstruction_keeps_visible_tubelets_and_fills_hidden_ones(pretrained):
    config, workdir, _ = pretrained
    _, model, variables = vjax.load(workdir)
    video = np.random.default_rng(0).integers(0, 256, (2, 4, 16, 16, 3), np.uint8)
    normal = (video / 255.0 - 0.5) / 0.25
    rebuild = jax.jit(lambda b, v: objectives.reconstruct(model, variables, b, v))
    original, masked, rebuilt = (np.asarray(x) for x in rebuild({"video": video}, normal))
    np.testing.assert_allclose(original, video / 255.0, rtol=1e-6)
    grey = np.isclose(masked, 0.5).all(-1)
    assert 0 < grey.mean() < 1  # the hidden tubelets
    np.testing.assert_allclose(rebuilt[~grey], original[~grey], rtol=1e-6)
    assert (
        not np.allclose(rebuilt[grey], original[grey]) and 0 <= rebuilt.min() <= rebuilt.max() <= 1
    )


def test_pretraining_step_on_8_devices_equals_one_device(data_dir):
    from test_sharding import _one_step

    from vjax.data.pipeline import TrainBatches

    overrides = {"model.dropout_rate": "0.1", "model.drop_path_rate": "0.1",
                 "model.masking": "random", "optimizer.warmup_steps": "0"}  # fmt: skip
    single = train.setup(_config(data_dir, "pretrain_k400_800", **overrides), jax.devices()[:1])
    state = jax.device_get(train.create_state(single, seed=0))
    batch = TrainBatches(single.builder.as_data_source("train"), 8, seed=0)(0)
    state1, metrics1 = _one_step(single, state, batch)
    mesh = "(('data', 2), ('fsdp', 2), ('tensor', 2))"
    sharded = train.setup(
        _config(data_dir, "pretrain_k400_800", **overrides, **{"sharding.mesh": mesh})
    )
    state8, metrics8 = _one_step(sharded, state, batch)
    np.testing.assert_allclose(metrics1["loss"], metrics8["loss"], rtol=1e-5)
    # atol: Adam's first update is about lr * g / (|g| + eps), so a gradient near eps (the
    # per-tubelet normalised targets make some) moves with the summation order: by ~1e-6 with
    # XLA's own kernels (vjax/compile_options.py), by 1.05e-5 for one value of 12288 with
    # YNNPACK's matmuls.
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=3e-5),
        jax.device_get(state1.params),
        jax.device_get(state8.params),
    )
    moved = jax.tree.map(
        lambda a, b: not np.allclose(a, b), state.params, jax.device_get(state1.params)
    )
    assert all(jax.tree.leaves(moved["decoder"])) and any(jax.tree.leaves(moved["encoder"]))


def test_finetuning_copies_the_encoder_drops_the_decoder_and_starts_a_new_head(
    data_dir, pretrained, capsys
):
    _, workdir, _ = pretrained
    _, _, source = vjax.load(workdir)
    config = _config(data_dir, "finetune_k400_800", **{"train.init_from": workdir})
    exp = train.setup(config)
    state = train.init_from_pretrained(exp, train.create_state(exp, seed=0), workdir)
    params = jax.device_get(state.params)
    blocks = source["params"]["encoder"]["block00"]
    jax.tree.map(np.testing.assert_array_equal, params["encoder"]["block00"], blocks)
    jax.tree.map(np.testing.assert_array_equal, params["embedding"], source["params"]["embedding"])
    assert not params["classifier"]["head"]["kernel"].any()  # a new (zero) head
    out = capsys.readouterr().out
    assert "encoder_norm" in out and "decoder/*" in out and "mask_token/*" in out
    assert config.optimizer.layer_decay == 0.75  # (trained end to end by the notebook's test)


def test_layer_decay_scales_each_block_through_optax():
    model = build_model({"name": "videomae", **TINY}, 3)  # 2 blocks
    video = jnp.zeros((1, 4, 16, 16, 3))
    shapes = jax.eval_shape(lambda key: model.init(key, video, train=False), jax.random.key(0))
    params = jax.tree.map(lambda x: jnp.zeros(x.shape), nn.meta.unbox(shapes)["params"])
    scales = layer_decay_scales(params, 0.5)
    assert scales["embedding"]["conv"]["kernel"] == 0.125
    assert scales["encoder"]["block00"]["mlp"]["fc1"]["kernel"] == 0.25
    assert scales["encoder"]["block01"]["attention"]["query_kernel"] == 0.5
    assert scales["fc_norm"]["scale"] == scales["classifier"]["head"]["kernel"] == 1.0
    opt = dict(name="sgd", lr=0.1, end_lr=0.1, warmup_steps=0, momentum=0.0, nesterov=False,
               weight_decay=0.0, grad_clip_norm=0.0, layer_decay=0.5)  # fmt: skip
    tx = make_optimizer(opt, num_steps=10)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    jax.tree.map(lambda u, s: np.testing.assert_allclose(u, -0.1 * s), updates, scales)
    with pytest.raises(ValueError, match="needs a transformer whose blocks"):
        layer_decay_scales({"conv": {"kernel": jnp.ones(3)}}, 0.75)
    with pytest.raises(ValueError, match=r"layer_decay must be in \(0, 1\]"):
        make_optimizer({**opt, "layer_decay": 1.5}, 10)
    assert isinstance(make_optimizer({**opt, "layer_decay": 1.0}, 10), optax.GradientTransformation)


# ------------------------------------------------------------------ unlabelled videos


def test_unlabelled_videos_pretrain_and_refuse_classification(tmp_path, capsys, monkeypatch):
    from vjax.cli import main
    from vjax.data.loaders import data_function
    from vjax.data.manifests import read_entries
    from vjax.data.video_io import encode_video

    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("validation", 1)):  # no class sub-folders
        for i in range(count):
            frames = rng.integers(0, 256, (6, 16, 16, 3), np.uint8)
            os.makedirs(tmp_path / "src" / split, exist_ok=True)
            encode_video(str(tmp_path / "src" / split / f"{i}.mp4"), frames, 5.0)
    (tmp_path / "m.csv").write_text(
        "path,split\nsrc/train/0.mp4,\nsrc/validation/0.mp4,validation\n"
    )
    assert [(e.label, e.split) for e in read_entries(str(tmp_path / "m.csv"))] == [
        (None, "train"), (None, "validation")]  # fmt: skip
    (tmp_path / "mixed.csv").write_text("path,label\nsrc/train/0.mp4,\nsrc/train/1.mp4,run\n")
    with pytest.raises(ValueError, match="1 videos without a label .* label every video, or none"):
        read_entries(str(tmp_path / "mixed.csv"))

    data = {"src": str(tmp_path / "src"), "data_dir": str(tmp_path / "tfds"), "fps": "5.0",
            "short_side": "16"}  # fmt: skip
    flags = [f"--{k}={v}" for k, v in data.items()]
    assert main(["prepare", "video_folder", *flags, "--num_workers=1"]) == 0
    assert "no labels (videos without classes)" in capsys.readouterr().out

    config = _config("", "pretrain_k400_800")
    config.unlock()
    config.dataset = dict(data, name="video_folder", fps=5.0, short_side=16, num_workers=1)
    config.input.update(num_frames=4, crop_size=16, frame_stride=1, test_num_clips=1)
    exp = train.setup(config)  # pre-training takes it (its step never reads labels)
    assert exp.class_names == [] and "label" not in exp.builder.info.features
    batch = data_function(exp.builder, config, "train", "train", 0, 1)(0)
    assert batch["video"].shape == (8, 4, 16, 16, 3) and (batch["label"] == -1).all()
    held_out = data_function(exp.builder, config, "eval", "validation", 0, 1)(0)
    assert held_out["mask"].sum() == 1 and (held_out["label"] == -1).all()

    monkeypatch.setattr(jax, "jit", lambda *a, **k: pytest.fail("compiled before the check"))
    config.model = dict(name="videomae", **TINY)
    config.train.objective = "classification"
    with pytest.raises(
        ConfigError, match=r"the dataset has no labels .* prepare a folder of class"
    ) as error:
        train.setup(config)
    # The command it suggests is the one this test trained with above: recipe and keys exist.
    suggested = re.search(r"--config=configs/(\S+) --config.dataset.name=(\w+) ", str(error.value))
    assert suggested.groups() == ("videomae.py:pretrain_k400_800", "video_folder")


# ------------------------------------------------------------------ recipes


RECIPES = [f"{kind}_{data}" for kind in ("pretrain", "finetune")
           for data in ("k400_800", "k400_1600", "ssv2_800", "ssv2_2400")]  # fmt: skip


def test_recipes_build_their_models_and_tiny_variants_share_two_configs():
    from vjax.data.transforms import InputOptions
    from vjax.flops import count_params

    tiny = set()
    for recipe in RECIPES:
        config = load_config(f"{CONFIG}:{recipe}")
        clip = (1, *InputOptions.from_config(config.input).clip_shape)
        model = build_model(config.model, 0, config.train.dtype)
        model.check_input(clip)
        pretraining = recipe.startswith("pretrain")
        assert config.train.objective == ("reconstruction" if pretraining else "classification")
        batch = config.input.global_batch_size
        per_256 = 1.5e-4 if pretraining else (1e-3 if recipe == "finetune_k400_800" else 5e-4)
        assert config.optimizer.lr == pytest.approx(per_256 * batch / 256)
        # The scripts' --min_lr defaults (run_mae_pretraining.py 1e-5, run_class_finetuning.py
        # 1e-6), scaled by batch / 256 as the learning rate is: the cosine's floor.
        min_lr = 1e-5 if pretraining else 1e-6
        assert config.optimizer.end_lr == pytest.approx(min_lr * batch / 256)
        if not pretraining:
            assert (config.optimizer.layer_decay, config.model.drop_path_rate) == (0.75, 0.1)
            assert (config.input.mixup_alpha, config.input.cutmix_alpha) == (0.8, 1.0)
            assert config.optimizer.label_smoothing == 0.1
        tiny.add(load_config(f"{CONFIG}:{recipe},tiny").to_json())
    assert len(tiny) == 2  # trained above (pre-training, fine-tuning) and in test_resume.py
    classifier = build_model(load_config(f"{CONFIG}:finetune_k400_800").model, 400)
    assert count_params(classifier, (1, 16, 224, 224, 3)) == pytest.approx(87e6, rel=0.01)
    with pytest.raises(ValueError, match="unknown recipe 'pretrain_x'"):
        load_config(f"{CONFIG}:pretrain_x")


def test_targets_of_a_nearly_flat_tubelet_match_videomae():
    from vjax.models.masking import pixel_targets

    rng = np.random.default_rng(0)
    video = (0.5 + 1e-4 * rng.standard_normal((1, 2, 4, 4, 3))).astype(np.float32)
    blocks = video.reshape(1, 32, 3).astype(np.float64)  # one tubelet (2, 4, 4)
    want = (blocks - blocks.mean(1, keepdims=True)) / (blocks.std(1, ddof=1, keepdims=True) + 1e-6)
    got = np.asarray(pixel_targets(video, (2, 4, 4))).reshape(1, 32, 3)
    np.testing.assert_allclose(got, want, rtol=2e-2, atol=2e-2)


# ---- objectives: a fresh training mask every step (obj14)
def test_training_masks_follow_the_step_key(monkeypatch):
    from vjax import objectives

    seen = []

    def capture(model, variables, video, pixels, mask, **kw):
        seen.append(np.asarray(mask))
        return jnp.zeros(video.shape[0]), None, {}

    monkeypatch.setattr(objectives, "masked_pixel_losses", capture)
    model = types.SimpleNamespace(tubelet=(2, 4, 4), mask_ratio=0.75, masking="tube")
    batch = {"video": np.zeros((2, 4, 16, 16, 3), np.uint8)}
    for key in (1, 2):
        objectives.reconstruction(
            model, None, batch, jnp.zeros((2, 4, 16, 16, 3)), jax.random.key(key)
        )
    assert not np.array_equal(seen[0], seen[1])
    # the model's masking kind: 'random' on a (2, 8) grid hides 12 of 16 tokens, not one
    # spatial set at both time steps as a tube would (some of 8 clips differ between them)
    model.masking, video = "random", np.zeros((8, 4, 8, 16, 3), np.uint8)
    objectives.reconstruction(
        model, None, {"video": video}, jnp.zeros(video.shape), jax.random.key(0)
    )
    mask = seen[-1].reshape(8, 2, 8)
    assert (mask.sum((1, 2)) == 12).all() and not (mask[:, 0] == mask[:, 1]).all()


def test_reconstruct_unnormalises_predictions_per_tubelet(monkeypatch):
    from vjax import objectives

    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (1, 2, 8, 8, 3), np.uint8)  # tubelet (2, 4, 4): 4 tokens
    mask = np.array([[True, False, True, False]])
    predicted = 0.1 * rng.standard_normal((1, 2, 96)).astype(np.float32)
    monkeypatch.setattr(objectives, "_mask", lambda model, v, key: jnp.asarray(mask))
    monkeypatch.setattr(
        objectives, "masked_pixel_losses", lambda *a, **k: (None, jnp.asarray(predicted), None)
    )
    model = types.SimpleNamespace(
        tubelet=(2, 4, 4), norm_pix_loss=True, num_masked=lambda s: 2, target="pixels"
    )
    _, _, rebuilt = objectives.reconstruct(model, None, {"video": video}, jnp.zeros(video.shape))
    pixels = video / 255.0

    def tokens(x):  # (1, 2, 8, 8, 3) -> (1, 4 tokens (h, w), 32 pixels (pt, ph, pw), 3)
        x = np.asarray(x).reshape(1, 1, 2, 2, 4, 2, 4, 3).transpose(0, 1, 3, 5, 2, 4, 6, 7)
        return x.reshape(1, 4, 32, 3)

    blocks = tokens(pixels)
    mean, std = blocks.mean(2, keepdims=True), blocks.std(2, ddof=1, keepdims=True) + 1e-6
    want = np.clip(predicted.reshape(1, 2, 32, 3) * std[:, [0, 2]] + mean[:, [0, 2]], 0, 1)
    got = tokens(rebuilt)
    np.testing.assert_allclose(got[:, [0, 2]], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[:, [1, 3]], blocks[:, [1, 3]], rtol=1e-6)


def test_bench_ssl_table(tmp_path):
    """``vjax bench ssl``'s section: per seed both models' test top-1 with Wilson's interval and
    the gain compared clip by clip (McNemar), then the gain over the seeds (a paired t-test),
    written beside the other sections."""
    from scipy.stats import binomtest, ttest_rel

    from vjax.bench import publish
    from vjax.bench_ssl import table
    from vjax.evaluate.uncertainty import wilson_interval

    labels = [i % 10 for i in range(800)]

    def tested(right, seconds):  # right: the test clips it gets right
        predicted = [label if i in right else (label + 1) % 10 for i, label in enumerate(labels)]
        return {"top1": len(right) / 800, "top1_ci95": wilson_interval(len(right), 800),
                "num_examples": 800, "seconds": seconds,
                "per_video": {"label": labels, "predicted": predicted}}  # fmt: skip

    # seed 0: scratch 500 right, pre-trained loses 80 of them and gains 120 more (540 right);
    # seed 1: scratch 516 right, pre-trained 500 (the first 500 of them)
    runs = [{"seed": 0, "finetuned": tested(set(range(80, 620)), 160.0),
             "scratch": tested(set(range(500)), 150.0), "pretrain_seconds": 500.0},
            {"seed": 1, "pretrain_seconds": 500.0, "finetuned": tested(set(range(500)), 161.0),
             "scratch": tested(set(range(516)), 151.0)}]  # fmt: skip
    for run in runs:
        run["probes"] = {"pretrained": {"top1": 0.4, "l2": 0.01},
                         "scratch": {"top1": 0.3, "l2": 1.0}}  # fmt: skip
        run["pretraining"] = {"loss": 0.98, "mean_prediction": 127 / 128}
    result = {"num_classes": 10, "pretrain_clips": 4000, "labelled_clips": 400,
              "pretrain_steps": 2000, "finetune_steps": 400, "runs": runs}  # fmt: skip
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\n## vjax bench distill\n\nkept\n")
    assert publish("ssl", ["--tiny"], lambda c: table(result, 60.0, c), str(out)) == 0
    text = out.read_text()
    assert "## vjax bench distill\n\nkept" in text and "`vjax bench ssl --tiny`" in text
    assert "400 labelled clips (10% of the labels)" in text and "test split (800 clips)" in text
    ci = binomtest(540, 800).proportion_ci(method="wilson")
    ci_scratch = binomtest(500, 800).proportion_ci(method="wilson")
    p = binomtest(120, 200, 0.5).pvalue
    assert (
        f"| 0 | 0.675 ({ci.low:.3f}-{ci.high:.3f}) | 0.625 ({ci_scratch.low:.3f}-"
        f"{ci_scratch.high:.3f}) | +5.0 | only pre-trained right on 120 of the 800 test clips, "
        f"only scratch on 80; McNemar exact p = {p:.2g} | 160 / 150 |"
    ) in text
    assert "| 1 | 0.625 (" in text and "| -2.0 | only pre-trained right on 0 of the 800" in text
    t = ttest_rel([0.675, 0.625], [0.625, 0.645]).pvalue
    assert (
        "Gain from pre-training: +1.5 points on average over 2 seeds (-2.0 to +5.0; pre-trained "
        f"better on 1 of 2; paired t-test over the seeds p = {t:.2g}); target: +10 points." in text
    )
    assert "| 1 | 0.400 (L2 0.01) | 0.300 (L2 1) | +10.0 |" in text


@pytest.mark.parametrize(
    "override, message",
    [("model.target=flow", "target must be one of ('pixels', 'frame_difference'), got 'flow'"),
     ("model.weight_init=torch",
      "weight_init must be one of ('scenic', 'videomae') for VideoMAEPretraining, got 'torch'")],
)  # fmt: skip
def test_an_unknown_target_or_init_on_the_command_line_is_one_line(
    tmp_path, capsys, override, message
):
    """``--config.model.target=flow``: one line naming the valid targets, exit 2, no
    traceback and no run folder (checked before any data or compilation); the same for the
    initialisation."""
    from vjax.cli import main as vjax_main

    workdir = tmp_path / "run"
    argv = ["train", f"--config={CONFIG}:pretrain_motion,tiny", f"--config.{override}",
            f"--workdir={workdir}"]  # fmt: skip
    assert vjax_main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and "WARNING" not in line]
    assert "Traceback" not in err and len(lines) == 1, err
    assert message in lines[0]
    assert not workdir.exists()
