"""How far an evaluation can be trusted: top-1/top-5 intervals against SciPy's Wilson interval,
McNemar's exact test against SciPy's binomial test, and `vjax eval` / `vjax compare` showing
them (the comparison pairs the same videos, read back from the written JSON)."""

import json
import os

import numpy as np
import pytest
from scipy.stats import binomtest

from vjax.evaluate.metrics import task_metrics
from vjax.evaluate.report import format_eval, named_result, write_eval
from vjax.evaluate.uncertainty import mcnemar_exact_p, paired_top1, wilson_interval


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
