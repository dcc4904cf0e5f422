"""How far an evaluation can be trusted: top-1/top-5 intervals against SciPy's Wilson interval,
McNemar's exact test against SciPy's binomial test, and `vjax eval` / `vjax compare` showing
them (the comparison pairs the same videos, read back from the written JSON)."""

import json
import os

import numpy as np
import pytest
from scipy.stats import binomtest

from vjax.evaluate.metrics import average_precision, task_metrics
from vjax.evaluate.report import format_eval, named_result, write_eval
from vjax.evaluate.uncertainty import (
    map_interval,
    mcnemar_exact_p,
    mean_class_accuracy_interval,
    paired_map,
    paired_top1,
    resample_counts,
    weighted_average_precisions,
    wilson_interval,
)


@pytest.mark.parametrize("successes,total", [(0, 1), (1, 1), (3, 7), (7, 20), (1504, 2000),
                                             (19990, 20000)])  # fmt: skip
def test_wilson_interval_matches_scipy(successes, total):
    want = binomtest(successes, total).proportion_ci(confidence_level=0.95, method="wilson")
    np.testing.assert_allclose(wilson_interval(successes, total), (want.low, want.high),
                               rtol=1e-12, atol=1e-15)  # fmt: skip


@pytest.mark.parametrize("only_a,only_b", [(0, 0), (0, 1), (9, 12), (12, 9), (5, 5), (0, 30),
                                           (3000, 3300), (10000, 10500)])  # fmt: skip
def test_mcnemar_exact_p_is_scipys_two_sided_binomial_test(only_a, only_b):
    want = binomtest(only_b, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    assert mcnemar_exact_p(only_a, only_b) == pytest.approx(want, rel=1e-9, abs=1e-300)


def test_paired_top1_counts_the_videos_only_one_run_got_right():
    labels = [0, 1, 2, 0, 1, 2, 0]
    a = {"label": labels, "predicted": [0, 1, 2, 1, 1, 0, 2]}  # right on videos 0, 1, 2, 4
    b = {"label": labels, "predicted": [0, 2, 2, 0, 1, 2, 0]}  # right on 0, 2, 3, 4, 5, 6
    paired = paired_top1(a, b)
    assert paired == {"videos": 7, "difference": pytest.approx(2 / 7), "only_a": 1, "only_b": 3,
                      "p_value": pytest.approx(binomtest(3, 4, 0.5).pvalue)}  # fmt: skip
    assert paired_top1(a, {**b, "label": [1, *labels[1:]]}) is None  # other videos
    assert paired_top1(a, {"label": labels[:-1], "predicted": b["predicted"][:-1]}) is None


def _scored(labels, scores, step):
    names = ["a", "b", "c"]
    return {**named_result(task_metrics(scores, labels, names), names, "test"), "step": step}


def test_eval_shows_intervals_and_compare_pairs_the_same_videos(tmp_path, capsys):
    from vjax.cli import main as vjax_main

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=300)
    hint = 1.5 * np.eye(3)[labels]
    result_a = _scored(labels, rng.normal(size=(300, 3)) + hint, 3)
    result_b = _scored(labels, rng.normal(size=(300, 3)) + 2 * hint, 4)
    right = {}
    for name, result in (("a", result_a), ("b", result_b)):
        predicted = np.asarray(result["per_video"]["predicted"])
        assert result["per_video"]["label"] == labels.tolist()
        right[name] = predicted == labels
        assert result["top1"] == right[name].mean()
        want = binomtest(int(right[name].sum()), 300).proportion_ci(method="wilson")
        np.testing.assert_allclose(result["top1_ci95"], (want.low, want.high), rtol=1e-12)
        write_eval(result, str(tmp_path / name), plots=False)
    saved = json.load(open(os.path.join(tmp_path, "a", "eval_test_step3.json")))
    assert saved["per_video"] == result_a["per_video"]  # written for later comparisons
    lo, hi = result_a["top1_ci95"]
    assert f"top1 {result_a['top1']:.4f} (95% CI {lo:.3f}-{hi:.3f})" in format_eval(result_a)

    assert vjax_main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    only_a = int((right["a"] & ~right["b"]).sum())
    only_b = int((right["b"] & ~right["a"]).sum())
    p = binomtest(only_b, only_a + only_b, 0.5).pvalue
    difference = (right["b"].sum() - right["a"].sum()) / 300
    line = (f"top1 video by video (300 videos): B - A {difference:+.4f}; only B right on "
            f"{only_b}, only A on {only_a}; McNemar exact p = {p:.3g}")  # fmt: skip
    assert line in capsys.readouterr().out

    # A result written before per-video predictions cannot be paired, and says so.
    del saved["per_video"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(saved))
    assert vjax_main(["compare", str(old), str(tmp_path / "b")]) == 0
    assert "no paired test: A's result has no per-video predictions" in capsys.readouterr().out


