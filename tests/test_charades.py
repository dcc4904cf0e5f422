"""Charades (multi-label) from a tiny copy in its official formats: the listing, the builder,
and the SlowFast recipe's tiny variant training end to end with the sigmoid loss; validation
and the multi-view test report video-level and frame-level mAP equal to scikit-learn's on the
model's own view scores, with labels taken from the CSVs here."""

import dataclasses
import os

import numpy as np
import pytest
from conftest import REPO
from sklearn.metrics import average_precision_score

from vjax.data.video_io import encode_video

CLASSES = {
    "c000": "Holding some clothes",
    "c001": "Putting clothes somewhere",
    "c002": "Opening a door",
    "c003": "Closing a door",
}
FPS, SECONDS = 8, 3.0  # each video: 24 frames
# id -> actions "cXXX start end" (the official column format); one video has none
TRAIN = {
    "AAA01": "c000 0.00 1.50;c001 1.20 3.00",
    "AAA02": "c002 0.50 2.00",
    "AAA03": "c003 0.00 3.00;c002 2.50 3.00",
    "AAA04": "",
    "AAA05": "c001 0.00 1.00",
    "AAA06": "c000 1.00 2.00;c003 0.00 0.90",
    "MISS1": "c000 0.00 1.00",
}
TEST = {
    "BBB01": "c000 0.00 1.00;c002 1.50 3.00",
    "BBB02": "c003 0.20 2.80",
    "BBB03": "c001 0.00 3.00;c000 2.00 3.00",
}
HEADER = "id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length"


def _csv(path, videos):
    rows = [
        f'{vid},S1,Kitchen,6,7,Yes,"A person, in a kitchen.",door;clothes,"Someone moves.",'
        f'"{actions}",{SECONDS:.2f}'
        for vid, actions in videos.items()
    ]
    path.write_text("\n".join([HEADER, *rows]) + "\n")


def _video(seed):
    rng = np.random.default_rng(seed)
    grey = rng.integers(20, 230, size=int(FPS * SECONDS), dtype=np.uint8)
    return np.broadcast_to(grey[:, None, None, None], (len(grey), 24, 32, 3)).copy()


@pytest.fixture(scope="module")
def charades_root(tmp_path_factory):
    """Annotations in Charades/ (the official zip's folder), videos in Charades_v1_480/."""
    root = tmp_path_factory.mktemp("Charades_root")
    (root / "Charades").mkdir()
    lines = [f"{k} {v}" for k, v in CLASSES.items()]
    (root / "Charades" / "Charades_v1_classes.txt").write_text("\n".join(lines) + "\n")
    _csv(root / "Charades" / "Charades_v1_train.csv", TRAIN)
    _csv(root / "Charades" / "Charades_v1_test.csv", TEST)
    (root / "Charades_v1_480").mkdir()
    for i, vid in enumerate([v for v in [*TRAIN, *TEST] if v != "MISS1"]):
        encode_video(str(root / "Charades_v1_480" / f"{vid}.mp4"), _video(i), FPS)
    return root


def _multi_hot(actions, at=None):
    """The classes of an actions string (those under way at time ``at``, if given)."""
    out = np.zeros(len(CLASSES), np.int32)
    for item in filter(None, actions.split(";")):
        key, start, end = item.split()
        if at is None or float(start) <= at <= float(end):
            out[list(CLASSES).index(key)] = 1
    return out


