"""Contracts of the evaluation code that a mutation audit (session 25) found the suite would let
break silently: each test against an independent reference (SciPy, scikit-learn, NumPy, a hand
computation or the README's words)."""

import logging
import os

import numpy as np
import pytest
from scipy.special import log_softmax as scipy_log_softmax
from scipy.stats import binomtest
from test_uncertainty import _resampled

from vjax.evaluate.metrics import classification_metrics, task_metrics
from vjax.evaluate.report import format_eval, named_result, summary, write_eval
from vjax.evaluate.uncertainty import (
    map_interval,
    resample_counts,
)


def _wilson(k, n):
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return ci.low, ci.high


# ------------------------------------------------------------------------------ metrics.py


def test_loss_of_large_logits_is_scipys_log_softmax():
    """Logits in the hundreds (an over-confident or float16-trained model) give the right
    cross-entropy, not inf/NaN: the softmax is taken stably."""
    scores = np.array([[400.0, 0.0, -400.0], [0.0, 300.0, 299.0], [90.0, 95.0, 100.0]])
    labels = np.array([0, 2, 1])
    m = classification_metrics(scores, labels)
    reference = -scipy_log_softmax(scores, axis=1)[np.arange(3), labels].mean()
    assert np.isfinite(m["loss"])
    assert m["loss"] == pytest.approx(reference, rel=1e-6)


def test_top5_interval_is_wilsons_interval_of_the_top5_hits():
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 9, size=70)
    scores = rng.normal(size=(70, 9)) + 0.8 * np.eye(9)[labels]
    m = classification_metrics(scores, labels)
    top5 = np.argsort(-scores, axis=1)[:, :5]
    hits = int((top5 == labels[:, None]).any(axis=1).sum())
    assert hits != int((scores.argmax(axis=1) == labels).sum())  # a test that can tell them apart
    assert m["top5"] == pytest.approx(hits / 70)
    np.testing.assert_allclose(m["top5_ci95"], _wilson(hits, 70), rtol=1e-12)


def test_joint_top1_interval_counts_every_right_video():
    """15 of 22 videos right on both tasks: 15 / 22 * 22 is 14.999... in floating point, and
    the interval is Wilson's of 15 of 22, not of 14."""
    names = {"verb": ["a", "b"], "noun": ["x", "y"]}
    labels = np.zeros((22, 2), int)
    scores = np.tile([1.0, 0.0, 1.0, 0.0], (22, 1))
    scores[15:, 0] = -1.0  # the last 7 videos get the verb wrong
    m = task_metrics(scores, labels, names)
    assert m["top1"] == pytest.approx(15 / 22)
    np.testing.assert_allclose(m["top1_ci95"], _wilson(15, 22), rtol=1e-12)


def test_a_frame_takes_the_highest_score_over_the_crops_at_its_time():
    """Charades' multi-view test has 3 crops per clip, all centred at the clip's time: a frame
    takes, class by class, the highest of them (PySlowFast's max over views), not the first
    crop's. By hand: video 0's crops score 0.1 and 0.9, video 1's 0.5 and 0.4 (one frame each,
    at the crops' time); video 0 holds the action, so AP = 1 (the first crops' 0.1 < 0.5 would
    give 1/2)."""
    from vjax.evaluate.metrics import frame_level_map, frame_level_scores

    view_scores = np.array([[[0.1], [0.9]], [[0.5], [0.4]]])
    view_times = np.array([[1.0, 1.0], [1.0, 1.0]])
    frame_times = np.array([[1.2], [0.8]])
    np.testing.assert_array_equal(
        frame_level_scores(view_scores, view_times, frame_times), [[0.9], [0.5]]
    )
    m_ap, aps = frame_level_map(view_scores, view_times, frame_times, np.array([[[1]], [[0]]]))
    assert m_ap == 1.0 and aps == [1.0]


# -------------------------------------------------------------------------- uncertainty.py


def test_wilson_interval_stays_inside_zero_and_one():
    """A split with no video right (or every one) has an interval in [0, 1]: unclamped, the
    formula's rounding gives -7e-18 for 0 of 27 (printed '-0.000') and 1 + 2e-16 for 16 of 16."""
    from vjax.evaluate.uncertainty import wilson_interval

    for n in range(1, 2001):
        assert wilson_interval(0, n)[0] >= 0.0 and wilson_interval(n, n)[1] <= 1.0, n
    assert f"{wilson_interval(0, 27)[0]:.3f}" == "0.000"