def _resampled(counts, r, *arrays):
    """Resample ``r`` written out: each video repeated as often as it was drawn."""
    rows = np.repeat(np.arange(len(counts)), counts[:, r].astype(int))
    return [a[rows] for a in arrays]


def test_resample_counts_draw_every_resample_of_the_test_set_again():
    counts = resample_counts(50, 300)
    assert counts.shape == (50, 300) and np.all(counts.sum(axis=0) == 50)
    assert np.array_equal(counts, resample_counts(50, 300))  # fixed seed: the same interval
    assert not np.array_equal(counts[:, 0], counts[:, 1])
    assert counts.mean() == 1 and 0.3 < (counts == 0).mean() < 0.45  # (49/50)^50 = 0.364


def test_weighted_average_precision_is_sklearns_with_sample_weights():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(3)
    positives = rng.random(300) < 0.1
    scores = np.round(rng.normal(size=300) + positives, 1)  # many tied scores
    scores[:3] = 9.0  # tied at the top too
    counts = resample_counts(300, 40)
    counts[positives, 7] = 0  # a resample without a positive: undefined
    mine = weighted_average_precisions(scores, positives, counts)
    assert np.isnan(mine[7])
    want = [average_precision_score(positives, scores, sample_weight=counts[:, r])
            for r in range(40) if r != 7]  # fmt: skip
    np.testing.assert_allclose(np.delete(mine, 7), want, rtol=1e-12)
    # A weight of 2 is the video twice (tied copies), as the resample written out scores.
    written = average_precision_score(*_resampled(counts, 0, positives, scores))
    assert mine[0] == pytest.approx(written, rel=1e-12)
    scores[:3] = np.inf  # ties at inf (a masked class's logits elsewhere) as metrics ties them
    once = weighted_average_precisions(scores, positives, np.ones((300, 1), np.float32))
    assert once[0] == pytest.approx(average_precision(scores, positives), rel=1e-12)


def test_map_interval_is_the_basic_bootstrap_interval_of_the_resamples_written_out():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(4)
    positives = rng.random((80, 6)) < 0.08
    positives[:, 5] = False  # a class never positive: left out, as mAP leaves it out
    scores = rng.normal(size=(80, 6)) + positives
    counts = resample_counts(80, 60)
    replicates = []
    for r in range(60):
        s, p = _resampled(counts, r, scores, positives)
        replicates.append(np.mean([average_precision_score(p[:, k], s[:, k])
                                   for k in range(6) if p[:, k].any()]))  # fmt: skip
    estimate = np.mean([average_precision_score(positives[:, k], scores[:, k]) for k in range(5)])
    lo, hi = np.percentile(replicates, [2.5, 97.5])
    np.testing.assert_allclose(map_interval(scores, positives, resamples=60),
                               (2 * estimate - hi, 2 * estimate - lo), rtol=1e-10)  # fmt: skip
    assert all(map(np.isnan, map_interval(scores, np.zeros_like(positives))))


