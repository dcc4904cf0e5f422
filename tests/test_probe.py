"""The linear probe (vjax/evaluate/probe.py) against scikit-learn's logistic regression, and
the features it reads: what each model's classifier head receives."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vjax.evaluate.probe import (
    L2_GRID,
    choose_l2,
    fit_logistic,
    head_inputs,
    linear_probe,
    stratified_folds,
)


def _clusters(clips: int, signal: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features whose first 10 dimensions carry a one-hot of the label times ``signal``."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, clips)
    features = rng.normal(size=(clips, 24)).astype(np.float32)
    features[:, :10] += signal * np.eye(10, dtype=np.float32)[labels]
    return features, labels


def _standardised(train, *others):
    mean, std = train.mean(0), train.std(0) + 1e-6
    return [(a - mean) / std for a in (train, *others)]


def _reference(features, labels, l2):
    """scikit-learn's fit of the same objective: C = 1 / (l2 * N)."""
    sklearn = pytest.importorskip("sklearn.linear_model", reason="scikit-learn: the test extra")
    model = sklearn.LogisticRegression(C=1 / (l2 * len(labels)), max_iter=10_000, tol=1e-10)
    return model.fit(features, labels)


@pytest.mark.parametrize("l2", [1e-3, 1e-1])
def test_the_fit_is_scikit_learns_logistic_regression(l2):
    features, labels = _clusters(300, 1.0)
    weights, bias = fit_logistic(features, labels, 10, l2)
    probabilities = np.asarray(jax.nn.softmax(features @ weights + bias))
    want = _reference(features, labels, l2).predict_proba(features)
    np.testing.assert_allclose(probabilities, want, atol=2e-3)


def test_the_strength_is_chosen_by_cross_validation_on_the_training_clips_alone():
    """The grid's strength with the best mean held-out top-1 over interleaved folds, as
    scikit-learn's fits score it; the test clips play no part (the function never sees them).
    These clusters' best is 0.1 (held-out 0.210, the others 0.193 at most), not the
    tie-break's strongest; 300 clips, as the other tests fit: L-BFGS compiles once per data
    shape."""
    features, labels = _clusters(300, 0.8, seed=6)
    fold = stratified_folds(labels, 5)
    scores = []
    for l2 in L2_GRID:
        held_out = []
        for k in range(5):
            train, test = _standardised(features[fold != k], features[fold == k])
            model = _reference(train, labels[fold != k], l2)
            held_out.append(model.score(test, labels[fold == k]))
        scores.append(np.mean(held_out))
    want = max(l2 for l2, s in zip(L2_GRID, scores, strict=True) if s == max(scores))
    assert choose_l2(features, labels, 10) == want


def test_every_fold_holds_each_class_in_proportion():
    """Labels that cycle with the index (vjax_motion's) once put whole classes into one fold
    and none into its training part: every probe chose the strongest L2 and read chance."""
    cycling = np.arange(400) % 10
    for labels in (cycling, np.random.default_rng(0).integers(0, 7, 333)):
        fold = stratified_folds(labels, 5)
        counts = np.array([np.bincount(labels[fold == k], minlength=labels.max() + 1)
                           for k in range(5)])  # fmt: skip
        assert (counts.max(0) - counts.min(0) <= 1).all()
    assert not (stratified_folds(cycling, 5) == np.arange(400) % 5).all()
    features, labels = _clusters(300, 1.0, seed=4)  # folds by position choose L2_GRID[-1]
    labels = np.arange(300) % 10  # cycling labels, features that carry them
    features[:, :10] = np.eye(10, dtype=np.float32)[labels] * 2 + features[:, :10] * 0.5
    assert choose_l2(features, labels, 10) < L2_GRID[-1]


def test_the_probe_scores_the_test_clips_with_the_chosen_strength(monkeypatch):
    from vjax.evaluate import probe

    chosen, real_choose = [], probe.choose_l2

    def recording_choose(*args):
        chosen.append((args, real_choose(*args)))
        return chosen[-1][1]

    monkeypatch.setattr(probe, "choose_l2", recording_choose)
    features, labels = _clusters(500, 0.8, seed=2)
    result = linear_probe(features[:300], labels[:300], features[300:], labels[300:], 10)
    train, test = _standardised(features[:300], features[300:])
    want = _reference(train, labels[:300], result["l2"]).score(test, labels[300:])
    assert result["top1"] == pytest.approx(want, abs=1 / 200)  # one clip at most
    (args, l2), *_ = chosen
    assert result["l2"] == l2  # the strength cross-validation chose on the training clips
    np.testing.assert_array_equal(args[0], features[:300])
    np.testing.assert_array_equal(args[1], labels[:300])
    separable, labels = _clusters(400, 8.0, seed=3)  # 300 to train: the shapes fitted above
    assert (
        linear_probe(separable[:300], labels[:300], separable[300:], labels[300:], 10)["top1"]
        == 1.0
    )