def test_charades_listing(charades_root, tmp_path):
    from vjax.data.annotations import charades_entries

    entries, names = charades_entries(str(charades_root))
    assert names == list(CLASSES.values())
    assert [e.id for e in entries] == [*TRAIN, *TEST]
    assert [e.split for e in entries] == ["train"] * len(TRAIN) + ["validation"] * len(TEST)
    first = entries[0]
    assert first.label == ("Holding some clothes", "Putting clothes somewhere")
    assert first.actions == (
        ("Holding some clothes", 0.0, 1.5),
        ("Putting clothes somewhere", 1.2, 3.0),
    )
    assert entries[3].label == () and not os.path.exists(entries[6].path)  # none; MISS1
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "Charades_v1_classes.txt").write_text("c000 Holding some clothes\n")
    _csv(bad / "Charades_v1_train.csv", {"X": "c000 0.0 1.0;c009 1 2"})
    _csv(bad / "Charades_v1_test.csv", {})
    header, rest = (bad / "Charades_v1_train.csv").read_text().split("\n", 1)
    (bad / "Charades_v1_train.csv").write_text(f"{header}\n\n{rest}")  # a blank line 2
    with pytest.raises(ValueError, match=r"Charades_v1_train.csv:3: action 'c009 1 2'"):
        charades_entries(str(bad))


def test_slowfast_recipe_and_its_tiny_variant_end_to_end(charades_root, tmp_path):
    from vjax import checkpoint, objectives, train
    from vjax.config_utils import apply_overrides, load_config
    from vjax.data.transforms import InputOptions, make_view_iterator
    from vjax.evaluate.scoring import video_scores
    from vjax.models import build_model

    recipe = load_config(f"{REPO}/configs/conv3d.py:slowfast_r50_charades")
    assert (recipe.dataset.name, recipe.input.test_ensemble) == ("charades", "max")
    assert (recipe.input.num_frames, recipe.input.test_num_clips * recipe.input.test_num_crops) == (
        64,
        30,
    )
    build_model(recipe.model, 157).check_input((1, 64, 224, 224, 3))

    config = load_config(f"{REPO}/configs/conv3d.py:slowfast_r50_charades,tiny")
    apply_overrides(
        config,
        {
            "dataset.src": str(charades_root),
            "dataset.data_dir": str(tmp_path / "tfds"),
            "train.num_steps": "3",
            "train.eval_every": "3",
            "train.checkpoint_every": "3",
        },
    )
    with config.unlocked():  # multi-hot labels mix (AudioSet's recipes, configs/mbt.py)
        config.input.mixup_alpha = 0.5
    workdir = str(tmp_path / "run")
    validation = train.train(config, workdir)
    assert validation["num_examples"] == len(TEST) and 0 <= validation["mAP"] <= 1
    assert set(validation["per_class_ap"]) == set(CLASSES.values())

    # The multi-view test of the checkpoint (2 clips, max-pooled), and every view's logits
    # from the same compiled eval step, scored here independently.
    exp = train.setup(config)
    manager = checkpoint.make_manager(os.path.join(workdir, "checkpoints"), 2)
    state, _ = train.restore_state(exp, manager)
    _, eval_step = train.compile_steps(exp)
    test = train.evaluate_views(exp, eval_step, state.variables, "validation")
    source = exp.builder.as_data_source("validation")
    views = make_view_iterator(InputOptions.from_config(config.input))
    scores, _ = video_scores(
        train._apply(exp, eval_step, state.variables),
        (source[i] for i in range(len(source))),
        views,
        8,
        label=lambda e: {"label": np.zeros(1)},
    )  # every view's logits
    assert scores.shape == (3, 2, 4)
    labels = np.stack([_multi_hot(a) for a in TEST.values()])  # from the CSV, independently
    keep = labels.any(axis=0)  # PySlowFast's get_map leaves out classes without a positive
    video_ap = average_precision_score(labels[:, keep], scores.max(axis=1)[:, keep], average=None)
    assert test["mAP"] == pytest.approx(video_ap.mean(), rel=1e-5)
    # Frame level: 25 points j / 25 * 3 s; the 2 clips (frames 0-7 and 16-23 of 24) are
    # centred at 3.5 / 8 and 19.5 / 8 s; each point takes the nearer clip's scores.
    times = np.arange(25) / 25 * SECONDS
    nearer = (np.abs(times - 19.5 / FPS) < np.abs(times - 3.5 / FPS)).astype(int)
    frame_scores = scores[:, nearer].reshape(-1, 4)
    frame_labels = np.stack([_multi_hot(a, t) for a in TEST.values() for t in times])
    keep = frame_labels.any(axis=0)
    frame_ap = average_precision_score(frame_labels[:, keep], frame_scores[:, keep], average=None)
    assert test["frame_mAP"] == pytest.approx(frame_ap.mean(), rel=1e-5)
    # The loss of the pooled scores: the training objective's. multi_label averages the binary
    # cross-entropy over every (video, class); multi_label_sum (scenic's) sums it over the
    # classes, and its validation loss was the average, 4 (AudioSet: 527) times too small.
    pooled = scores.max(axis=1).astype(np.float64)
    entries = np.logaddexp(0, -pooled) * labels + np.logaddexp(0, pooled) * (1 - labels)
    assert test["loss"] == pytest.approx(entries.mean(), rel=1e-5)
    summed = dataclasses.replace(exp, objective=objectives.get("multi_label_sum"))
    test = train.evaluate_views(summed, eval_step, state.variables, "validation")
    assert test["loss"] == pytest.approx(entries.sum(axis=1).mean(), rel=1e-5)
    # The validation during training too (one view): the run's last one, of these parameters.
    one_view = train.evaluate(summed, eval_step, state.variables, "validation")
    assert one_view["loss"] == pytest.approx(4 * validation["loss"], rel=1e-5)

    from vjax.predict import _top

    top = _top(scores[0, 0], list(CLASSES.values()), 4, multi_label=True)
    assert [t["score"] for t in top] == pytest.approx(sorted(1 / (1 + np.exp(-scores[0, 0])))[::-1])