def test_map_replicates_are_the_same_on_one_thread_as_on_eight(monkeypatch):
    """The classes run on one thread per usable core and are summed in class order: the same
    estimate and replicates, bit for bit, from a pool of one worker as from eight."""
    from vjax.evaluate import uncertainty

    rng = np.random.default_rng(5)
    positives = rng.random((300, 40)) < 0.05
    scores = rng.normal(size=(300, 40)).astype(np.float32) + positives
    counts = resample_counts(300, 50)
    pools, real_pool = [], uncertainty.ThreadPoolExecutor

    def pool(workers):
        pools.append(workers)
        return real_pool(workers)

    monkeypatch.setattr(uncertainty, "ThreadPoolExecutor", pool)
    monkeypatch.setattr(uncertainty, "usable_cores", lambda: 1)
    one = uncertainty.map_replicates(scores, positives, counts)
    monkeypatch.setattr(uncertainty, "usable_cores", lambda: 8)
    eight = uncertainty.map_replicates(scores, positives, counts)
    assert pools == [1, 8]
    assert one[0] == eight[0]
    np.testing.assert_array_equal(one[1], eight[1])


def test_mean_class_accuracy_interval_is_sklearns_balanced_accuracy_resampled():
    import warnings

    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(5)
    labels = rng.integers(0, 7, size=90)
    labels[labels == 6] = 5  # class 6 absent: left out, as mean_class_accuracy's nanmean does
    predicted = np.where(rng.random(90) < 0.6, labels, rng.integers(0, 7, size=90))
    counts = resample_counts(90, 60)
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true"
        warnings.simplefilter("ignore")
        replicates = [balanced_accuracy_score(*_resampled(counts, r, labels, predicted))
                      for r in range(60)]  # fmt: skip
        estimate = balanced_accuracy_score(labels, predicted)
    lo, hi = np.percentile(replicates, [2.5, 97.5])
    got = mean_class_accuracy_interval(predicted == labels, labels, 7, resamples=60)
    np.testing.assert_allclose(got, (2 * estimate - hi, 2 * estimate - lo), rtol=1e-10)
    m = task_metrics(np.eye(7)[predicted], labels, list("abcdefg"))
    assert m["mean_class_accuracy"] == pytest.approx(estimate)
    assert m["mean_class_accuracy_ci95"] == mean_class_accuracy_interval(predicted == labels,
                                                                         labels, 7)  # fmt: skip


def test_map_interval_covers_the_true_map_where_a_percentile_interval_lies_above_it():
    """Simulated test sets of 400 videos from one population (8 classes, 5% positives): AP with
    ~20 positives reads high, and the resamples' duplicated positives higher still, so the
    percentile interval covers the population's mAP in ~70% of test sets, the basic one ~95%."""
    from vjax.evaluate.metrics import average_precision, mean_average_precision

    rng = np.random.default_rng(0)
    sample = rng.random(1_000_000) < 0.05
    population = average_precision(rng.normal(size=sample.size) + 1.5 * sample, sample)
    basic = percentile = 0
    for _ in range(100):
        positives = rng.random((400, 8)) < 0.05
        scores = rng.normal(size=(400, 8)) + 1.5 * positives
        estimate = mean_average_precision(scores, positives)[0]
        lo, hi = map_interval(scores, positives, resamples=400)
        basic += lo <= population <= hi
        percentile += 2 * estimate - hi <= population <= 2 * estimate - lo  # reflected back
    assert basic >= 88 and percentile <= 80, (basic, percentile)  # measured: 95 and 68


def test_eval_prints_the_bootstrap_intervals_and_an_undefined_one_as_nothing(tmp_path):
    rng = np.random.default_rng(6)
    positives = rng.random((60, 3)) < 0.3
    scores = rng.normal(size=(60, 3)) + 2 * positives
    result = _scored(positives.astype(int), scores, 1)
    lo, hi = result["mAP_ci95"]
    assert (lo, hi) == map_interval(scores.astype(np.float32), positives)
    assert lo < result["mAP"] < hi
    assert f"mAP {result['mAP']:.4f} (95% CI {lo:.3f}-{hi:.3f})" in format_eval(result)
    hits = int(positives[np.arange(60), scores.argmax(axis=1)].sum())  # top class a positive
    want = binomtest(hits, 60).proportion_ci(method="wilson")
    np.testing.assert_allclose(result["top1_ci95"], (want.low, want.high), rtol=1e-12)
    assert f"top1 {hits / 60:.4f} (95% CI {want.low:.3f}-{want.high:.3f})" in format_eval(result)
    labels = rng.integers(0, 3, size=60)
    single = _scored(labels, rng.normal(size=(60, 3)) + np.eye(3)[labels], 1)
    lo, hi = single["mean_class_accuracy_ci95"]
    assert f"mean class acc {single['mean_class_accuracy']:.4f} (95% CI {lo:.3f}-{hi:.3f})" in (
        format_eval(single)
    )
    # No positive at all: mAP and its interval are undefined, written as null and shown bare.
    write_eval(_scored(np.zeros((60, 3), int), scores, 2), str(tmp_path), plots=False)
    saved = json.load(open(tmp_path / "eval_test_step2.json"))
    assert saved["mAP"] is None and saved["mAP_ci95"] == [None, None]
    assert "mAP nan |" in format_eval(saved)


