"""Every metric of ``vjax.evaluate`` against scikit-learn (the independent reference), on
random scores with absent, never-predicted and tied classes (ties at +/-inf too); the
multi-label loss of the train step against the same reference; the frame-level (Charades
localisation) mAP and a PR-curve point by hand; non-finite logits and labels outside the
classes refused with one clear line."""

import numpy as np
import pytest
from sklearn import metrics as sk
from sklearn.calibration import calibration_curve

from vjax.errors import UserError, run_guarded
from vjax.evaluate.metrics import (
    CALIBRATION_BINS,
    CLASS_PR_POINTS,
    PR_POINTS,
    MetricInputError,
    average_precision,
    classification_metrics,
    frame_level_map,
    interpolated_precision,
    sigmoid,
    task_metrics,
)


def _softmax(scores):
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def single():
    """60 videos, 7 classes: class 5 never true, class 6 never predicted nor true."""
    rng = np.random.default_rng(0)
    labels = rng.choice([0, 1, 2, 3, 4], size=60, p=[0.3, 0.3, 0.2, 0.1, 0.1])
    scores = rng.normal(size=(60, 7)).astype(np.float32)
    scores[np.arange(60), labels] += 1.2  # better than chance, not perfect
    scores[:, 6] -= 10.0
    scores[:3, 5] += 10.0  # three videos predicted as the absent class 5
    return scores, labels


def _ece_reference(confidence, correct):
    """ECE from scikit-learn's calibration curve and bin counts found with np.digitize."""
    prob_true, prob_pred = calibration_curve(correct, confidence, n_bins=CALIBRATION_BINS)
    edges = np.linspace(0, 1, CALIBRATION_BINS + 1)
    counts = np.bincount(
        np.digitize(confidence, edges[1:-1], right=True), minlength=CALIBRATION_BINS
    )
    counts = counts[counts > 0]
    return float(np.sum(counts * np.abs(prob_true - prob_pred)) / len(confidence)), prob_true


def test_single_label_metrics_match_sklearn(single):
    scores, labels = single
    m = classification_metrics(scores, labels)
    predicted = scores.argmax(axis=1)
    probs = _softmax(scores.astype(np.float64))
    k = scores.shape[1]

    assert m["top1"] == pytest.approx(sk.accuracy_score(labels, predicted))
    assert m["top5"] == pytest.approx(sk.top_k_accuracy_score(labels, scores, k=5, labels=range(k)))
    assert m["mean_class_accuracy"] == pytest.approx(sk.balanced_accuracy_score(labels, predicted))
    assert m["loss"] == pytest.approx(sk.log_loss(labels, probs, labels=range(k)), rel=1e-5)
    np.testing.assert_array_equal(
        m["confusion_matrix"], sk.confusion_matrix(labels, predicted, labels=range(k))
    )

    present = sorted(set(labels) | set(predicted))  # scikit-learn's classes: 0..5, not 6
    assert present == [0, 1, 2, 3, 4, 5]
    p, r, f, s = sk.precision_recall_fscore_support(
        labels, predicted, labels=present, zero_division=0
    )
    for name, ref in (("precision", p), ("recall", r), ("f1", f)):
        ours = m[f"per_class_{name}"]
        np.testing.assert_allclose([ours[c] for c in present], ref)
        assert ours[6] is None  # neither true nor predicted: undefined, left out
        for average in ("macro", "weighted"):
            expected = sk.precision_recall_fscore_support(
                labels, predicted, average=average, zero_division=0
            )[("precision", "recall", "f1").index(name)]
            assert m[average][name] == pytest.approx(expected)
    np.testing.assert_array_equal([m["per_class_support"][c] for c in present], s)

    confusion = sk.confusion_matrix(labels, predicted, labels=range(k))
    cells = sorted(
        (-confusion[i, j], i, j) for i in range(k) for j in range(k) if i != j and confusion[i, j]
    )
    assert [(p["true"], p["predicted"], p["count"]) for p in m["most_confused"]] == [
        (i, j, -c) for c, i, j in cells[:20]
    ]
    top = m["most_confused"][0]
    assert top["fraction"] == pytest.approx(top["count"] / np.sum(labels == top["true"]))

    ece, prob_true = _ece_reference(probs.max(axis=1), predicted == labels)
    assert m["ece"] == pytest.approx(ece)
    accuracy = [a for a in m["calibration"]["accuracy"] if a is not None]
    np.testing.assert_allclose(accuracy, prob_true)
    assert sum(m["calibration"]["count"]) == len(labels)


