"""Per-video results name their videos (a prepared dataset's ``videos.json``), and ``vjax
compare`` pairs two results by those names: the same video, whatever its row."""

import csv
import json
import logging
import os

import numpy as np
import pytest
from scipy.special import expit, softmax
from scipy.stats import binomtest

from vjax.data.manifests import VideoEntry
from vjax.data.video_builder import video_name
from vjax.evaluate.compare import compare
from vjax.evaluate.metrics import task_metrics
from vjax.evaluate.report import named_result, write_eval, write_video_table
from vjax.evaluate.uncertainty import paired_map


def test_a_video_is_named_by_its_id_else_its_file_under_the_source(tmp_path):
    root = str(tmp_path)
    assert video_name(VideoEntry(f"{root}/a/x.mp4", "a", id="yt_000010"), root) == "yt_000010"
    assert video_name(VideoEntry(f"{root}/a/x.mp4", "a"), root) == "a/x.mp4"
    manifest = f"{root}/lists/train.csv"  # a manifest's paths are named from its folder
    assert video_name(VideoEntry(f"{root}/lists/v/x.mp4", "a"), manifest) == "v/x.mp4"
    assert video_name(VideoEntry("/elsewhere/x.mp4", "a"), root) == "/elsewhere/x.mp4"
    assert video_name(VideoEntry(f"{root}-2/x.mp4", "a"), root) == f"{root}-2/x.mp4"  # not under
    segment = VideoEntry(f"{root}/x.mp4", "a", start=2.5, end=7.0)
    assert video_name(segment, root) == "x.mp4@2.5-7"
    assert video_name(VideoEntry(f"{root}/x.mp4", "a", start=3.0), root) == "x.mp4@3-end"


def test_names_that_are_not_one_per_scored_video_are_left_out(caplog):
    metrics = task_metrics(np.eye(3), np.arange(3), ["a", "b", "c"])
    assert named_result(metrics, ["a", "b", "c"], "test", ["x", "y", "z"])["videos"] == [
        "x", "y", "z"]  # fmt: skip
    with caplog.at_level(logging.WARNING):
        result = named_result(metrics, ["a", "b", "c"], "test", ["x", "y"])
    assert "videos" not in result
    assert "test: 2 video names for 3 scored videos" in caplog.text


def _write(tmp_path, name: str, result: dict) -> str:
    write_eval({**result, "step": 1}, str(tmp_path / name), plots=False)
    return str(tmp_path / name)


def _top1_result(names: list[str], labels: np.ndarray, scores: np.ndarray) -> dict:
    classes = ["a", "b", "c"]
    return named_result(task_metrics(scores, labels, classes), classes, "test", names)


def _mcnemar_line(right_a: dict, right_b: dict) -> str:
    """The paired line computed from ``{video name: right}`` of both runs."""
    common = [n for n in right_a if n in right_b]
    only_a = sum(right_a[n] and not right_b[n] for n in common)
    only_b = sum(right_b[n] and not right_a[n] for n in common)
    p = binomtest(only_b, only_a + only_b, 0.5).pvalue
    return (f"top1 video by video ({len(common)} videos): B - A "
            f"{(only_b - only_a) / len(common):+.4f}; only B right on {only_b}, only A on "
            f"{only_a}; McNemar exact p = {p:.3g}")  # fmt: skip


def test_compare_pairs_the_videos_by_name(tmp_path):
    rng = np.random.default_rng(0)
    names = [f"v{i:03d}.mp4" for i in range(200)]
    labels = rng.integers(0, 3, 200)
    hint = np.eye(3)[labels]
    scores_a, scores_b = rng.normal(size=(200, 3)) + hint, rng.normal(size=(200, 3)) + 2 * hint
    right_a = dict(zip(names, scores_a.argmax(1) == labels, strict=True))
    right_b = dict(zip(names, scores_b.argmax(1) == labels, strict=True))
    a = _write(tmp_path, "a", _top1_result(names, labels, scores_a))

    # B scored the same videos in another order: paired as if in A's order, nothing said.
    order = rng.permutation(200)
    b = _write(tmp_path, "b", _top1_result([names[i] for i in order], labels[order],
                                           scores_b[order]))  # fmt: skip
    text, _ = compare(a, b, top=3)
    assert _mcnemar_line(right_a, right_b) in text and "by name" not in text
    # The videos only one run got right, named in the split's order: the first 3, then a count.
    only_a = [n for n in names if right_a[n] and not right_b[n]]
    only_b = [n for n in names if right_b[n] and not right_a[n]]
    assert len(only_a) > 3 and len(only_b) > 3
    assert f"  only A right: {', '.join(only_a[:3])} and {len(only_a) - 3} more\n" in text
    assert f"  only B right: {', '.join(only_b[:3])} and {len(only_b) - 3} more\n" in text
    every = compare(a, b, top=200)[0]
    assert f"  only A right: {', '.join(only_a)}\n" in every
    # ... which pairing by row would have got wrong.
    unnamed = {k: v for k, v in json.load(open(f"{b}/eval_test_step1.json")).items()
               if k != "videos"}  # fmt: skip
    with open(tmp_path / "unnamed.json", "w") as f:
        json.dump(unnamed, f)
    assert "no paired test: A and B scored different videos" in compare(
        a, str(tmp_path / "unnamed.json"))[0]  # fmt: skip

    # B lost 10 of A's videos and scored 5 others: paired on the 190 both scored.
    kept = order[10:]
    extra = [f"new{i}.mp4" for i in range(5)]
    b_names = [names[i] for i in kept] + extra
    b_labels = np.concatenate([labels[kept], [0] * 5])
    b_scores = np.concatenate([scores_b[kept], np.tile([[9.0, 0, 0]], (5, 1))])
    b2 = _write(tmp_path, "b2", _top1_result(b_names, b_labels, b_scores))
    text, _ = compare(a, b2)
    assert "paired on the 190 videos both scored, by name (10 only in A, 5 only in B)" in text
    right_b2 = {n: right_b[n] for n in b_names if n in right_b}
    assert _mcnemar_line(right_a, right_b2) in text

    disjoint = _write(tmp_path, "c", _top1_result(extra, np.zeros(5, int), b_scores[-5:]))
    assert "no paired test: A and B share no video" in compare(a, disjoint)[0]