def test_every_video_is_drawn_as_often_as_any_other_in_the_resamples():
    """Drawing 10 videos with replacement 1,000 times: each is drawn ~1,000 times in all
    (binomial, sd ~ 30), the last one included."""
    counts = resample_counts(10, 1000)
    assert np.all(np.abs(counts.sum(axis=1) - 1000) < 150), counts.sum(axis=1)


def test_map_interval_of_a_tiny_test_set_leaves_out_resamples_without_a_positive():
    """6 videos, each class with one positive (ranked 3rd and 2nd: AP 1/3 and 1/2): about one
    resample in eleven draws neither positive (its mAP is undefined and left out, not 0), many
    draw one of them (that resample's mAP is the AP of its one class). Against scikit-learn on
    the resamples written out."""
    from sklearn.metrics import average_precision_score

    positives = np.zeros((6, 2), bool)
    positives[0, 0] = positives[1, 1] = True
    scores = np.array([[0.5, 0.1], [0.9, 0.6], [0.7, 0.05], [0.3, 0.8], [0.2, 0.3], [0.1, 0.0]])
    counts = resample_counts(6, 200)
    replicates = []
    for r in range(200):
        s, p = _resampled(counts, r, scores, positives)
        aps = [average_precision_score(p[:, k], s[:, k]) for k in range(2) if p[:, k].any()]
        if aps:
            replicates.append(np.mean(aps))
    assert len(replicates) < 200  # some resamples had no positive at all
    estimate = np.mean([average_precision_score(positives[:, k], scores[:, k]) for k in range(2)])
    lo, hi = np.percentile(replicates, [2.5, 97.5])
    want = (max(0.0, 2 * estimate - hi), min(1.0, 2 * estimate - lo))
    assert 0 < want[1] < 1  # not clipped: a resample scored 0 instead of left out would show
    np.testing.assert_allclose(map_interval(scores, positives, resamples=200), want, rtol=1e-10)


# ------------------------------------------------------------------------------ scoring.py


def test_a_video_without_views_is_a_clear_error():
    from vjax.evaluate.scoring import video_scores

    examples = [{"label": 0, "views": [np.zeros((1, 1, 2, 1))]}, {"label": 1, "views": []}]
    with pytest.raises(ValueError, match="video 1 produced no views"):
        video_scores(lambda b: b[:, 0, 0, :, 0], examples, lambda e: iter(e["views"]), 2)


def test_a_gathered_charades_evaluation_keeps_each_videos_targets_with_its_scores():
    """Two processes score videos 0, 2 and 1 (+ a masked pad) of a split with timed actions;
    the gathered result puts every video's targets (labels, times, frame labels) in the split's
    order with its scores: video and frame mAP as scikit-learn's on the videos in order (each
    frame at a view's centre, so it takes that view's scores)."""
    from sklearn.metrics import average_precision_score

    from vjax.evaluate.scoring import evaluate_views

    rng = np.random.default_rng(13)
    logits = rng.integers(0, 200, size=(3, 2, 3))  # (videos, views, classes)
    frame_labels = np.array([[[1, 0, 0], [0, 1, 0]], [[0, 0, 1], [0, 0, 0]],
                             [[1, 1, 0], [0, 0, 1]]])  # fmt: skip
    labels = frame_labels.any(axis=1).astype(int)
    times = np.array([1.0, 3.0])

    def video_views_for(p):
        mine = np.arange(p, 4, 2)

        def video_views(k):
            i = int(mine[k]) if mine[k] < 3 else 0
            target = {"label": labels[i], "view_times": times, "frame_times": times,
                      "frame_labels": frame_labels[i]}  # fmt: skip
            return {"views": logits[i][:, None, None, :, None].astype(np.uint8), "label": target}

        return video_views

    def apply(batch):
        return batch[:, 0, 0, :, 0].astype(np.float32)

    def join(x, y):
        if isinstance(x, dict):
            return {key: np.concatenate([x[key], y[key]]) for key in x}
        return np.concatenate([x, y])

    config = {"test_num_clips": 2, "test_ensemble": "max"}
    parts = {}

    def record(local):
        parts[1] = local
        return local

    evaluate_views(apply, range(3), config, 2, 1, 2, record, ["a", "b", "c"], video_views_for(1))
    gathered = lambda local: tuple(join(x, y) for x, y in zip(local, parts[1], strict=True))  # noqa: E731
    m = evaluate_views(apply, range(3), config, 2, 0, 2, gathered, ["a", "b", "c"],
                       video_views_for(0))  # fmt: skip
    video_ap = average_precision_score(labels, logits.max(axis=1), average=None)
    assert m["mAP"] == pytest.approx(video_ap.mean())
    frame_ap = average_precision_score(frame_labels.reshape(-1, 3), logits.reshape(-1, 3),
                                       average=None)  # fmt: skip
    assert m["frame_mAP"] == pytest.approx(frame_ap[frame_labels.reshape(-1, 3).any(0)].mean())


