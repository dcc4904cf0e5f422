"""``vjax probe``: how much of a dataset's labels a pre-trained encoder's frozen features hold,
beside the same model at random initialisation: a linear probe (:mod:`vjax.evaluate.probe`),
the standard check of a self-supervised pre-training, before any fine-tuning spends compute.

    vjax probe --config=configs/videomae.py:finetune_motion --workdir=runs/mae --split=test

``--config`` is the classifier's (its dataset, model and input); ``--workdir`` the encoder to
probe: a pre-training run or a ``vjax convert`` folder, moved onto that model as
``train.init_from`` moves it. Every clip of the training split and of ``--split`` is one view
(the evaluation transform's centre clip) through the frozen model, sharded as evaluation is;
a multi-task model is probed per task. Writes ``WORKDIR/probe_<split>.json``.

>>> result = encoder_probes(config, "runs/mae", "test")
>>> print(format_probes(result))
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from vjax import objectives, storage
from vjax.errors import UserError
from vjax.evaluate.probe import head_input_function, linear_probe
from vjax.step import model_input
from vjax.tasks import is_multitask


def features_step(
    model: nn.Module, mean: Sequence[float], std: Sequence[float]
) -> Callable[[Any, Mapping[str, Any]], jax.Array]:
    """``step(variables, batch) -> (B, D)``: what the classifier head receives for the batch's
    model input (normalised as evaluation normalises it)."""
    features = head_input_function(model)

    def step(variables: Any, batch: Mapping[str, Any]) -> jax.Array:
        return features(variables, model_input(model, batch, mean, std))

    return step


def _probes(
    train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], class_names: Any
) -> dict[str, Any]:
    """:func:`linear_probe` of the features (``{"top1", "l2"}``), per task for several."""
    if not is_multitask(class_names):
        return linear_probe(*train, *test, len(class_names))
    return {
        task: linear_probe(train[0], train[1][:, i], test[0], test[1][:, i], len(names))
        for i, (task, names) in enumerate(class_names.items())
    }


def encoder_probes(
    config: ml_collections.ConfigDict, source: str, split: str = "test", verbose: bool = False
) -> dict[str, Any]:
    """Linear probes of the encoder in ``source`` (on ``config``'s model, as
    ``train.init_from``; ``verbose``: print what was copied and what kept its initial value)
    and of ``config.seed``'s random initialisation, each trained on the training split and
    tested on ``split``: ``{"pretrained", "scratch"}`` (``{"top1", "l2"}``, per task for a
    multi-task model) and the clip counts."""
    from vjax import train
    from vjax.compile_options import compiler_options

    objective = objectives.get(config.train.objective)  # a user's own once registered
    if not objective.classifies or objective.multi_label:
        raise UserError(
            f"vjax probe fits one class per clip; train.objective={config.train.objective!r} "
            f"(give the config of a single-label classifier on the dataset)"
        )
    if split == "train":
        raise UserError("vjax probe fits the training split: test it on another (--split=test)")
    config = train.widths_from(config, source, "--workdir")  # a pruned one's widths
    exp = train.setup(config, splits=("train", split), distill=False)
    scratch = train.create_state(exp, config.seed)
    pretrained = train.init_from_pretrained(exp, scratch, source, verbose=verbose)
    step = jax.jit(
        features_step(exp.model, tuple(config.input.mean), tuple(config.input.std)),
        in_shardings=(exp.state_shardings.variables, exp.batch_sharding),
        out_shardings=exp.batch_sharding,
        compiler_options=compiler_options(),
    )
    result: dict[str, Any] = {"split": split, "source": source}
    for name, state in (("pretrained", pretrained), ("scratch", scratch)):
        train_set, test_set = (
            train.split_outputs(exp, step, state.variables, s) for s in ("train", split)
        )
        result[name] = _probes(train_set, test_set, exp.class_names)
    result.update(train_clips=len(train_set[1]), test_clips=len(test_set[1]), seed=config.seed)
    return result


def format_probes(result: Mapping[str, Any]) -> str:
    """The probes as a table: per task, both encoders' test top-1 (and chosen L2) and the gain."""
    lines = [
        f"linear probe: train ({result['train_clips']} clips) -> {result['split']} "
        f"({result['test_clips']} clips), one centre clip each; L2 chosen by cross-validation "
        f"on the training clips"
    ]
    pretrained, scratch = result["pretrained"], result["scratch"]
    tasks = {"": (pretrained, scratch)} if "top1" in pretrained else {
        task: (pretrained[task], scratch[task]) for task in pretrained
    }  # fmt: skip
    for task, (mine, random) in tasks.items():
        gain = 100 * (mine["top1"] - random["top1"])
        lines += [
            f"{task}:" if task else "",
            f"  {'encoder of ' + result['source']:<40} top1 {mine['top1']:.4f} (L2 {mine['l2']:g})",
            f"  {'random init (seed ' + str(result['seed']) + ')':<40} top1 {random['top1']:.4f} "
            f"(L2 {random['l2']:g})",
            f"  gain {gain:+.1f} points",
        ]
    return "\n".join(line for line in lines if line)


def write_probes(result: Mapping[str, Any], workdir: str) -> str:
    """Writes ``result`` as ``WORKDIR/probe_<split>.json``; returns its path."""
    path = os.path.join(workdir, f"probe_{result['split']}.json")
    storage.path(path).write_text(json.dumps(result, indent=1))
    return path