@pytest.mark.parametrize(
    "name, fields",
    [("videomae", {}), ("vivit", {"variant": "factorised_encoder"}), ("r2plus1d_18", {})],
)
def test_head_inputs_are_what_the_classifier_head_receives(name, fields):
    """The logits are the head's affine map of the captured features, for a transformer with
    mean pooling, a factorised one and a 3D CNN (BatchNorm statistics passed as variables)."""
    from vjax.models.registry import build_model

    sizes = {"videomae": dict(size="Ti/8x2", hidden_size=32, num_layers=1, num_heads=2,
                              mlp_dim=64),
             "vivit": dict(size="Ti/8x2", hidden_size=32, num_layers=1, num_heads=2, mlp_dim=64,
                           temporal_layers=1),
             "r2plus1d_18": dict(layers=(1, 1, 1, 1), width=8)}  # fmt: skip
    import ml_collections

    model = build_model(ml_collections.ConfigDict({"name": name, **sizes[name], **fields}), 5)
    video = jax.random.normal(jax.random.key(0), (3, 4, 16, 16, 3))
    variables = nn.meta.unbox(
        jax.jit(lambda k: model.init(k, video, train=False))(jax.random.key(1))
    )
    # a head with weights (it starts at zero), so the logits depend on the features
    head = variables["params"]["classifier"]["head"]
    head["kernel"] = jax.random.normal(jax.random.key(2), head["kernel"].shape)
    head["bias"] = jax.random.normal(jax.random.key(3), head["bias"].shape)
    features = head_inputs(model, variables, video, batch_size=2)
    logits = jax.jit(lambda v: model.apply(v, video, train=False))(variables)
    assert features.shape[0] == 3
    np.testing.assert_allclose(
        features @ np.asarray(head["kernel"]) + np.asarray(head["bias"]), logits, atol=1e-4
    )


def test_a_model_without_a_classifier_head_cannot_be_probed():
    from vjax.models.videomae_pretraining import VideoMAEPretraining

    model = VideoMAEPretraining(num_classes=0, size="Ti/8x2", hidden_size=32, num_layers=1,
                                num_heads=2, mlp_dim=64, decoder_hidden_size=16,
                                decoder_num_layers=1, decoder_num_heads=2, decoder_mlp_dim=32,
                                mask_ratio=0.5)  # fmt: skip
    video = jnp.zeros((1, 4, 16, 16, 3))
    variables = jax.jit(lambda k: model.init(k, video, train=False))(jax.random.key(0))
    with pytest.raises(ValueError, match="VideoMAEPretraining has no single classifier head"):
        head_inputs(model, variables, video)