def test_multi_label_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    labels = (rng.uniform(size=(40, 6)) < 0.3).astype(np.int32)
    labels[:, 4] = 0  # no positive: left out of the mAP (PySlowFast's get_map)
    labels[0, 5] = labels[1, 5] = 1
    scores = np.round(rng.normal(size=(40, 6)) + 1.5 * labels, 1)  # ties on purpose
    m = classification_metrics(scores, labels)

    keep = labels.any(axis=0)
    reference = sk.average_precision_score(labels[:, keep], scores[:, keep], average=None)
    np.testing.assert_allclose(np.asarray(m["per_class_ap"])[keep], reference)
    assert np.isnan(m["per_class_ap"][4])
    assert m["mAP"] == pytest.approx(float(np.mean(reference)))

    predicted = (sigmoid(scores) > 0.5).astype(int)
    p, r, f, s = sk.precision_recall_fscore_support(labels, predicted, zero_division=0)
    np.testing.assert_allclose(m["per_class_precision"], p)
    np.testing.assert_allclose(m["per_class_recall"], r)
    np.testing.assert_allclose(m["per_class_f1"], f)
    np.testing.assert_array_equal(m["per_class_support"], s)
    for average in ("macro", "weighted"):
        ref = sk.precision_recall_fscore_support(
            labels, predicted, average=average, zero_division=0
        )
        assert [m[average][k] for k in ("precision", "recall", "f1")] == pytest.approx(ref[:3])

    probs = sigmoid(scores).ravel()
    assert m["loss"] == pytest.approx(sk.log_loss(labels.ravel(), probs), rel=1e-5)
    assert m["ece"] == pytest.approx(_ece_reference(probs, labels.ravel())[0])
    top = scores.argmax(axis=1)
    assert m["top1"] == pytest.approx(labels[np.arange(40), top].mean())

    def envelope(y, s, points):  # max precision at recall >= r, from scikit-learn's curve
        precision, recall, _ = sk.precision_recall_curve(y, s)
        levels = np.arange(points) / (points - 1)  # exact: 12/20 == 3/5, unlike linspace
        return [precision[recall >= r].max() for r in levels]

    np.testing.assert_allclose(
        m["pr_curves"]["micro"], envelope(labels.ravel(), scores.ravel(), PR_POINTS)
    )
    np.testing.assert_allclose(
        m["pr_curves"]["per_class"][0], envelope(labels[:, 0], scores[:, 0], CLASS_PR_POINTS)
    )
    assert m["pr_curves"]["per_class"][4] is None


def test_each_task_of_a_multitask_result_matches_sklearn(single):
    scores, labels = single
    rng = np.random.default_rng(2)
    nouns = rng.integers(0, 3, size=len(labels))
    both = np.concatenate([scores, rng.normal(size=(len(labels), 3))], axis=1)
    m = task_metrics(
        both, np.stack([labels, nouns], axis=1), {"verb": list("abcdefg"), "noun": list("xyz")}
    )
    for task, truth, part in (("verb", labels, both[:, :7]), ("noun", nouns, both[:, 7:])):
        predicted = part.argmax(axis=1)
        precision, recall, f1, _ = sk.precision_recall_fscore_support(
            truth, predicted, average="macro", zero_division=0
        )
        got = m["tasks"][task]
        assert got["macro"]["f1"] == pytest.approx(f1), task
        assert got["macro"]["precision"] == pytest.approx(precision), task
        assert got["macro"]["recall"] == pytest.approx(recall), task
        assert got["top1"] == pytest.approx(sk.accuracy_score(truth, predicted)), task
    # The joint top-1 (both right) with Wilson's interval, as SciPy's.
    from scipy.stats import binomtest

    both_right = int(((both[:, :7].argmax(1) == labels) & (both[:, 7:].argmax(1) == nouns)).sum())
    assert m["top1"] == both_right / len(labels)
    want = binomtest(both_right, len(labels)).proportion_ci(method="wilson")
    np.testing.assert_allclose(m["top1_ci95"], (want.low, want.high), rtol=1e-12)


def test_multilabel_train_loss_matches_sklearn():
    import jax.numpy as jnp

    from vjax.objectives import multilabel_losses

    rng = np.random.default_rng(3)
    logits = rng.normal(size=(8, 5)).astype(np.float32)
    labels = (rng.uniform(size=(8, 5)) < 0.4).astype(np.int32)
    loss, metrics = multilabel_losses(jnp.asarray(logits), {"label": jnp.asarray(labels)})
    reference = sk.log_loss(labels.ravel(), sigmoid(logits.astype(np.float64)).ravel())
    assert float(loss) == pytest.approx(reference, rel=1e-5)
    assert float(metrics["top1"]) == pytest.approx(labels[np.arange(8), logits.argmax(1)].mean())
    smoothed, _ = multilabel_losses(jnp.asarray(logits), {"label": jnp.asarray(labels)}, 0.2)
    soft = labels * 0.8 + 0.1  # targets pulled towards 1/2
    x = logits.astype(np.float64)
    assert float(smoothed) == pytest.approx(np.mean(np.logaddexp(0, x) - x * soft), rel=1e-5)