def test_compare_pairs_a_multitask_models_joint_top1(tmp_path, capsys):
    from vjax.cli import main as vjax_main

    rng = np.random.default_rng(7)
    names = {"verb": ["v0", "v1", "v2"], "noun": ["n0", "n1", "n2", "n3"]}
    labels = np.stack([rng.integers(0, 3, 200), rng.integers(0, 4, 200)], axis=1)
    hint = np.concatenate([np.eye(3)[labels[:, 0]], np.eye(4)[labels[:, 1]]], axis=1)
    right = {}
    for name, strength in (("a", 1.0), ("b", 2.0)):
        scores = rng.normal(size=(200, 7)) + strength * hint
        result = {**named_result(task_metrics(scores, labels, names), names, "test"), "step": 1}
        write_eval(result, str(tmp_path / name), plots=False)
        verb, noun = scores[:, :3].argmax(axis=1), scores[:, 3:].argmax(axis=1)
        right[name] = (verb == labels[:, 0]) & (noun == labels[:, 1])
        assert result["top1"] == pytest.approx(right[name].mean())
    assert vjax_main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    only_a = int((right["a"] & ~right["b"]).sum())
    only_b = int((right["b"] & ~right["a"]).sum())
    p = binomtest(only_b, only_a + only_b, 0.5).pvalue
    out = capsys.readouterr().out
    assert (f"joint (every task right): top1 video by video (200 videos): B - A "
            f"{(only_b - only_a) / 200:+.4f}; only B right on {only_b}, only A on {only_a}; "
            f"McNemar exact p = {p:.3g}") in out  # fmt: skip
    assert "verb: top1 video by video (200 videos)" in out


@pytest.mark.parametrize("b_better", [True, False])
def test_paired_map_is_the_basic_interval_of_the_paired_resamples_written_out(b_better):
    """B - A of mAP and its interval, above 0 for a better B and below 0 for a worse one (the
    interval of a difference lies in [-1, 1])."""
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(8)
    positives = rng.random((90, 5)) < 0.15
    strengths = (0.5, 1.5) if b_better else (1.5, 0.5)
    runs = [rng.normal(size=(90, 5)) + strength * positives for strength in strengths]

    def m_ap(scores, labels):
        return np.mean([average_precision_score(labels[:, k], scores[:, k])
                        for k in range(5) if labels[:, k].any()])  # fmt: skip

    counts = resample_counts(90, 60)
    replicates = []
    for r in range(60):  # the same videos drawn for both runs
        labels, a, b = _resampled(counts, r, positives, *runs)
        replicates.append(m_ap(b, labels) - m_ap(a, labels))
    difference = m_ap(runs[1], positives) - m_ap(runs[0], positives)
    lo, hi = np.percentile(replicates, [2.5, 97.5])
    paired = paired_map(*({"label": positives, "scores": s} for s in runs), resamples=60)
    assert paired["videos"] == 90
    assert paired["difference"] == pytest.approx(difference, rel=1e-6)  # float32 scores
    np.testing.assert_allclose(paired["ci95"], (2 * difference - hi, 2 * difference - lo),
                               rtol=1e-5)  # fmt: skip
    # the stronger run is better (or the weaker worse) beyond the test set's luck
    assert paired["ci95"][0] > 0 if b_better else paired["ci95"][1] < 0
    other = {"label": np.roll(positives, 1, axis=0), "scores": runs[1]}
    assert paired_map({"label": positives, "scores": runs[0]}, other) is None


