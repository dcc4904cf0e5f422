"""Multi-task heads (e.g. Epic-Kitchens' verb + noun) on every backbone: model outputs, the
summed loss and its metrics, mixup of several label sets, and the joint (action) metrics, each
checked against an independent NumPy computation."""

import functools
import itertools
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vjax.data.augment import mix_batch
from vjax.evaluate.metrics import joint_topk_accuracy, task_metrics
from vjax.models import build_model
from vjax.step import task_losses
from vjax.tasks import head_sizes, label_columns, split_classes

TASKS = {"verb": 3, "noun": 5}
_TRANSFORMER = dict(hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32)
# One small configuration of every model family, on 16 frames of 64x64.
FAMILIES = {
    "vivit": {"name": "vivit", "size": "Ti/8x2", **_TRANSFORMER},
    "vivit_fe": {
        "name": "vivit",
        "size": "Ti/8x2",
        "variant": "factorised_encoder",
        "temporal_layers": 1,
        **_TRANSFORMER,
    },
    "single_frame": {"name": "single_frame", "size": "Ti/8", **_TRANSFORMER},
    "timesformer": {"name": "timesformer", "size": "Ti/8", **_TRANSFORMER},
    "videomae": {"name": "videomae", "size": "Ti/8x2", **_TRANSFORMER},
    "c3d": {"name": "c3d"},
    "r2plus1d_18": {"name": "r2plus1d_18"},
    "r3d_18": {"name": "r3d_18"},
    "mc3_18": {"name": "mc3_18"},
    "i3d_r50": {"name": "i3d_r50", "width": 8},
    "slowfast_r50": {"name": "slowfast_r50", "width": 8},
    "x3d_xs": {"name": "x3d_xs"},
    "lrcn": {"name": "lrcn", "frame_width": 8, "hidden_size": 16},
    "conv_lstm": {"name": "conv_lstm", "stem_features": 8, "hidden_features": (8,)},
    "recurrent_over": {
        "name": "recurrent_over",
        "backbone": {"name": "r2plus1d_18"},
        "hidden_size": 16,
    },
}
CLIP = (2, 16, 64, 64, 3)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_backbone_gets_one_head_per_task(family):
    """Traced through the real modules (``eval_shape``: no FLOPs spent on weights)."""
    model = build_model(FAMILIES[family], TASKS)
    video = jax.ShapeDtypeStruct(CLIP, jnp.float32)
    # init runs the forward pass: one trace gives the output and the variables.
    init = functools.partial(model.init_with_output, jax.random.key(0), train=False)
    logits, variables = jax.eval_shape(init, video)
    assert {t: out.shape for t, out in logits.items()} == {"verb": (2, 3), "noun": (2, 5)}
    classifier = nn.meta.unbox(variables["params"])["classifier"]
    assert sorted(classifier) == ["noun", "verb"]
    assert classifier["noun"]["kernel"].shape[-1] == 5


def _np_cross_entropy(logits, targets):
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return -(targets * log_probs).sum(-1)


def test_loss_is_the_sum_of_the_tasks_losses_and_top1_needs_every_task():
    rng = np.random.default_rng(0)
    logits = {t: rng.normal(size=(6, k)).astype(np.float32) for t, k in TASKS.items()}
    labels = np.stack([rng.integers(k, size=6) for k in TASKS.values()], axis=1)
    labels[0] = [logits["verb"][0].argmax(), logits["noun"][0].argmax()]  # both right
    labels[1] = [logits["verb"][1].argmax(), (logits["noun"][1].argmax() + 1) % 5]  # verb only
    loss, metrics = task_losses(logits, {"label": jnp.asarray(labels)})

    onehot = {t: np.eye(k)[labels[:, i]] for i, (t, k) in enumerate(TASKS.items())}
    per_task = {t: _np_cross_entropy(logits[t], onehot[t]).mean() for t in TASKS}
    right = {t: logits[t].argmax(1) == labels[:, i] for i, t in enumerate(TASKS)}
    np.testing.assert_allclose(loss, per_task["verb"] + per_task["noun"], rtol=1e-5)
    np.testing.assert_allclose(metrics["loss_noun"], per_task["noun"], rtol=1e-5)
    np.testing.assert_allclose(metrics["top1_verb"], right["verb"].mean())
    np.testing.assert_allclose(metrics["top1"], (right["verb"] & right["noun"]).mean())
    assert metrics["top1"] < metrics["top1_verb"]  # row 1 counts for the verb alone


