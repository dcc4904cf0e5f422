"""Label tasks: one classifier (the task ``"label"``) or several named ones, e.g. Epic-Kitchens'
``verb`` and ``noun``, each with its own head on a shared backbone.

A run's ``class_names`` are a list for one task and ``{task: names}`` for several; that is what a
checkpoint's metadata stores. Multi-task values travel in one array wherever a single-task run
has one: labels as ``int (B, tasks)`` columns, logits and soft targets concatenated over the
tasks' classes ``(B, sum K)``, split again with :func:`split_classes`.

>>> head_sizes(["walk", "run"])                               # 2
>>> head_sizes({"verb": ["take", "put"], "noun": ["cup"]})    # {"verb": 2, "noun": 1}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

SINGLE_TASK = "label"

ClassNames = Sequence[str] | Mapping[str, Sequence[str]]


def is_multitask(class_names: ClassNames) -> bool:
    """True for ``{task: names}`` (a dict, or a ConfigDict read back from a config)."""
    return isinstance(class_names, Mapping) or callable(getattr(class_names, "items", None))


def task_class_names(class_names: ClassNames) -> dict[str, list[str]]:
    """``{task: class names}`` in task order; one task is named ``"label"``."""
    if is_multitask(class_names):
        if not class_names:
            raise ValueError("a multi-task dataset needs at least one task")
        return {task: list(names) for task, names in class_names.items()}
    return {SINGLE_TASK: list(class_names)}


def head_sizes(class_names: ClassNames) -> int | dict[str, int]:
    """What a model's ``num_classes`` is: an int for one task, ``{task: K}`` for several."""
    if is_multitask(class_names):
        return {task: len(names) for task, names in class_names.items()}
    return len(class_names)


def split_classes(values: Any, sizes: Mapping[str, int]) -> dict[str, Any]:
    """``{task: values[..., its classes]}`` of an array concatenated over the tasks' classes
    (NumPy or JAX)."""
    out, start = {}, 0
    for task, size in sizes.items():
        out[task] = values[..., start : start + size]
        start += size
    if start != values.shape[-1]:
        raise ValueError(f"{values.shape[-1]} classes given, the tasks {dict(sizes)} have {start}")
    return out


def label_columns(labels: Any, sizes: Mapping[str, int]) -> dict[str, Any]:
    """``{task: int labels (B,)}`` of ``(B,)`` labels (one task) or ``(B, tasks)`` columns."""
    if len(sizes) == 1 and labels.ndim == 1:
        return {next(iter(sizes)): labels}
    if labels.ndim != 2 or labels.shape[1] != len(sizes):
        raise ValueError(
            f"labels of shape {labels.shape} do not hold one column per task {list(sizes)}"
        )
    return {task: labels[:, i] for i, task in enumerate(sizes)}


def task_outputs(logits: Any, num_classes: int | Mapping[str, int] | None = None) -> dict[str, Any]:
    """A model's output as ``{task: logits}`` (multi-task heads return that dict already), in
    the order of the model's ``num_classes`` tasks when given: a dict returned through a
    ``jax.jit`` comes back with its keys sorted, not in the tasks' (``class_names``) order."""
    if not isinstance(logits, Mapping):
        return {SINGLE_TASK: logits}
    if isinstance(num_classes, Mapping):
        return {task: logits[task] for task in num_classes}
    return dict(logits)


def concat_classes(logits: Any, num_classes: int | Mapping[str, int]) -> Any:
    """A model's logits as one array ``(B, sum K)``, its tasks' concatenated in the order of
    the model's ``num_classes`` (:func:`task_outputs`), the columns :func:`split_classes` of
    ``head_sizes(class_names)`` reads."""
    import jax.numpy as jnp

    outputs = task_outputs(logits, num_classes)
    if len(outputs) == 1:
        return next(iter(outputs.values()))
    return jnp.concatenate(list(outputs.values()), axis=-1)