def test_repeated_names_pair_by_position(tmp_path):
    labels, scores = np.array([0, 1, 2, 0]), np.eye(3)[[0, 1, 2, 1]]
    twice = ["x.mp4", "x.mp4", "y.mp4", "z.mp4"]
    a = _write(tmp_path, "a", _top1_result(twice, labels, scores))
    b = _write(tmp_path, "b", _top1_result(twice[::-1], labels, scores))  # names ignored
    assert "top1 video by video (4 videos): B - A +0.0000" in compare(a, b)[0]


def _joint_right(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """A verb (2 classes) + noun (3) model's videos with both tasks right."""
    return (scores[:, :2].argmax(1) == labels[:, 0]) & (scores[:, 2:].argmax(1) == labels[:, 1])


def test_compare_pairs_a_multitask_and_a_multi_label_result_by_name(tmp_path):
    rng = np.random.default_rng(1)
    order = rng.permutation(60)
    names = [f"clip{i}" for i in range(60)]
    tasks = {"verb": ["v0", "v1"], "noun": ["n0", "n1", "n2"]}
    labels = np.stack([rng.integers(0, 2, 60), rng.integers(0, 3, 60)], axis=1)
    scores = [rng.normal(size=(60, 5)) for _ in "ab"]

    def multitask(rows, s):
        metrics = task_metrics(s[rows], labels[rows], tasks)
        return named_result(metrics, tasks, "test", [names[i] for i in rows])

    same = np.arange(60)
    text_in_order, _ = compare(_write(tmp_path, "a", multitask(same, scores[0])),
                               _write(tmp_path, "b", multitask(same, scores[1])))  # fmt: skip
    text_shuffled, _ = compare(str(tmp_path / "a"),
                               _write(tmp_path, "b2", multitask(order, scores[1])))  # fmt: skip
    paired = [line for line in text_in_order.splitlines() if "video by video" in line
              or " right: " in line]  # fmt: skip
    assert len(paired) > 3 and all(line in text_shuffled for line in paired)
    joint_a = [n for n, v in zip(names, _joint_right(scores[0], labels), strict=True)
               if v and not _joint_right(scores[1], labels)[names.index(n)]]  # fmt: skip
    assert f"  only A right: {', '.join(joint_a[:10])}" in text_in_order.split("joint")[1]

    positives = rng.random((60, 4)) < 0.3
    class_names = ["c0", "c1", "c2", "c3"]

    def multilabel(rows, s):
        metrics = task_metrics(s[rows, :4], positives[rows].astype(int), class_names)
        return named_result(metrics, class_names, "test", [names[i] for i in rows])

    a = _write(tmp_path, "ma", multilabel(same, scores[0]))
    b = _write(tmp_path, "mb", multilabel(order, scores[1]))  # scores in the npz, reordered
    assert os.path.exists(f"{b}/eval_test_step1_per_video.npz")
    want = paired_map(*({"label": positives, "scores": s[:, :4]} for s in scores))
    lo, hi = want["ci95"]
    assert (f"mAP video by video (60 videos): B - A {want['difference']:+.4f} "
            f"(95% CI {lo:+.4f} to {hi:+.4f}, paired bootstrap)") in compare(a, b)[0]  # fmt: skip


@pytest.mark.parametrize("missing", ["a", "b"])
def test_one_unnamed_result_pairs_by_position(tmp_path, missing):
    labels, scores = np.array([0, 1, 2]), np.eye(3)
    results = {side: _top1_result(["x", "y", "z"], labels, scores) for side in "ab"}
    del results[missing]["videos"]  # evaluated before vjax named videos
    a, b = (_write(tmp_path, side, results[side]) for side in "ab")
    text = compare(a, b)[0]
    assert "top1 video by video (3 videos): B - A +0.0000" in text and " right: " not in text


def test_the_table_of_videos_has_each_videos_classes_and_whether_it_was_right(tmp_path):
    rng = np.random.default_rng(3)
    labels, scores = rng.integers(0, 3, 40), rng.normal(size=(40, 3)).astype(np.float32)  # logits
    names = [f"clips/{i}.mp4" for i in rng.permutation(40)]
    paths = write_eval({**_top1_result(names, labels, scores), "step": 2}, str(tmp_path), False)
    assert str(tmp_path / "eval_test_step2_videos.csv") in paths
    rows = list(csv.reader(open(tmp_path / "eval_test_step2_videos.csv")))
    classes, predicted = ["a", "b", "c"], scores.argmax(1)
    confidence = softmax(scores, axis=1).max(axis=1)  # SciPy's
    assert rows[0] == ["video", "label", "predicted", "confidence", "right"]
    assert [r[:3] + r[4:] for r in rows[1:]] == [
        [n, classes[t], classes[p], str(int(t == p))]
        for n, t, p in zip(names, labels, predicted, strict=True)
    ]
    np.testing.assert_allclose([float(r[3]) for r in rows[1:]], confidence, atol=1e-6)
    assert max(len(r[3]) for r in rows[1:]) <= 8  # 6 digits, not a float32's long repr

    # A multi-task model: each task's classes, right when both are; unnamed: split positions.
    tasks = {"verb": ["v0", "v1"], "noun": ["n0", "n1", "n2"]}
    both = np.stack([rng.integers(0, 2, 30), rng.integers(0, 3, 30)], axis=1)
    task_scores = rng.normal(size=(30, 5))
    result = named_result(task_metrics(task_scores, both, tasks), tasks, "test")
    assert write_video_table(result, str(tmp_path / "multi.csv"))
    rows = list(csv.reader(open(tmp_path / "multi.csv")))
    assert rows[0] == ["video", "verb_label", "verb_predicted", "verb_confidence", "noun_label",
                       "noun_predicted", "noun_confidence", "right"]  # fmt: skip
    right = _joint_right(task_scores, both)
    verb, noun = task_scores[:, :2].argmax(1), task_scores[:, 2:].argmax(1)
    assert [r[:3] + r[4:6] + r[7:] for r in rows[1:]] == [
        [str(i), f"v{both[i, 0]}", f"v{verb[i]}", f"n{both[i, 1]}", f"n{noun[i]}",
         str(int(right[i]))] for i in range(30)]  # fmt: skip
    for column, block in ((3, task_scores[:, :2]), (6, task_scores[:, 2:])):
        np.testing.assert_allclose([float(r[column]) for r in rows[1:]],
                                   softmax(block, axis=1).max(axis=1), atol=1e-6)  # fmt: skip

    # Multi-label: every true class, every class past sigmoid 0.5, the top class and its
    # sigmoid (SciPy's expit), right when the top class is a true one (the result's top1).
    positives = (rng.random((20, 3)) < 0.4).astype(int)
    logits = rng.normal(size=(20, 3))
    multi_label = named_result(task_metrics(logits, positives, classes), classes, "test")
    assert write_video_table(multi_label, str(tmp_path / "multi_label.csv"))
    rows = list(csv.reader(open(tmp_path / "multi_label.csv")))
    assert rows[0] == ["video", "labels", "predicted", "top", "top_probability", "right"]
    expected = []
    for i in range(20):
        top = int(np.argmax(logits[i]))
        true = [c for c, p in zip(classes, positives[i], strict=True) if p]
        past_half = [c for c, p in zip(classes, expit(logits[i]), strict=True) if p > 0.5]
        expected.append([str(i), "; ".join(true), "; ".join(past_half), classes[top],
                         str(int(positives[i, top]))])  # fmt: skip
    assert [r[:4] + r[5:] for r in rows[1:]] == expected
    np.testing.assert_allclose([float(r[4]) for r in rows[1:]], expit(logits.max(1)), atol=1e-6)
    assert np.mean([int(r[5]) for r in rows[1:]]) == pytest.approx(multi_label["top1"])

    # A loss-only result (pre-training) has no predictions: no table.
    assert not write_video_table({"split": "test", "loss": 0.5}, str(tmp_path / "none.csv"))
    assert not os.path.exists(tmp_path / "none.csv")


def test_a_result_naming_other_than_its_scored_videos_is_refused(tmp_path, capsys):
    from vjax.cli import main as vjax_main

    labels, scores = np.array([0, 1, 2]), np.eye(3)
    a = _write(tmp_path, "a", _top1_result(["x", "y", "z"], labels, scores))
    edited = json.load(open(f"{a}/eval_test_step1.json"))
    edited["videos"] = ["x", "y"]  # cut by hand
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    assert vjax_main(["compare", a, str(tmp_path / "edited.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"vjax compare: error: {tmp_path / 'edited.json'} names 2 videos but scored 3; "
                   f"evaluate it again with vjax eval"]  # fmt: skip