def test_frame_level_map_takes_the_nearest_view():
    # 2 videos x 2 views (centres 1 s and 3 s; video 1's two crops share a time) x 2 classes;
    # 3 frames each at 0, 1.9 and 3.5 s.
    view_scores = np.array([[[0.9, 0.1], [0.2, 0.8]], [[0.3, 0.6], [0.7, 0.2]]])
    view_times = np.array([[1.0, 3.0], [2.0, 2.0]])
    frame_times = np.array([[0.0, 1.9, 3.5], [0.0, 1.9, 3.5]])
    frame_labels = np.array([[[1, 0], [1, 0], [0, 1]], [[0, 1], [1, 0], [0, 0]]])
    m_ap, aps = frame_level_map(view_scores, view_times, frame_times, frame_labels)
    # Frames take: video 0 -> views 0, 0, 1; video 1 -> max of its two views (0.7, 0.6).
    per_frame = np.array([[0.9, 0.1], [0.9, 0.1], [0.2, 0.8], [0.7, 0.6], [0.7, 0.6], [0.7, 0.6]])
    reference = sk.average_precision_score(frame_labels.reshape(-1, 2), per_frame, average=None)
    np.testing.assert_allclose(aps, reference)
    assert m_ap == pytest.approx(reference.mean())


def _finite_ranks(scores):
    """The same ranking with finite stand-ins (scikit-learn refuses +/-inf): each distinct
    score's rank, ties kept."""
    return np.unique(scores, return_inverse=True)[1].reshape(scores.shape).astype(float)


def test_non_finite_logits_are_refused_not_scored_as_confident(capsys):
    rng = np.random.default_rng(4)
    scores = rng.normal(size=(40, 3)).astype(np.float32)
    scores[3] = np.nan  # what a float16 overflow gives: once scored as a sure class 0
    scores[7, 1] = np.inf  # its softmax is NaN
    scores[9] = -np.inf  # no class has any probability
    labels = np.zeros(40, int)
    message = r"^3 of 40 videos have non-finite logits \(NaN, \+inf or all -inf\)"
    with pytest.raises(MetricInputError, match=message) as error:
        classification_metrics(scores, labels)
    assert isinstance(error.value, UserError)  # shown by the commands as one line
    multi_hot = np.eye(3, dtype=int)[labels]
    with pytest.raises(MetricInputError, match=message):
        classification_metrics(scores, multi_hot)  # the mAP path too
    names = {"verb": ["a", "b", "c"], "noun": ["x", "y"]}
    both = np.concatenate([scores, rng.normal(size=(40, 2))], axis=1)
    with pytest.raises(MetricInputError, match="^task 'verb': 3 of 40 videos"):
        task_metrics(both, np.stack([labels, labels], axis=1), names)

    def evaluate(argv):
        return len(classification_metrics(scores, labels))

    assert run_guarded(evaluate, [], "vjax eval") == 2  # the boundary `vjax eval` runs under
    err = capsys.readouterr().err
    assert err.startswith("vjax eval: error: 3 of 40 videos have non-finite logits")
    assert err.count("\n") == 1  # one line, no traceback


def test_a_masked_class_at_minus_inf_is_scored_like_sklearn():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, size=30)
    scores = rng.normal(size=(30, 4)) + 2.0 * np.eye(4)[labels]
    scores[:, 3] = -np.inf  # a masked class: probability 0, never the truth
    m = classification_metrics(scores, labels)
    probs = _softmax(scores)
    assert probs[:, 3].max() == 0.0
    assert m["loss"] == pytest.approx(sk.log_loss(labels, probs, labels=range(4)), rel=1e-5)
    assert m["top1"] == pytest.approx(sk.accuracy_score(labels, scores.argmax(axis=1)))

    multi_hot = (rng.uniform(size=(30, 4)) < 0.4).astype(int)
    multi_hot[:, 3] = 0
    multi = classification_metrics(scores, multi_hot)  # a -inf negative costs 0, not NaN
    reference = sk.log_loss(multi_hot.ravel(), sigmoid(scores).ravel())
    assert multi["loss"] == pytest.approx(reference, rel=1e-5)
    ap = sk.average_precision_score(multi_hot[:, :3], scores[:, :3], average=None)
    assert multi["mAP"] == pytest.approx(ap.mean())


