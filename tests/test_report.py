"""The printed evaluation table: the confusion matrix only while it fits, and one section per
task for multi-task results."""

from vjax.report import MAX_CONFUSION_CLASSES, format_eval


def _metrics(names):
    k = len(names)
    confusion = [[int(i == j) for j in range(k)] for i in range(k)]
    return {
        "loss": 0.5, "top1": 1.0, "top5": 1.0, "mean_class_accuracy": 1.0,
        "per_class_accuracy": {n: 1.0 for n in names}, "confusion_matrix": confusion,
    }  # fmt: skip


def _result(names):
    return {"split": "test", "step": 3, "num_examples": len(names), "class_names": names,
            **_metrics(names)}  # fmt: skip


def test_confusion_matrix_is_printed_only_up_to_the_limit():
    few = [f"c{i}" for i in range(3)]
    printed = format_eval(_result(few))
    assert "confusion matrix" in printed and "mean class acc 1.0000" in printed
    many = [f"c{i}" for i in range(MAX_CONFUSION_CLASSES + 1)]
    lines = format_eval(_result(many)).splitlines()
    assert not any("confusion matrix" in line for line in lines)
    rows = [line.split() for line in lines if line.split()[:1] and line.split()[0] in many]
    assert rows == [[name, "1.000"] for name in many]  # accuracy only, no matrix columns


def test_multi_task_result_has_one_section_per_task():
    names = {"verb": ["take", "put"], "noun": ["cup", "knife", "door"]}
    result = {"split": "validation", "num_examples": 2, "loss": 1.5, "top1": 0.5,
              "top5": 1.0, "class_names": names,
              "tasks": {t: _metrics(n) for t, n in names.items()}}  # fmt: skip
    printed = format_eval(result)
    assert "every task is right" in printed
    assert printed.index("verb: top1") < printed.index("take") < printed.index("noun: top1")
    assert printed.index("noun: top1") < printed.index("knife")