def test_soft_targets_are_split_per_task_and_smoothing_applies_to_each():
    rng = np.random.default_rng(1)
    logits = {t: rng.normal(size=(4, k)).astype(np.float32) for t, k in TASKS.items()}
    labels = np.stack([rng.integers(k, size=4) for k in TASKS.values()], axis=1)
    probs = rng.dirichlet(np.ones(8), size=4).astype(np.float32)  # not one-hot on purpose
    batch = {"label": jnp.asarray(labels), "label_probs": jnp.asarray(probs)}
    loss, _ = task_losses(logits, batch, label_smoothing=0.1)

    def smooth(t, k):
        return t * 0.9 + 0.1 / k

    expected = _np_cross_entropy(logits["verb"], smooth(probs[:, :3], 3)).mean()
    expected += _np_cross_entropy(logits["noun"], smooth(probs[:, 3:], 5)).mean()
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


class _NounFirstHeads(nn.Module):
    """Two heads returned noun first, as a dict that crossed a jit or remat comes back (keys
    sorted), while ``num_classes`` and the label columns are verb first."""

    num_classes: dict

    @nn.compact
    def __call__(self, video, train=False):
        features = video.reshape(video.shape[0], -1)
        return {t: nn.Dense(self.num_classes[t], name=t)(features) for t in ("noun", "verb")}


def test_the_training_loss_pairs_each_head_with_its_own_label_column():
    from vjax.objectives import OBJECTIVES

    model = _NounFirstHeads(TASKS)
    video = jnp.asarray(np.random.default_rng(3).normal(size=(4, 2, 2, 2, 3)), jnp.float32)
    variables = model.init(jax.random.key(0), video)
    logits = model.apply(variables, video)
    labels = np.asarray([[0, 4], [1, 3], [2, 2], [0, 1]])  # verb column, then noun
    loss, metrics, _ = OBJECTIVES["classification"].loss(
        model, variables, {"label": jnp.asarray(labels)}, video, jax.random.key(1)
    )
    onehot = {t: np.eye(k)[labels[:, i]] for i, (t, k) in enumerate(TASKS.items())}
    per_task = {t: _np_cross_entropy(np.asarray(logits[t]), onehot[t]).mean() for t in TASKS}
    np.testing.assert_allclose(metrics["loss_verb"], per_task["verb"], rtol=1e-5)
    np.testing.assert_allclose(loss, sum(per_task.values()), rtol=1e-5)


def test_one_task_keeps_the_single_label_metrics():
    logits = jnp.asarray(np.random.default_rng(2).normal(size=(4, 3)), jnp.float32)
    labels = np.asarray([0, 1, 2, 0])
    loss, metrics = task_losses(logits, {"label": jnp.asarray(labels)})
    assert set(metrics) == {"loss", "top1"}
    x = np.asarray(logits, np.float64)  # the cross-entropy and accuracy, by hand
    log_p = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(loss, -log_p[np.arange(4), labels].mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["loss"], loss)
    assert float(metrics["top1"]) == (x.argmax(axis=1) == labels).mean()


def test_mixup_mixes_every_task_with_the_same_weight():
    rng = np.random.default_rng(3)
    video = rng.integers(0, 255, size=(4, 2, 4, 4, 3), dtype=np.uint8)
    labels = np.asarray([[0, 4], [1, 3], [2, 2], [0, 1]])
    out = mix_batch(video, labels, [3, 5], np.random.default_rng(7), mixup_alpha=0.4)
    lam = np.random.default_rng(7).beta(0.4, 0.4)
    for i, (t, k) in enumerate(TASKS.items()):
        onehot = np.eye(k)[labels[:, i]]
        want = lam * onehot + (1 - lam) * onehot[::-1]
        np.testing.assert_allclose(split_classes(out["label_probs"], TASKS)[t], want, rtol=1e-6)
    assert out["label"].shape == (4, 2)
    np.testing.assert_array_equal(out["label"], labels if lam >= 0.5 else labels[::-1])


