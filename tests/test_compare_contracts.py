"""``vjax compare``'s contracts by hand (found by mutation testing, audit 19): the newest
evaluation by step number, gains and losses largest first, undefined classes left out, AP for
multi-label runs, runs on other classes refused, the loss row."""

import os

import pytest

from vjax.errors import UserError


# vjax/evaluate/compare.py
def _eval(per_class: dict, key: str = "per_class_f1", **extra) -> dict:
    """A hand-made eval result: only what compare reads."""
    return {"split": "test", "loss": 1.0, "num_examples": 8, "class_names": list(per_class),
            key: per_class, **extra}  # fmt: skip


def _printed_deltas(text: str) -> list[tuple[str, float]]:
    """The (class, delta) lines of format_compare's per-class section, in printed order."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if (
            line.startswith("  ")
            and len(parts) == 2
            and parts[1][0] in "+-"
            and parts[1][1:2].isdigit()
        ):
            out.append((parts[0], float(parts[1])))
    return out


def test_compare_picks_the_newest_step_by_number_not_by_name(tmp_path):
    """eval_test_step10.json is newer than eval_test_step9.json (not by name)."""
    from vjax.evaluate.compare import find_result

    for step in (9, 10, 2):
        (tmp_path / f"eval_test_step{step}.json").write_text("{}")
    assert os.path.basename(find_result(str(tmp_path), "test")) == "eval_test_step10.json"


def test_compare_lists_top_gains_and_losses_largest_first_and_no_unchanged_class():
    """The top gains and losses, largest first, and no unchanged class among them; by hand,
    B - A = a +0.3, b +0.2, c +0.1, d 0, e -0.05, f -0.4, g -0.2."""
    from vjax.evaluate.compare import format_compare

    a = _eval(dict(a=0.1, b=0.2, c=0.3, d=0.5, e=0.5, f=0.6, g=0.7))
    b = _eval(dict(a=0.4, b=0.4, c=0.4, d=0.5, e=0.45, f=0.2, g=0.5))
    text = format_compare(a, b, ["a.json", "b.json"], top=2)
    assert _printed_deltas(text) == [("a", 0.3), ("b", 0.2), ("f", -0.4), ("g", -0.2)]
    assert "7 classes: 3 up, 3 down, 1 unchanged" in text
    only_zero = format_compare(_eval(dict(x=0.5)), _eval(dict(x=0.5)), ["a", "b"])
    assert "(no class gained)" in only_zero and "(no class lost)" in only_zero


def test_compare_leaves_out_a_class_undefined_in_either_run():
    """A class whose F1 is undefined (null in the JSON) in B only is left out of
    the deltas, as one undefined in A is, instead of a TypeError."""
    from vjax.evaluate.compare import class_deltas

    a = _eval(dict(x=0.5, y=0.5, z=None))
    b = _eval(dict(x=0.75, y=None, z=0.5))
    assert class_deltas(a, b) == {"": {"x": 0.25}}


def test_compare_of_multi_label_runs_uses_per_class_ap():
    """Multi-label results hold per-class F1 (at sigmoid > 0.5) and AP; compare
    uses AP, as its docstring says."""
    from vjax.evaluate.compare import class_deltas, format_compare

    a = _eval(dict(x=0.5, y=0.5), "per_class_ap", per_class_f1=dict(x=0.0, y=0.0), mAP=0.5)
    b = _eval(dict(x=0.75, y=0.25), "per_class_ap", per_class_f1=dict(x=0.0, y=0.0), mAP=0.5)
    assert class_deltas(a, b) == {"": {"x": 0.25, "y": -0.25}}
    assert "per-class AP, B - A" in format_compare(a, b, ["a", "b"])


def test_compare_of_runs_on_other_class_names_is_refused():
    """Runs evaluated on different datasets (other class names) are a UserError,
    not a KeyError or a comparison of the classes they happen to share."""
    from vjax.evaluate.compare import class_deltas

    with pytest.raises(UserError, match="different tasks or class names"):
        class_deltas(_eval(dict(x=0.5, y=0.5)), _eval(dict(x=0.5, y=0.5, z=0.1)))


def test_compare_table_has_the_loss_of_both_runs():
    """The table's loss row holds both runs' losses and B - A."""
    from vjax.evaluate.compare import format_compare

    a, b = _eval(dict(x=0.5)), {**_eval(dict(x=0.5)), "loss": 0.75}
    assert f"{'loss':<24}{1.0:>10.4f}{0.75:>10.4f}{-0.25:>+10.4f}" in format_compare(a, b, "ab")


def test_an_out_that_is_not_a_plot_is_refused_before_comparing(tmp_path, capsys):
    """``--out=cmp.json`` ran the comparison, then matplotlib's 'Format json is not
    supported' traceback."""
    from vjax.cli import main

    argv = ["compare", str(tmp_path / "a"), str(tmp_path / "b"), f"--out={tmp_path}/cmp.json"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "cmp.json' is the plot: end it with one of ('.png'" in err