def test_multi_view_test_pools_by_max_when_the_config_says_so():
    """input.test_ensemble='max' on single-label data: video 0's views score (9, 6, 0) and
    (0, 6, 0), their max (9, 6, 0) picks its class 0 where the mean (4.5, 6, 0) would pick 1;
    video 1's (0, 0, 9) and (6, 6, 0) pick class 2 either way. Top-1 1.0 (0.5 with the mean)."""
    from vjax.evaluate.scoring import evaluate_views

    logits = np.array([[[9, 6, 0], [0, 6, 0]], [[0, 0, 9], [6, 6, 0]]])
    labels = [0, 2]

    def video_views(k):
        return {"views": logits[k][:, None, None, :, None].astype(np.uint8), "label": labels[k]}

    def apply(batch):
        return batch[:, 0, 0, :, 0].astype(np.float32)

    config = {"test_num_clips": 2, "test_ensemble": "max"}
    m = evaluate_views(apply, range(2), config, 3, video_views=video_views)
    assert m["top1"] == 1.0 and m["per_video"]["predicted"] == [0, 2]


def test_evaluation_batches_score_every_processs_rows_in_the_splits_order():
    """Gathered from two processes: process 0 holds examples 0 and 2, process 1 example 1 and a
    masked pad. Every real example is scored once, in the split's order: labels (0, 2, 1),
    right on examples 0 and 2 -> top-1 2/3."""
    from vjax.evaluate.scoring import evaluate_batches

    mine = {"video": np.zeros((2, 1, 1, 1, 3), np.uint8), "label": np.array([0, 1]),
            "mask": np.array([1, 1]), "index": np.array([0, 2])}  # fmt: skip
    other = [np.eye(3)[[0, 0]], np.array([2, 0]), np.array([True, False]), np.array([1, 3])]

    def gather(local):
        return [np.concatenate([x, y]) for x, y in zip(local, other, strict=True)]

    m = evaluate_batches(lambda batch: np.eye(3)[[0, 1]], lambda i: mine, 1, list("abc"), gather)
    assert m["num_videos"] == 3 and m["per_video"]["label"] == [0, 2, 1]
    assert m["top1"] == pytest.approx(2 / 3)


# ------------------------------------------------------------------------------ compare.py


def _write(tmp_path, name, result):
    write_eval({**result, "step": 1}, str(tmp_path / name), plots=False)
    return str(tmp_path / name)


def _named(labels, scores, videos):
    classes = ["a", "b", "c"]
    return named_result(task_metrics(scores, labels, classes), classes, "test", videos)


def test_compare_says_when_only_one_side_scored_videos_alone(tmp_path):
    """B scored 4 of A's 5 videos and nothing else (the dataset prepared again without one):
    README: 'it says how many each side scored alone'."""
    from vjax.evaluate.compare import compare

    names = ["v0", "v1", "v2", "v3", "v4"]
    labels, scores = np.array([0, 1, 2, 0, 1]), np.eye(3)[[0, 1, 2, 1, 1]]
    a = _write(tmp_path, "a", _named(labels, scores, names))
    b = _write(tmp_path, "b", _named(labels[:4], scores[:4], names[:4]))
    text = compare(a, b)[0]
    assert "paired on the 4 videos both scored, by name (1 only in A, 0 only in B)" in text
    assert "top1 video by video (4 videos): B - A +0.0000" in text


