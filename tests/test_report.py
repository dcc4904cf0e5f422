"""What an evaluation writes for people: the printed table (the confusion matrix only while it
fits, one section per task), eval_<split>_step<N>.json, TensorBoard scalars and the PNGs,
including the top-confusions view of a wide matrix; `vjax compare` of two runs; strict JSON
and kept scalars when a metric is NaN or inf."""

import glob
import json
import os

import numpy as np
import pytest

from vjax.evaluate.metrics import task_metrics
from vjax.evaluate.plots import confused_classes
from vjax.evaluate.report import (
    MAX_CONFUSION_CLASSES,
    format_eval,
    named_result,
    scalars,
    write_eval,
)
from vjax.metric_writers import read_metrics

PNG = b"\x89PNG\r\n\x1a\n"


def _result(num_classes, seed=0, multi_label=False, step=3):
    rng = np.random.default_rng(seed)
    names = [f"class{i}" for i in range(num_classes)]
    labels = rng.integers(0, num_classes, size=4 * num_classes)
    scores = rng.normal(size=(len(labels), num_classes)) + 2.0 * np.eye(num_classes)[labels]
    if multi_label:
        labels = (rng.uniform(size=scores.shape) < 0.3).astype(np.int32)
        scores = rng.normal(size=scores.shape) + 2.0 * labels
    return {**named_result(task_metrics(scores, labels, names), names, "test"), "step": step}


def test_table_has_prf_and_the_confusion_matrix_only_up_to_the_limit():
    printed = format_eval(_result(3))
    assert "confusion matrix" in printed and "mean class acc" in printed
    assert "macro avg" in printed and "weighted avg" in printed and "ECE" in printed
    assert "precision" in printed.splitlines()[2] and "most confused" in printed
    many = _result(MAX_CONFUSION_CLASSES + 1)
    lines = format_eval(many).splitlines()
    assert not any("confusion matrix" in line for line in lines)
    rows = {line.split()[0]: line.split()[1:] for line in lines[3 : 3 + 31]}
    assert rows["class7"] == [
        f"{many[f'per_class_{k}']['class7']:.3f}" for k in ("precision", "recall", "f1")
    ] + [str(many["per_class_support"]["class7"])]


def test_multi_task_and_multi_label_tables():
    names = {"verb": ["take", "put"], "noun": ["cup", "knife", "door"]}
    rng = np.random.default_rng(0)
    labels = np.stack([rng.integers(0, 2, 12), rng.integers(0, 3, 12)], axis=1)
    result = named_result(task_metrics(rng.normal(size=(12, 5)), labels, names), names, "val")
    printed = format_eval(result)
    assert "every task is right" in printed
    assert printed.index("verb: loss") < printed.index("take") < printed.index("noun: loss")
    assert printed.index("noun: loss") < printed.index("knife")
    multi = format_eval(_result(4, multi_label=True))
    assert "mAP" in multi.splitlines()[0] and "sigmoid > 0.5" in multi