def test_probe_command_probes_a_pretraining_run_and_writes_the_result(
    pretrained_run, data_dir, tmp_path, capsys, monkeypatch
):
    """``vjax probe`` (and ``vjax bench ssl``'s probes, the same function): the pre-training
    run's encoder on the fine-tuning recipe's classifier and its seed's random initialisation,
    each on the training clips and the test split read through the data pipeline (their
    features equal ``head_inputs`` on the clips generated directly), printed and written as
    ``probe_<split>.json``; ``--split=train`` and a config that does not classify (the
    pre-training's own) are one line, exit 2."""
    import json
    import shutil

    from conftest import REPO

    from vjax import bench_ssl, probing
    from vjax.bench import vjax_recipe
    from vjax.checkpoint import read_checkpoint
    from vjax.cli import main as vjax_main
    from vjax.data.motion import generate_arrays
    from vjax.step import normalize_video
    from vjax.train import create_state, setup

    assert bench_ssl.encoder_probes is probing.encoder_probes
    seen, real_probe = [], probing.linear_probe

    def recording_probe(*args):
        seen.append(args)
        return real_probe(*args)

    monkeypatch.setattr(probing, "linear_probe", recording_probe)
    workdir = str(tmp_path / "pretrained")
    shutil.copytree(pretrained_run[1], workdir)  # the session's run stays as it is
    flags = [f"--workdir={workdir}", f"--config.dataset.data_dir={data_dir}", "--split=test"]
    config = f"--config={REPO}/configs/videomae.py:finetune_motion,tiny"
    tuned = ["--config.dataset.num_train=16", "--config.seed=3"]
    assert vjax_main(["probe", config, *flags, *tuned]) == 0
    out = capsys.readouterr().out
    saved = json.load(open(tmp_path / "pretrained" / "probe_test.json"))
    assert (saved["train_clips"], saved["test_clips"], saved["split"]) == (16, 16, "test")
    mine, random = saved["pretrained"], saved["scratch"]
    assert f"top1 {mine['top1']:.4f} (L2 {mine['l2']:g})" in out
    assert "random init (seed 3)" in out and f"top1 {random['top1']:.4f}" in out
    assert f"gain {100 * (mine['top1'] - random['top1']):+.1f} points" in out
    assert "linear probe: train (16 clips) -> test (16 clips)" in out
    assert f"Initialised from {workdir}: " in out and "dropped" in out  # the decoder
    assert {mine["l2"], random["l2"]} <= set(L2_GRID)

    # What the probes were fitted on: the pipeline's features of the generated clips.
    (pre, pre_labels, pre_test, test_labels, k), (scratch, *_) = seen
    overrides = {"dataset.data_dir": data_dir, "dataset.num_train": "16", "seed": "3"}
    recipe = vjax_recipe("videomae.py:finetune_motion,tiny", overrides)
    data = recipe.dataset
    shape = (data.num_classes, data.num_frames, data.height, data.width)
    train_videos, train_labels = generate_arrays(0, "train", 16, *shape)
    test_videos, want_test_labels = generate_arrays(0, "test", data.num_test, *shape)
    assert list(pre_labels) == [i % 4 for i in range(16)] == list(train_labels) and k == 4
    np.testing.assert_array_equal(test_labels, want_test_labels)
    exp = setup(recipe)
    start = create_state(exp, 3)  # the random encoder: the seed's initialisation
    params = dict(start.params)
    _, weights, _ = read_checkpoint(workdir)
    shared = set(params) & set(weights["params"]) - {"classifier"}
    assert "encoder" in shared
    params.update({name: weights["params"][name] for name in shared})

    def features(params, videos):
        video = normalize_video(videos, recipe.input.mean, recipe.input.std, jnp.float32)
        return head_inputs(exp.model, {"params": params, **start.model_state}, video)

    np.testing.assert_allclose(scratch, features(start.params, train_videos), atol=1e-5)
    np.testing.assert_allclose(pre, features(params, train_videos), atol=1e-5)
    np.testing.assert_allclose(pre_test, features(params, test_videos), atol=1e-5)
    assert not np.allclose(pre, scratch, atol=1e-3)

    assert vjax_main(["probe", config, *flags, "--split=train"]) == 2
    assert capsys.readouterr().err.strip() == (
        "vjax probe: error: vjax probe fits the training split: test it on another (--split=test)"
    )
    pretraining = f"--config={REPO}/configs/videomae.py:pretrain_motion,tiny"
    assert vjax_main(["probe", pretraining, *flags]) == 2
    assert capsys.readouterr().err.strip() == (
        "vjax probe: error: vjax probe fits one class per clip; train.objective="
        "'reconstruction' (give the config of a single-label classifier on the dataset)"
    )


def test_a_multitask_model_is_probed_per_task():
    """Feature 0 says the verb, feature 1 the noun: each task's probe reads its own column
    of labels (a swapped or shared column would score at chance)."""
    from vjax.probing import _probes

    rng = np.random.default_rng(0)
    labels = np.stack([rng.integers(0, 2, 120), rng.integers(0, 3, 120)], axis=1)
    features = np.stack([4.0 * labels[:, 0], 4.0 * labels[:, 1], rng.normal(size=120)], axis=1)
    features = features + 0.1 * rng.normal(size=features.shape)
    train, test = (features[:80], labels[:80]), (features[80:], labels[80:])
    probes = _probes(train, test, {"verb": ["a", "b"], "noun": ["x", "y", "z"]})
    assert set(probes) == {"verb", "noun"}
    assert probes["verb"]["top1"] == probes["noun"]["top1"] == 1.0


def test_probe_without_config_uses_the_demo_config_as_its_help_says(pretrained_run, monkeypatch):
    """``vjax probe --workdir=PRETRAINING`` without --config probes with configs/demo.py's
    classifier, as documented; it took the pre-training run's own config (a reconstruction
    model), which probe then refused."""
    from conftest import DEMO_CONFIG

    from vjax import probing
    from vjax.cli import main as vjax_main
    from vjax.config_utils import load_config

    seen = []

    def capture(config, workdir, split, verbose):
        seen.append(config)
        raise SystemExit(0)

    monkeypatch.setattr(probing, "encoder_probes", capture)
    with pytest.raises(SystemExit):
        vjax_main(["probe", f"--workdir={pretrained_run[1]}"])
    demo = load_config(DEMO_CONFIG)
    assert seen[0].model.to_dict() == demo.model.to_dict()
    assert seen[0].train.objective == "classification"