def _brute_force_joint_topk(scores, labels, k):
    """Every label combination scored by the product of the tasks' softmaxes."""
    probs = {t: np.exp(s) / np.exp(s).sum(1, keepdims=True) for t, s in scores.items()}
    hits = []
    for i in range(len(labels["verb"])):
        combos = itertools.product(*(range(p.shape[1]) for p in probs.values()))
        factors = list(probs.values())
        joint = {c: np.prod([p[i, ci] for p, ci in zip(factors, c, strict=True)]) for c in combos}
        best = sorted(joint, key=lambda c: -joint[c])[:k]
        hits.append(tuple(int(labels[t][i]) for t in scores) in best)
    return float(np.mean(hits))


@pytest.mark.parametrize("k", [1, 2, 5])
def test_joint_topk_equals_a_search_over_every_combination(k):
    rng = np.random.default_rng(k)
    scores = {t: rng.normal(size=(40, n)) * 2 for t, n in TASKS.items()}
    labels = {t: rng.integers(n, size=40) for t, n in TASKS.items()}
    got = joint_topk_accuracy(scores, labels, k)
    assert got == _brute_force_joint_topk(scores, labels, k)
    assert 0 < got < 1  # a test that could fail either way


def test_task_metrics_on_a_hand_computed_example():
    names = {"verb": ["take", "put"], "noun": ["cup", "plate", "knife"]}
    # Three videos: scores concatenated (verb 2 | noun 3); labels one column per task.
    scores = np.asarray(
        [
            [2.0, 0.0, 0.0, 3.0, 0.0],  # verb take (0); noun plate (1)
            [0.0, 1.0, 1.0, 0.0, 0.0],  # verb put (1); noun cup (0)
            [1.0, 0.0, 0.0, 0.0, 2.0],  # verb take (0); noun knife (2)
        ]
    )
    labels = np.asarray([[0, 1], [1, 2], [1, 2]])
    m = task_metrics(scores, labels, names)
    assert m["tasks"]["verb"]["top1"] == pytest.approx(2 / 3)  # videos 0 and 1
    assert m["tasks"]["noun"]["top1"] == pytest.approx(2 / 3)  # videos 0 and 2
    assert m["top1"] == pytest.approx(1 / 3)  # only video 0 has both
    assert m["top5"] == 1.0  # six combinations; each truth is among its top 5
    assert m["loss"] == pytest.approx(m["tasks"]["verb"]["loss"] + m["tasks"]["noun"]["loss"])
    assert m["num_videos"] == 3


def test_task_helpers_reject_labels_without_one_column_per_task():
    assert head_sizes({"verb": ["a", "b"], "noun": ["c"]}) == {"verb": 2, "noun": 1}
    with pytest.raises(ValueError, match="one column per task"):
        label_columns(np.zeros((4, 3), np.int32), TASKS)
    with pytest.raises(ValueError, match="the tasks"):
        split_classes(np.zeros((4, 7)), TASKS)


def test_classification_logits_concatenate_in_task_order():
    from vjax.objectives import classification_logits
    from vjax.tasks import split_classes

    # The heads' dict in a-z order, as a jax.jit returns it: the columns follow the model's
    # num_classes (the run's class_names order), not the dict's.
    verb, noun = jnp.arange(6.0).reshape(2, 3), 10 + jnp.arange(8.0).reshape(2, 4)
    model = types.SimpleNamespace(
        apply=lambda v, x, train: {"noun": noun, "verb": verb}, num_classes={"verb": 3, "noun": 4}
    )
    out = np.asarray(classification_logits(model, None, None, None))
    np.testing.assert_array_equal(out, np.concatenate([verb, noun], 1))
    parts = split_classes(out, {"verb": 3, "noun": 4})
    np.testing.assert_array_equal(parts["verb"], verb)


def test_split_classes_refuses_too_many_classes():
    from vjax.tasks import split_classes

    with pytest.raises(ValueError, match="8 classes given"):
        split_classes(np.zeros((1, 8)), {"verb": 3, "noun": 4})