def test_average_precision_with_ties_at_infinity_matches_sklearn():
    scores = np.array([np.inf, np.inf, 1.0, -np.inf, -np.inf, -np.inf], np.float32)
    positives = np.array([0, 1, 1, 1, 0, 0])
    reference = sk.average_precision_score(positives, _finite_ranks(scores))
    assert reference == pytest.approx(5 / 9)  # (1/2 + 2/3 + 1/2) / 3, by hand
    assert average_precision(scores, positives) == pytest.approx(reference)
    # a tie is one threshold, whatever the order of its members
    assert average_precision(scores, positives[[1, 0, 2, 5, 4, 3]]) == pytest.approx(reference)

    rng = np.random.default_rng(6)
    scores = rng.choice([-np.inf, -1.0, 0.0, 2.0, np.inf], size=(50, 3))
    labels = (rng.uniform(size=(50, 3)) < 0.4).astype(int)
    reference = sk.average_precision_score(labels, _finite_ranks(scores), average=None)
    ours = [average_precision(scores[:, k], labels[:, k]) for k in range(3)]
    np.testing.assert_allclose(ours, reference)


def test_pr_curve_has_the_exact_operating_point_at_every_recall_level():
    # 5 positives, the top 3 ranked first: recall 3/5 = 0.6 at precision 1 (by hand); beyond
    # it recall 4/5 at precision 4/11 and 5/5 at 5/12, so 5/12 at recall 0.65.
    positives = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1])
    scores = np.arange(len(positives), 0, -1).astype(np.float32)
    curve = interpolated_precision(scores, positives, CLASS_PR_POINTS)  # recall 0, 0.05, ..
    assert curve[12] == 1.0  # recall 0.60
    assert curve[13] == pytest.approx(5 / 12)  # recall 0.65
    m = classification_metrics(
        np.stack([scores, -scores], 1), np.stack([positives, 1 - positives], 1)
    )
    assert m["pr_curves"]["per_class"][0][12] == 1.0


def test_labels_outside_the_classes_are_refused():
    scores = np.array([[0.0, 0.0, 5.0], [5.0, 0.0, 0.0], [0.0, 5.0, 0.0]], np.float32)
    with pytest.raises(MetricInputError, match=r"^label\(s\) -1, 3 outside the 3 classes 0..2"):
        classification_metrics(scores, np.array([-1, 0, 3]))  # -1: an unlabelled video
    # A column of ids, (N, 1), was taken as multi-hot (an IndexError); fractional ids too.
    with pytest.raises(MetricInputError, match=r"labels of shape \(3, 1\) for scores \(3, 3\)"):
        classification_metrics(scores, np.array([[2], [0], [1]]))
    with pytest.raises(MetricInputError, match="single-label labels are class ids"):
        classification_metrics(scores, np.array([2.0, 0.5, 1.0]))
    assert classification_metrics(scores, np.array([2.0, 0.0, 1.0]))["top1"] == 1.0
    names = {"verb": ["a", "b", "c"], "noun": ["x", "y"]}
    both = np.concatenate([scores, np.zeros((3, 2))], axis=1)
    with pytest.raises(MetricInputError, match="^task 'noun': label\\(s\\) 2 outside the 2"):
        task_metrics(both, np.array([[0, 0], [1, 2], [2, 1]]), names)


def test_confidence_on_a_bin_edge_falls_in_the_lower_bin():
    from vjax.evaluate.metrics import calibration

    edges = np.linspace(0, 1, 16)
    out = calibration(np.array([edges[5], edges[10]]), np.array([1.0, 0.0]))
    assert out["calibration"]["count"][4] == 1 and out["calibration"]["count"][9] == 1


def test_ties_go_to_the_lower_class_and_a_video_without_positives_is_a_multi_label_miss():
    """The two conventions the metrics' docstrings state: tied scores rank the lower class id
    first (an untrained zero head predicts class 0 for every video); multi-label top-1 counts
    a video with no positive class as a miss, not as left out."""
    tied = classification_metrics(np.zeros((3, 4)), np.array([0, 1, 3]))
    assert tied["per_video"]["predicted"] == [0, 0, 0] and tied["top1"] == pytest.approx(1 / 3)
    scores = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = np.array([[0, 0], [0, 1], [1, 0]])  # no positive; the top class; a tie at 0
    assert classification_metrics(scores, labels)["top1"] == pytest.approx(2 / 3)