def test_mixup_mixes_multi_hot_labels_and_the_sigmoid_loss_takes_them():
    """Multi-label data with mixup (scenic's AudioSet recipes, configs/mbt.py): each class's
    target is ``lam`` or ``1 - lam`` by which row has it, 1 where both do; the sigmoid loss
    scores the logits against those targets, written out here as BCE."""
    import jax.numpy as jnp

    from vjax.data.augment import mix_batch
    from vjax.objectives import multilabel_losses

    labels = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 1, 1]], np.int32)
    video = np.zeros((3, 1, 2, 2, 3), np.uint8)
    out = mix_batch(video, labels, 4, np.random.default_rng(0), mixup_alpha=0.5, multi_label=True)
    lam = float(out["label_probs"][0, 0])
    assert 0 < lam < 1
    want = [[lam, 0, 1, 1 - lam], [0, 1, 0, 0], [1 - lam, 0, 1, lam]]  # row i with row 2 - i
    np.testing.assert_allclose(out["label_probs"], want, rtol=1e-6)
    np.testing.assert_array_equal(out["label"], labels if lam >= 0.5 else labels[::-1])
    logits = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    batch = {k: jnp.asarray(out[k]) for k in ("label", "label_probs")}
    loss, _ = multilabel_losses(jnp.asarray(logits), batch)
    t, p = np.asarray(want), 1 / (1 + np.exp(-logits.astype(np.float64)))
    assert float(loss) == pytest.approx(-(t * np.log(p) + (1 - t) * np.log(1 - p)).mean(), 1e-5)


def test_the_objective_must_fit_the_data():
    """Multi-label data trains with the sigmoid objective and single-label data with softmax;
    a mismatch stops before anything compiles, naming the flag that fixes it."""
    from vjax.config_utils import ConfigError
    from vjax.objectives import check

    classifier = object()  # no OBJECTIVE attribute: a classifier
    with pytest.raises(ConfigError, match="several classes per video.*objective=multi_label"):
        check("classification", classifier, "slowfast_r50", ["a", "b"], multi_label=True)
    with pytest.raises(ConfigError, match="one class per video.*objective=classification"):
        check("multi_label", classifier, "slowfast_r50", ["a", "b"], multi_label=False)
    fits = check("multi_label", classifier, "slowfast_r50", ["a", "b"], multi_label=True)
    assert fits.multi_label and fits.classifies
