"""The self-supervised path's edges (found by a mutation audit): the reconstruction
objective against a NumPy reference with a stub model, the masks' edge cases, the linear
probe's folds and L2 choice, and ``vjax bench ssl``'s flags and run plan. Each test checks
against an independent reference (a hand computation or NumPy), never the code against itself.
"""

from __future__ import annotations

import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import zero_variables

from vjax import bench_ssl, objectives
from vjax.errors import UserError
from vjax.models.masking import check_masking, draw_mask, num_masked, split_tokens

# ------------------------------------------------------------------ NumPy references


def _tokens(video, tubelet):
    """(B, T, H, W, C) -> (B, tokens in (t, h, w) order, pixels in (pt, ph, pw) order, C)."""
    b, t, h, w, c = video.shape
    pt, ph, pw = tubelet
    x = video.reshape(b, t // pt, pt, h // ph, ph, w // pw, pw, c)
    x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)
    return x.reshape(b, (t // pt) * (h // ph) * (w // pw), pt * ph * pw, c)


def _targets(pixels, tubelet, normalize):
    blocks = _tokens(np.asarray(pixels, np.float64), tubelet)
    if normalize:
        mean = blocks.mean(2, keepdims=True)
        std = blocks.std(2, ddof=1, keepdims=True) + 1e-6
        blocks = (blocks - mean) / std
    return blocks.reshape(*blocks.shape[:2], -1)


class _StubModel:
    """What masked_pixel_losses reads of a VideoMAEPretraining model, with fixed predictions
    and a record of how it was applied."""

    def __init__(self, predicted, tubelet=(2, 4, 4), norm_pix_loss=True, own_count=2):
        self.predicted = predicted
        self.tubelet = tubelet
        self.norm_pix_loss = norm_pix_loss
        self.own_count = own_count
        self.calls = []
        self.mask_ratio = 0.5
        self.masking = "random"
        self.target = "pixels"

    def num_masked(self, shape):
        return self.own_count

    def apply(self, variables, video, mask, train, hidden, rngs, mutable):
        self.calls.append({"train": train, "hidden": hidden, "rngs": rngs})
        return jnp.asarray(self.predicted[:, :hidden]), {}


def _clip(seed=0, shape=(2, 2, 8, 8, 3)):
    return np.random.default_rng(seed).integers(0, 256, shape, np.uint8)


# ------------------------------------------------------------------ the reconstruction loss


@pytest.mark.parametrize("norm_pix_loss", [True, False])
def test_masked_pixel_loss_is_the_mse_over_the_hidden_tokens_against_numpy(norm_pix_loss):
    """Per clip: the mean over its hidden tokens (in increasing order, as
    x[mask]) and their pixels of (prediction - target)^2, the targets normalised per tubelet
    only under norm_pix_loss."""
    video = _clip()
    pixels = video / 255.0
    mask = np.array([[True, False, False, True], [False, True, True, False]])
    predicted = np.random.default_rng(1).standard_normal((2, 2, 96)).astype(np.float32)
    model = _StubModel(predicted, norm_pix_loss=norm_pix_loss)
    losses, got_predicted, _ = objectives.masked_pixel_losses(
        model, None, jnp.zeros(video.shape), jnp.asarray(pixels, jnp.float32), jnp.asarray(mask)
    )
    targets = _targets(pixels, (2, 4, 4), norm_pix_loss)
    want = [np.mean((predicted[i] - targets[i][mask[i]]) ** 2) for i in range(2)]
    np.testing.assert_allclose(np.asarray(losses), want, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(got_predicted), predicted)
    assert model.calls[0]["train"] is False  # validation: no dropout


def test_a_given_hidden_count_overrides_the_models_own_ratio():
    """``hidden``: a mask hiding 3 of 4 tokens on a model whose ratio hides 2."""
    video = _clip()
    pixels = video / 255.0
    mask = np.array([[True, True, False, True], [True, False, True, True]])
    predicted = np.random.default_rng(2).standard_normal((2, 3, 96)).astype(np.float32)
    model = _StubModel(predicted, own_count=2)
    losses, _, _ = objectives.masked_pixel_losses(
        model, None, jnp.zeros(video.shape), jnp.asarray(pixels, jnp.float32),
        jnp.asarray(mask), hidden=3,
    )  # fmt: skip
    assert model.calls[0]["hidden"] == 3
    targets = _targets(pixels, (2, 4, 4), True)
    want = [np.mean((predicted[i] - targets[i][mask[i]]) ** 2) for i in range(2)]
    np.testing.assert_allclose(np.asarray(losses), want, rtol=1e-5)


def test_training_loss_is_the_batch_mean_with_dropout_from_the_step_key(monkeypatch):
    """The training step: train=True, dropout keyed by the step's key,
    pixels as uint8 / 255, and the loss the mean of the per-clip losses."""
    seen = {}

    def fake(model, variables, video, pixels, mask, *, train=False, rngs=None, mutable=()):
        seen.update(train=train, rngs=rngs, pixels=np.asarray(pixels))
        return jnp.array([1.0, 3.0, 8.0]), None, {}

    monkeypatch.setattr(objectives, "masked_pixel_losses", fake)
    model = types.SimpleNamespace(tubelet=(2, 4, 4), mask_ratio=0.5, masking="tube")
    video = _clip(shape=(3, 2, 8, 8, 3))
    key = jax.random.key(7)
    loss, metrics, _ = objectives.reconstruction(
        model, None, {"video": video}, jnp.zeros(video.shape), key
    )
    assert float(loss) == pytest.approx(4.0) and float(metrics["loss"]) == pytest.approx(4.0)
    assert seen["train"] is True
    np.testing.assert_array_equal(
        jax.random.key_data(seen["rngs"]["dropout"]), jax.random.key_data(key)
    )
    np.testing.assert_allclose(seen["pixels"], video / 255.0, rtol=1e-6)
    assert seen["pixels"].max() <= 1.0


def test_reconstruct_with_raw_pixel_targets_puts_the_predictions_back_unchanged(monkeypatch):
    """Raw-pixel targets: hidden tubelets take the predictions
    (clipped to [0, 1]) in x[mask] order, visible ones keep the input; the masked input is
    grey (0.5) exactly on the hidden tubelets."""
    video = _clip(3, (1, 2, 8, 8, 3))
    mask = np.array([[True, False, True, False]])
    predicted = np.random.default_rng(4).uniform(-0.5, 1.5, (1, 2, 96)).astype(np.float32)
    monkeypatch.setattr(objectives, "_mask", lambda model, v, key: jnp.asarray(mask))
    monkeypatch.setattr(
        objectives, "masked_pixel_losses", lambda *a, **k: (None, jnp.asarray(predicted), None)
    )
    model = types.SimpleNamespace(
        tubelet=(2, 4, 4), norm_pix_loss=False, num_masked=lambda s: 2, target="pixels"
    )
    _, masked_input, rebuilt = objectives.reconstruct(
        model, None, {"video": video}, jnp.zeros(video.shape)
    )
    blocks = _tokens(video / 255.0, (2, 4, 4))
    got = _tokens(np.asarray(rebuilt), (2, 4, 4))
    want_hidden = np.clip(predicted.reshape(1, 2, 32, 3), 0, 1)
    np.testing.assert_allclose(got[:, [0, 2]], want_hidden, rtol=1e-6)
    np.testing.assert_allclose(got[:, [1, 3]], blocks[:, [1, 3]], rtol=1e-6)
    grey = _tokens(np.asarray(masked_input), (2, 4, 4))
    np.testing.assert_array_equal(grey[:, [0, 2]], 0.5)
    np.testing.assert_allclose(grey[:, [1, 3]], blocks[:, [1, 3]], rtol=1e-6)


# ------------------------------------------------------------------ masks


def test_a_ratio_that_hides_every_token_is_refused():
    """mask_ratio=1.0 hides all 8 tokens: nothing left for the encoder."""
    with pytest.raises(ValueError, match="hides 8 of 8 tokens"):
        check_masking((2, 4), 1.0, "tube")
    check_masking((2, 4), 0.75, "tube")  # hides 6 of 8: fine


def test_split_tokens_on_a_tube_mask_matches_boolean_indexing_by_hand():
    """A (2, 4) grid, spatial tokens 1 and 2 hidden at both time steps:
    hidden tokens 1, 2, 5, 6 and visible 0, 3, 4, 7 (time-major order)."""
    mask = np.zeros((1, 8), bool)
    mask[0, [1, 2, 5, 6]] = True
    visible, hidden = split_tokens(jnp.asarray(mask), 4)
    assert np.asarray(visible).tolist() == [[0, 3, 4, 7]]
    assert np.asarray(hidden).tolist() == [[1, 2, 5, 6]]
    # tube masking rounds per time step: int(0.5 * 5) = 2 of 5 at each of 3 time
    # steps, 6 in all (not int(0.5 * 15) = 7, which no tube mask can hide)
    tube = np.asarray(draw_mask(jax.random.key(5), 4, (3, 5), 0.5, "tube"))
    assert num_masked((3, 5), 0.5, "tube") == 6
    per_time = tube.reshape(4, 3, 5)  # (clip, time, space): the same 2 of 5 at every time
    assert (per_time.sum(2) == 2).all() and (per_time == per_time[:, :1]).all()


# ------------------------------------------------------------------ the linear probe


def test_the_probe_of_a_handful_of_clips_uses_one_fold_per_clip():
    """Fewer training clips than folds: one fold per clip (the loop once ran over 5 folds
    and scored an empty one: NaN, then max() of nothing); a single clip is a clear error."""
    from vjax.evaluate.probe import choose_l2, linear_probe

    rng = np.random.default_rng(0)
    labels = np.array([0, 1, 0, 1])
    features = rng.normal(size=(4, 3)).astype(np.float32) + 3 * labels[:, None]
    assert linear_probe(features, labels, features, labels, 2)["top1"] == 1.0
    assert choose_l2(features[:2], labels[:2], 2) in (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    with pytest.raises(ValueError, match="needs at least 2 training clips, got 1"):
        choose_l2(features[:1], labels[:1], 2)


# ------------------------------------------------------------------ vjax bench ssl


def _fake_training(monkeypatch):
    trained = {}

    def fake_timed(config, workdir):
        trained[os.path.basename(workdir)] = config
        return 1.0

    def fake_train_and_test(config, workdir):
        trained[os.path.basename(workdir)] = config
        return {"top1": 0.5, "num_examples": 8}

    monkeypatch.setattr(bench_ssl, "timed_training", fake_timed)
    monkeypatch.setattr(bench_ssl, "train_and_test", fake_train_and_test)
    monkeypatch.setattr(
        bench_ssl, "pretraining_loss", lambda c, d: {"loss": 1.0, "mean_prediction": None}
    )
    monkeypatch.setattr(bench_ssl, "encoder_probes", lambda c, d: {})
    return trained


def test_ssl_labels_at_least_two_clips_and_applies_the_overrides(monkeypatch, tmp_path):
    """64 tiny clips x 0.03 rounds to 2 labelled clips, the fewest the probes'
    cross-validation takes; x 0.005 (none) is refused before anything trains.
    ``finetune_extra`` reaches both classifiers (the scratch one too), and ``pretrain_extra``
    the pre-training."""
    trained = _fake_training(monkeypatch)
    with pytest.raises(UserError, match=r"--label_fraction=0.005 labels 0 of the 64 training "
                       r"clips; the linear probes' cross-validation needs at least 2"):  # fmt: skip
        bench_ssl.run(str(tmp_path), "data", 3, 2, label_fraction=0.005, tiny=True, seeds=1)
    assert trained == {}
    result = bench_ssl.run(str(tmp_path), "data", 3, 2, label_fraction=0.03, tiny=True,
                           seeds=1, pretrain_extra={"train.log_every": "7"},
                           finetune_extra={"train.log_every": "9"})  # fmt: skip
    assert result["labelled_clips"] == 2
    for name in ("finetune_seed0", "scratch_seed0"):
        assert trained[name].dataset.num_train == 2
        assert trained[name].train.log_every == 9
    assert trained["pretrain_seed0"].train.log_every == 7


def test_ssl_command_line_reaches_the_run(monkeypatch, tmp_path):
    """Every flag of ``vjax bench ssl`` reaches :func:`bench_ssl.run`."""
    seen = {}

    def fake_run(workdir, data_dir, pretrain_steps, finetune_steps, label_fraction=0.1,
                 tiny=False, pretrain_extra=None, finetune_extra=None, seeds=3,
                 head_steps=200):  # fmt: skip
        seen.update(workdir=workdir, data_dir=data_dir, pretrain_steps=pretrain_steps,
                    finetune_steps=finetune_steps, label_fraction=label_fraction, tiny=tiny,
                    seeds=seeds, head_steps=head_steps)  # fmt: skip
        return {}

    monkeypatch.setattr(bench_ssl, "run", fake_run)
    monkeypatch.setattr(bench_ssl, "table", lambda result, seconds, command: "the table")
    argv = [
        f"--workdir={tmp_path}/w",
        "--data_dir=/d",
        "--pretrain_steps=11",
        "--finetune_steps=5",
        "--label_fraction=0.25",
        "--tiny",
        "--seeds=2",
        "--head_steps=0",
        "--out=",
    ]
    assert bench_ssl.main(argv) == 0
    assert seen == {
        "workdir": f"{tmp_path}/w",
        "data_dir": "/d",
        "pretrain_steps": 11,
        "finetune_steps": 5,
        "label_fraction": 0.25,
        "tiny": True,
        "seeds": 2,
        "head_steps": 0,
    }


def test_a_model_with_a_head_per_modality_cannot_be_probed():
    """MBT on video and audio calls its classifier head once per modality and
    averages the logits: no single feature vector is what the head receives, so the probe
    must refuse rather than read the first modality's features alone."""
    from vjax.evaluate.probe import head_inputs
    from vjax.models import build_model

    model = build_model({"name": "mbt", "size": "Ti/8x2", "hidden_size": 16, "num_layers": 2,
                         "num_heads": 2, "mlp_dim": 32, "fusion_layer": 1}, 4)  # fmt: skip
    rng = np.random.default_rng(0)
    inputs = {"video": jnp.asarray(rng.normal(size=(2, 4, 16, 16, 3)), jnp.float32),
              "audio": jnp.asarray(rng.normal(size=(2, 16, 16)), jnp.float32)}  # fmt: skip
    # Zeros of the parameters' shapes: the refusal comes while tracing, nothing needs to run.
    variables = zero_variables(model, inputs)
    with pytest.raises(ValueError, match="no single classifier head"):
        head_inputs(model, variables, inputs)


def test_tied_strengths_go_to_the_stronger():
    """Two classes 10 standard deviations apart: every strength of the grid
    scores every held-out clip right, and the tie goes to the strongest, 1.0."""
    from vjax.evaluate.probe import L2_GRID, choose_l2

    labels = np.arange(20) % 2
    features = 10.0 * labels[:, None] + np.random.default_rng(0).normal(size=(20, 2))
    assert choose_l2(features.astype(np.float32), labels, 2) == max(L2_GRID) == 1.0


def test_test_features_are_standardised_with_the_training_statistics():
    """The test clips are scaled by the training clips' mean and std, never their
    own: test features all shifted 50 units along the label direction all fall on class 1's
    side, so the probe reads exactly the class-1 share of the test clips (half)."""
    from vjax.evaluate.probe import linear_probe

    rng = np.random.default_rng(0)
    labels = np.arange(40) % 2
    train = (2.0 * labels - 1.0)[:, None] + 0.3 * rng.normal(size=(40, 1))
    test = train + 50.0
    result = linear_probe(train.astype(np.float32), labels, test.astype(np.float32), labels, 2)
    assert result["top1"] == 0.5