def test_write_eval_and_compare(tmp_path, capsys):
    from vjax.cli import main as vjax_main

    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    paths = write_eval(_result(120, seed=0), a)  # wide: the top-confusions view
    write_eval(_result(120, seed=1, step=5), b, plots=False)
    write_eval(_result(120, seed=2, step=9), b, plots=False)  # the newest is compared
    names = sorted(os.path.basename(p) for p in paths)
    assert names == [
        "confusion_test.png",
        "eval_test_step3.json",
        "eval_test_step3_videos.csv",
        "f1_test.png",
        "reliability_test.png",
    ]
    for path in (p for p in paths if p.endswith(".png")):
        with open(path, "rb") as f:
            assert f.read(8) == PNG
    saved = json.load(open(os.path.join(a, "eval_test_step3.json")))
    assert saved["per_class_f1"]["class5"] == _result(120)["per_class_f1"]["class5"]
    assert glob.glob(os.path.join(a, "tensorboard", "eval_test", "events.out.*"))
    record = json.loads(open(os.path.join(a, "metrics.jsonl")).readline())
    assert record["split"] == "eval_test" and record["macro_f1"] == saved["macro"]["f1"]

    assert vjax_main(["compare", a, b, "--top=3"]) == 0
    out = capsys.readouterr().out
    newer = _result(120, seed=2)
    deltas = {
        n: newer["per_class_f1"][n] - saved["per_class_f1"][n]
        for n in saved["per_class_f1"]
        if saved["per_class_f1"][n] is not None and newer["per_class_f1"][n] is not None
    }
    best = max(deltas, key=deltas.get)
    assert f"  {best:<8} {deltas[best]:+.3f}" in out and "eval_test_step9.json" in out
    top1 = f"{'top1':<24}{saved['top1']:>10.4f}{newer['top1']:>10.4f}"
    assert top1 in out
    assert "no paired test: A and B scored different videos" in out  # other seeds, other labels
    with open(os.path.join(b, "compare_test.png"), "rb") as f:
        assert f.read(8) == PNG
    assert vjax_main(["compare", a, str(tmp_path / "missing")]) == 2  # one line, no traceback
    assert capsys.readouterr().err.startswith(
        f"vjax compare: error: '{tmp_path / 'missing'}' does not exist; give a workdir"
    )
    os.mkdir(tmp_path / "empty")  # a folder without results: run vjax eval first
    assert vjax_main(["compare", a, str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err.startswith("vjax compare: error: no eval_test_step*.json")


def test_multi_label_plots_and_confused_classes(tmp_path):
    from vjax.evaluate.plots import write_plots

    paths = write_plots(_result(5, multi_label=True), str(tmp_path), "_x")
    assert sorted(os.path.basename(p) for p in paths) == [
        "ap_x.png",
        "pr_x.png",
        "reliability_x.png",
    ]
    matrix = np.diag([5, 5, 5, 5, 5])
    matrix[0, 3], matrix[4, 1], matrix[2, 1] = 4, 3, 1
    assert confused_classes(matrix, limit=4) == [0, 1, 3, 4]  # the two largest pairs' classes


def _refuse(name):
    raise ValueError(f"not strict JSON: {name}")


def _strict_json(path):
    """The file's JSON, refusing the NaN/Infinity tokens that strict JSON does not have."""
    with open(path) as f:
        return json.loads(f.read(), parse_constant=_refuse)


def test_an_undefined_or_infinite_metric_is_null_in_the_json_and_kept_in_the_scalars(tmp_path):
    names = ["a", "b", "c"]
    rng = np.random.default_rng(0)
    no_positive = np.zeros((6, 3), int)  # a split without positives: the mAP is undefined
    multi = named_result(task_metrics(rng.normal(size=(6, 3)), no_positive, names), names, "val")
    scores = rng.normal(size=(6, 3))
    scores[0, 1] = -np.inf  # the true class of video 0 masked: an infinite loss
    single = named_result(task_metrics(scores, np.array([1, 0, 2, 1, 0, 2]), names), names, "test")
    assert np.isnan(multi["mAP"]) and single["loss"] == np.inf

    saved_multi = _strict_json(write_eval(multi, str(tmp_path), plots=False)[0])
    saved_single = _strict_json(write_eval(single, str(tmp_path), plots=False)[0])
    assert saved_multi["mAP"] is None and set(saved_multi["per_class_ap"].values()) == {None}
    assert saved_single["loss"] is None and saved_single["top1"] == single["top1"]
    for result, saved, key in ((multi, saved_multi, "mAP"), (single, saved_single, "loss")):
        assert not np.isfinite(scalars(result)[key])  # TensorBoard shows it, not just the rest
        assert np.isnan(scalars(saved)[key])  # and `vjax compare` reading the JSON too
    logged = open(os.path.join(tmp_path, "metrics.jsonl")).read().splitlines()
    for line in logged:
        json.loads(line, parse_constant=_refuse)  # strict JSON: the NaN/inf logged as null
    records = {r["split"]: r for r in read_metrics(str(tmp_path))}
    assert np.isnan(records["eval_val"]["mAP"]) and np.isnan(records["eval_test"]["loss"])
    assert records["eval_test"]["top1"] == pytest.approx(single["top1"])


def test_compare_names_what_each_side_was_scored_on_and_one_plot_per_task(tmp_path):
    """A and B scored on other clips (another split, another test set) get a note; a
    multi-task comparison writes one plot per task in the format ``--out`` names (only the
    last task's was kept, and 'wrote' named files that did not exist)."""
    from vjax.evaluate.compare import format_compare, plot_compare

    a, b = _result(4, seed=0), _result(4, seed=1)
    lines = format_compare(a, b, ["a.json", "b.json"]).splitlines()
    assert lines[:2] == ["A = a.json (test, 16 clips)", "B = b.json (test, 16 clips)"]
    assert not any(line.startswith("note:") for line in lines)
    other = {**b, "num_examples": 20}
    assert "note: A and B were scored on different clips" in format_compare(a, other, "ab")

    names = {"verb": ["take", "put"], "noun": ["cup", "knife", "door"]}
    rng = np.random.default_rng(0)
    labels = np.stack([rng.integers(0, 2, 12), rng.integers(0, 3, 12)], axis=1)
    runs = [named_result(task_metrics(rng.normal(size=(12, 5)), labels, names), names, "test")
            for _ in range(2)]  # fmt: skip
    for out, written in (("cmp.pdf", ["cmp_verb.pdf", "cmp_noun.pdf"]),
                         ("cmp", ["cmp_verb.png", "cmp_noun.png"])):  # fmt: skip
        paths = plot_compare(*runs, str(tmp_path / out))
        assert sorted(os.path.basename(p) for p in paths) == sorted(written)
        assert all(os.path.isfile(p) for p in paths)


def test_training_curves_of_a_resumed_run_keep_the_last_record_of_each_step():
    from vjax.evaluate.plots import _latest_per_step

    records = [{"split": "train", "step": s, "loss": v}
               for s, v in ((60, 1.0), (70, 0.9), (60, 0.5), (70, 0.4), (80, 0.3))]  # fmt: skip
    records.append({"split": "validation", "step": 75, "top1": 0.5})
    latest = _latest_per_step(records, "train")
    assert [(r["step"], r["loss"]) for r in latest] == [(60, 0.5), (70, 0.4), (80, 0.3)]


# (vjax/evaluate/report.py)


def _hand_result(num_classes=3):
    """A named result whose every number is distinct, so a swapped field shows."""
    from vjax.evaluate.report import named_result

    names = [f"c{i}" for i in range(num_classes)]
    n = num_classes
    metrics = {
        "num_videos": 10, "loss": 1.25, "top1": 0.5, "top5": 0.9, "mean_class_accuracy": 0.45,
        "ece": 0.07, "macro": {"precision": 0.41, "recall": 0.42, "f1": 0.43},
        "weighted": {"precision": 0.51, "recall": 0.52, "f1": 0.53},
        "per_class_precision": [0.1 + i / 100 for i in range(n)],
        "per_class_recall": [0.6 + i / 100 for i in range(n)],
        "per_class_f1": [0.3 + i / 100 for i in range(n)],
        "per_class_support": [i + 1 for i in range(n)],
        "confusion_matrix": [[i * n + j for j in range(n)] for i in range(n)],
        "most_confused": [{"true": 0, "predicted": 2, "count": 4, "fraction": 0.5}],
    }  # fmt: skip
    return {**named_result(metrics, names, "test"), "step": 1}


# kills rp02
def test_most_confused_pairs_keep_true_and_predicted_names():
    """A confused pair (true 0, predicted 2) is named (c0 -> c2), not the other way round."""
    pair = _hand_result()["most_confused"][0]
    assert (pair["true"], pair["predicted"]) == ("c0", "c2")


# kills rp03
def test_frame_ap_per_class_is_keyed_by_class_name():
    """Charades' per-class frame AP is named like the other per-class lists."""
    from vjax.evaluate.report import named_result

    result = named_result({"num_videos": 2, "per_class_frame_ap": [0.5, 0.25]}, ["a", "b"], "x")
    assert result["per_class_frame_ap"] == {"a": 0.5, "b": 0.25}


# kills rp05, rp06
def test_scalars_hold_macro_and_weighted_averages_and_the_joint_numbers():
    """TensorBoard gets macro and weighted P/R/F1; a multi-task result also its joint numbers."""
    from vjax.evaluate.report import scalars

    got = scalars(_hand_result())
    assert got["weighted_f1"] == 0.53 and got["macro_recall"] == 0.42
    task = {k: v for k, v in _hand_result().items() if k not in ("class_names", "split")}
    multi = {"split": "test", "loss": 2.5, "top1": 0.25, "top5": 0.75, "num_examples": 10,
             "tasks": {"verb": task}, "class_names": {"verb": ["c0", "c1", "c2"]}}  # fmt: skip
    got = scalars(multi)
    assert (got["loss"], got["top1"], got["top5"]) == (2.5, 0.25, 0.75)
    assert got["verb/weighted_precision"] == 0.51


# kills rp07, rp09, rp12
def test_printed_table_puts_each_number_in_its_column():
    """The headline's weighted F1, each class row's precision/recall/F1 and its confusion row."""
    from vjax.evaluate.report import format_eval

    lines = format_eval(_hand_result()).splitlines()
    assert "weighted F1 0.530" in lines[0] and "macro P/R/F1 0.410/0.420/0.430" in lines[0]
    (row,) = [line.split() for line in lines if line.startswith("c1 ")]
    # class c1: precision, recall, f1, support, then its confusion row (truth c1)
    assert row == ["c1", "0.110", "0.610", "0.310", "2", "3", "4", "5"]


# kills rp08
def test_confusion_matrix_is_printed_up_to_and_including_the_limit():
    """MAX_CONFUSION_CLASSES classes still print their confusion matrix."""
    from vjax.evaluate.report import MAX_CONFUSION_CLASSES, format_eval

    assert "confusion matrix" in format_eval(_hand_result(MAX_CONFUSION_CLASSES))


# kills rp11
def test_training_log_summary_of_multi_label_data_has_the_map():
    """The training log line of multi-label data reads loss | mAP | top1."""
    from vjax.evaluate.report import summary

    assert summary({"loss": 0.5, "mAP": 0.25, "top1": 0.75}) == (
        "loss 0.5000 | mAP 0.2500 | top1 0.7500"
    )