def test_compare_pairs_multi_label_runs_by_mAP_from_the_scores_written_beside(tmp_path, capsys):
    from vjax.cli import main as vjax_main

    rng = np.random.default_rng(9)
    positives = (rng.random((120, 3)) < 0.2).astype(int)
    scores = {name: rng.normal(size=(120, 3)) + strength * positives
              for name, strength in (("a", 0.3), ("b", 1.0))}  # fmt: skip
    for name in "ab":
        paths = write_eval(_scored(positives, scores[name], 2), str(tmp_path / name), plots=False)
        assert paths[:2] == [str(tmp_path / name / f"eval_test_step2{s}")
                             for s in (".json", "_per_video.npz")]  # fmt: skip
    saved = json.load(open(tmp_path / "a" / "eval_test_step2.json"))
    assert saved["per_video"] == {"file": "eval_test_step2_per_video.npz"}
    with np.load(tmp_path / "a" / "eval_test_step2_per_video.npz") as arrays:
        np.testing.assert_array_equal(arrays["label"], positives > 0)
        np.testing.assert_array_equal(arrays["scores"], scores["a"].astype(np.float32))
    assert vjax_main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    paired = paired_map(*({"label": positives, "scores": scores[n]} for n in "ab"))
    lo, hi = paired["ci95"]
    assert (
        f"mAP video by video (120 videos): B - A {paired['difference']:+.4f} "
        f"(95% CI {lo:+.4f} to {hi:+.4f}, paired bootstrap)"
    ) in capsys.readouterr().out
    os.remove(tmp_path / "b" / "eval_test_step2_per_video.npz")
    assert vjax_main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    gone = tmp_path / "b" / "eval_test_step2_per_video.npz"
    assert f"no paired test: {gone} is gone" in capsys.readouterr().out
    gone.write_bytes(b"PK\x03\x04 cut short")  # a zip's magic, then nothing
    assert vjax_main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert f"no paired test: {gone} cannot be read (" in capsys.readouterr().out


def test_frame_map_interval_draws_whole_videos():
    """Charades' localisation mAP scores 25 frames per video; a resample draws videos, all of a
    video's frames at once (written out: the views, times and frame labels of the videos
    drawn), and its mAP is frame_level_map of that resampled test set."""
    from vjax.evaluate.metrics import frame_level_map, frame_level_scores
    from vjax.evaluate.scoring import localized_metrics

    rng = np.random.default_rng(10)
    videos, views, frames, classes = 40, 3, 6, 4
    frame_labels = rng.random((videos, frames, classes)) < 0.2
    view_times = np.sort(rng.uniform(0, 30, (videos, views)), axis=1)
    frame_times = np.tile(np.linspace(0, 30, frames), (videos, 1))
    view_scores = rng.normal(size=(videos, views, classes)) + frame_labels[:, ::2].astype(float)
    counts = resample_counts(videos, 50)
    replicates = [frame_level_map(*_resampled(counts, r, view_scores, view_times, frame_times,
                                              frame_labels))[0] for r in range(50)]  # fmt: skip
    estimate = frame_level_map(view_scores, view_times, frame_times, frame_labels)[0]
    lo, hi = np.percentile(replicates, [2.5, 97.5])
    scores = frame_level_scores(view_scores, view_times, frame_times)
    owner = np.repeat(np.arange(videos), frames)
    got = map_interval(scores, frame_labels.reshape(-1, classes), 50, owner)
    np.testing.assert_allclose(got, (2 * estimate - hi, 2 * estimate - lo), rtol=1e-10)
    targets = {"label": frame_labels.any(axis=1).astype(int), "view_times": view_times,
               "frame_times": frame_times, "frame_labels": frame_labels.astype(int)}  # fmt: skip
    metrics = localized_metrics(view_scores, targets, list("abcd"), "max")
    assert metrics["frame_mAP"] == estimate
    assert metrics["frame_mAP_ci95"] == map_interval(
        scores, frame_labels.reshape(-1, 4), video=owner
    )