def test_compare_of_named_multi_label_results_whose_arrays_are_gone_says_so(tmp_path):
    """Both results name their videos; B's per-video npz was deleted: one line says so (it
    was an IndexError traceback on the 'unavailable' note)."""
    from vjax.evaluate.compare import compare

    rng = np.random.default_rng(12)
    positives = (rng.random((20, 3)) < 0.3).astype(int)
    names = [f"v{i}" for i in range(20)]
    a = _write(tmp_path, "a", _named(positives, rng.normal(size=(20, 3)), names))
    b = _write(tmp_path, "b", _named(positives, rng.normal(size=(20, 3)), names))
    gone = os.path.join(b, "eval_test_step1_per_video.npz")
    os.remove(gone)
    assert f"no paired test: {gone} is gone" in compare(a, b)[0]


# ------------------------------------------------------------------------------- report.py


def test_more_video_names_than_scored_videos_are_left_out(caplog):
    metrics = task_metrics(np.eye(3), np.arange(3), ["a", "b", "c"])
    with caplog.at_level(logging.WARNING):
        result = named_result(metrics, ["a", "b", "c"], "test", ["x", "y", "z", "w"])
    assert "videos" not in result
    assert "test: 4 video names for 3 scored videos" in caplog.text


def test_training_log_summary_lines():
    """README: 'loss | top1 | top5 | macro F1'; multi-label data: 'loss | mAP | top1'."""
    single = {"loss": 0.5, "top1": 0.75, "top5": 1.0, "macro": {"f1": 0.625}}
    assert summary(single) == "loss 0.5000 | top1 0.7500 | top5 1.0000 | macro F1 0.6250"
    multi = {"loss": 0.5, "mAP": 0.25, "top1": 0.75, "macro": {"f1": 0.125}}
    assert summary(multi) == "loss 0.5000 | mAP 0.2500 | top1 0.7500"


def test_an_undefined_interval_is_printed_as_nothing_before_the_json_too():
    """A split without positives: mAP NaN and its interval (nan, nan), printed bare by
    vjax eval from the in-memory result (not '(95% CI nan-nan)')."""
    names = ["a", "b", "c"]
    rng = np.random.default_rng(0)
    result = named_result(task_metrics(rng.normal(size=(6, 3)), np.zeros((6, 3), int), names),
                          names, "val")  # fmt: skip
    assert np.isnan(result["mAP_ci95"][0])
    first = format_eval(result).splitlines()[0]
    assert "mAP nan |" in first and "nan-nan" not in first


def _result(**fields):
    from test_report import _hand_result

    return {**_hand_result(), **fields}


def test_headline_shows_the_frame_map_with_its_interval():
    """Charades' results: 'mAP (Charades' frame mAP too) with theirs' (README)."""
    result = _result(mAP=0.5, mAP_ci95=[0.4, 0.6], frame_mAP=0.25, frame_mAP_ci95=[0.125, 0.375])
    first = format_eval(result).splitlines()[0]
    assert "mAP 0.5000 (95% CI 0.400-0.600) | frame mAP 0.2500 (95% CI 0.125-0.375)" in first


def test_headlines_show_top5_and_the_joint_top5():
    first = format_eval(_result(top5_ci95=[0.8, 0.95])).splitlines()[0]
    assert "top5 0.9000 (95% CI 0.800-0.950)" in first
    names = {"verb": ["take", "put"], "noun": ["cup", "knife", "door"]}
    rng = np.random.default_rng(0)
    labels = np.stack([rng.integers(0, 2, 12), rng.integers(0, 3, 12)], axis=1)
    result = named_result(task_metrics(rng.normal(size=(12, 5)), labels, names), names, "val")
    assert result["top1"] != result["top5"]
    lo, hi = result["top5_ci95"]
    assert f"top5 {result['top5']:.4f} (95% CI {lo:.3f}-{hi:.3f})" in format_eval(result)


def test_most_confused_pairs_are_printed_with_their_share_in_percent():
    """The hand result's pair c0 -> c2: 4 videos, half of c0's."""
    assert "most confused (true -> predicted): c0 -> c2 4 (50%)" in format_eval(_result())
