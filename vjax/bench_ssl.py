"""``vjax bench ssl``: label efficiency of VideoMAE pre-training on the embedded dataset.

Pre-trains ``configs/videomae.py:pretrain_motion`` (masked-video reconstruction) on
vjax_motion's training split with its labels unused (all 10 classes: translations, rotations,
speed changes, approach / recede), fine-tunes ``finetune_motion`` from it on 10% of the
training clips with their labels, trains the same classifier from scratch on the same clips
for the same number of steps, and tests both on the test split. The fine-tuning is LP-FT
(Kumar et al., "Fine-Tuning can Distort Pretrained Features", 2022): the head alone first
(``--head_steps`` more steps, the encoder frozen, :data:`~vjax.optim.HEAD_ONLY`; a forward
pass each), then the whole model from there; ``--head_steps=0`` fine-tunes the whole model
from the start, for exactly the scratch run's steps. The labelled 10% are the
first clips of the same training split (vjax_motion's clips are a pure function of their
index, so ``num_train=400`` holds exactly the first 400 of the 4000), balanced over classes.
All three runs are repeated for each seed (``--seeds``, 3 by default: initialisation, masks
and batch order): with so few labels the fine-tuned result moves by several points with the
fine-tuning's seed and by more with the pre-training's (two pre-trainings that differed only
in rounding fine-tuned 4-11 points apart, BENCHMARKS.md), so one seed's gain can be luck that
its McNemar test cannot see. Beside them, a linear probe (:mod:`vjax.evaluate.probe`) of the
encoder each classifier starts from, the pre-trained one and the random one, on the same
labelled clips: what pre-training put in the features, before any fine-tuning's luck.
Prints the table and writes it to ``BENCHMARKS.md`` (its ``ssl`` section).

    vjax bench ssl --workdir=runs/bench_ssl --data_dir=~/tensorflow_datasets
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any

from vjax.bench import (
    across_seeds_words,
    publish,
    seed_table,
    timed_training,
    train_and_test,
    training_parser,
    vjax_recipe,
)
from vjax.errors import UserError, non_negative_int, number_in, positive_int
from vjax.optim import HEAD_ONLY
from vjax.probing import encoder_probes

# The head-only stage's peak learning rate: a linear head on frozen features takes ten times
# the whole model's (1e-3); measured on the bench's three pre-trainings, 200 steps at it then
# fine-tuning gave 0.688 / 0.745 / 0.720 test top-1 against 0.680 / 0.701 / 0.706 without.
HEAD_LR = 0.01


def run(
    workdir: str,
    data_dir: str,
    pretrain_steps: int,
    finetune_steps: int,
    label_fraction: float = 0.1,
    tiny: bool = False,
    pretrain_extra: dict[str, str] | None = None,
    finetune_extra: dict[str, str] | None = None,
    seeds: int = 3,
    head_steps: int = 200,
) -> dict[str, Any]:
    """Per seed ``0 .. seeds - 1``: the pre-training, the fine-tuning from it (after
    ``head_steps`` of the head alone; 0: none) and the training from scratch; and what the
    table shows. ``tiny``: the recipes' tiny variants (a seconds-long run on the demo's tiny
    data, as the notebook's small mode); ``pretrain_extra`` / ``finetune_extra``: config
    overrides of either side (the head-only stage takes ``finetune_extra`` too)."""
    suffix = ",tiny" if tiny else ""
    common = {"dataset.data_dir": data_dir}
    steps = {"train.num_steps": str(pretrain_steps)}
    pretrain_recipe = f"videomae.py:pretrain_motion{suffix}"
    finetune_recipe = f"videomae.py:finetune_motion{suffix}"
    pretrain_overrides = {**common, **steps, **(pretrain_extra or {})}
    pretrain = vjax_recipe(pretrain_recipe, pretrain_overrides)
    labelled = int(round(pretrain.dataset.num_train * label_fraction))
    if labelled < 2:
        raise UserError(
            f"--label_fraction={label_fraction:g} labels {labelled} of the "
            f"{pretrain.dataset.num_train} training clips; the linear probes' cross-validation "
            f"needs at least 2"
        )
    tune = {**common, "train.num_steps": str(finetune_steps), "dataset.num_train": str(labelled)}
    tune.update(finetune_extra or {})
    runs = []
    for seed in range(seeds):
        pretrain_dir = os.path.join(workdir, f"pretrain_seed{seed}")
        pretrain_config = vjax_recipe(pretrain_recipe, {**pretrain_overrides, "seed": str(seed)})
        pretrain_seconds = timed_training(pretrain_config, pretrain_dir)
        learnt = pretraining_loss(pretrain_config, pretrain_dir)
        seeded = {**tune, "seed": str(seed)}
        start = pretrain_dir
        if head_steps:
            start = os.path.join(workdir, f"head_seed{seed}")
            head = {"train.num_steps": str(head_steps), "optimizer.freeze": HEAD_ONLY,
                    "optimizer.lr": str(HEAD_LR),
                    "optimizer.warmup_steps": str(max(head_steps // 10, 1))}  # fmt: skip
            config = {**seeded, "train.init_from": pretrain_dir, **head}
            timed_training(vjax_recipe(finetune_recipe, config), start)
        finetuned = train_and_test(
            vjax_recipe(finetune_recipe, {**seeded, "train.init_from": start}),
            os.path.join(workdir, f"finetune_seed{seed}"),
        )
        scratch = train_and_test(  # the same recipe, steps and seed, from a random start
            vjax_recipe(finetune_recipe, seeded), os.path.join(workdir, f"scratch_seed{seed}")
        )
        probes = encoder_probes(vjax_recipe(finetune_recipe, seeded), pretrain_dir)  # vjax probe
        runs.append({"seed": seed, "pretrain_seconds": pretrain_seconds, "pretraining": learnt,
                     "finetuned": finetuned, "scratch": scratch, "probes": probes})  # fmt: skip
    return {
        "num_classes": pretrain.dataset.num_classes,
        "pretrain_clips": pretrain.dataset.num_train,
        "labelled_clips": labelled,
        "pretrain_steps": pretrain_steps,
        "finetune_steps": finetune_steps,
        "head_steps": head_steps,
        "runs": runs,
    }


def pretraining_loss(config: Any, pretrain_dir: str) -> dict[str, float | None]:
    """The pre-training's reconstruction loss on the validation split (its fixed masks), and
    what predicting every hidden tubelet's own mean scores there
    (:func:`~vjax.models.masking.mean_prediction_loss`; None for raw-pixel targets): the
    loss's drop below it is what the pre-training learnt."""
    from vjax.models.masking import mean_prediction_loss
    from vjax.models.registry import build_model
    from vjax.train import evaluate_checkpoint

    model = build_model(config.model, config.dataset.num_classes)
    loss = evaluate_checkpoint(config, pretrain_dir, "validation")["loss"]
    baseline = mean_prediction_loss(model.tubelet) if model.norm_pix_loss else None
    return {"loss": loss, "mean_prediction": baseline}


def probe_lines(runs: Sequence[dict[str, Any]]) -> list[str]:
    """The probes' table: per seed, both encoders' linear-probe test top-1 and the gain."""
    lines = [
        "| seed | linear probe of the pre-trained encoder: test top-1 | of the random encoder | "
        "gain (points) |",
        "|---|---|---|---|",
    ]
    gains = []
    for run in runs:
        pretrained, scratch = run["probes"]["pretrained"], run["probes"]["scratch"]
        gains.append(100 * (pretrained["top1"] - scratch["top1"]))
        lines.append(
            f"| {run['seed']} | {pretrained['top1']:.3f} (L2 {pretrained['l2']:g}) | "
            f"{scratch['top1']:.3f} (L2 {scratch['l2']:g}) | {gains[-1]:+.1f} |"
        )
    return [*lines, "", f"Linear probe gain: {sum(gains) / len(gains):+.1f} points on average."]


def pretraining_words(runs: Sequence[dict[str, Any]]) -> str:
    """The line on what the pre-trainings learnt: each seed's validation loss beside the loss
    of predicting each hidden tubelet's mean."""
    losses = " / ".join(f"{run['pretraining']['loss']:.4f}" for run in runs)
    seeds = " / ".join(str(run["seed"]) for run in runs)
    words = f"Pre-training's validation loss: {losses} (seed{'s' * (len(runs) > 1)} {seeds})"
    baseline = runs[0]["pretraining"]["mean_prediction"]
    if baseline is None:
        return words + "."
    return (
        f"{words}; predicting each hidden tubelet's own mean scores {baseline:.4f}, so only "
        f"the loss below that is what the encoder and decoder learnt from the visible tokens."
    )


def head_words(head_steps: int) -> str:
    """The fine-tuning's head-only stage in the table's first line ('' without one)."""
    if not head_steps:
        return ""
    return (
        f" (LP-FT: first {head_steps} steps of the head alone on the frozen encoder at "
        f"learning rate {HEAD_LR:g}, then the steps above from there)"
    )


def table(result: dict[str, Any], total_seconds: float, command: str) -> str:
    """The Markdown section: the setting, one row per seed (both models, the gain, McNemar's
    test of it), the gain over the seeds."""
    runs = result["runs"]
    pretrain_seconds = sum(run["pretrain_seconds"] for run in runs) / len(runs)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    names = ("scratch", "pre-trained")
    lines = [
        f"vjax_motion, {result['num_classes']} classes: pre-training "
        f"({result['pretrain_steps']} steps, {pretrain_seconds:.0f} s on average) on the "
        f"{result['pretrain_clips']} training clips without labels, then "
        f"{result['finetune_steps']} steps on {result['labelled_clips']} labelled clips "
        f"({100 * result['labelled_clips'] / result['pretrain_clips']:.0f}% of the labels), "
        f"fine-tuned from it{head_words(result.get('head_steps', 0))} and from scratch; all "
        f"three again for each seed; "
        f"test split ({runs[0]['scratch']['num_examples']} clips). CPU: {platform.machine()}, "
        f"{os.cpu_count()} cores, load average {load:.1f} at the end (a shared machine: wall "
        f"times include other jobs' load). Total {total_seconds / 60:.1f} min. "
        f"Command: `{command}`",
        "",
    ]
    pairs = [(run["seed"], run["scratch"], run["finetuned"]) for run in runs]
    lines += seed_table(pairs, names, ("VideoMAE pre-trained, fine-tuned", "from scratch"))
    gain = across_seeds_words(pairs, names)
    lines += ["", f"Gain from pre-training: {gain}; target: +10 points.", ""]
    lines += [pretraining_words(runs), ""]
    lines += [
        "Each encoder frozen at the fine-tuning's start, a logistic regression on the features "
        "its classifier head receives, trained on the same labelled clips (its L2 strength "
        "chosen by 5-fold cross-validation on them), tested on the test split:",
        "",
        *probe_lines(runs),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = training_parser("ssl", __doc__)
    parser.add_argument("--pretrain_steps", type=positive_int, default=2000, help="masked")
    parser.add_argument("--finetune_steps", type=positive_int, default=400, help="each run")
    parser.add_argument("--label_fraction", type=number_in(0, 1, low_open=True), default=0.1,
                        help="of the training clips with labels")  # fmt: skip
    parser.add_argument("--tiny", action="store_true", help="the recipes' tiny variants")
    parser.add_argument(
        "--seeds", type=positive_int, default=3, help="all three runs with seeds 0..N-1"
    )
    parser.add_argument("--head_steps", type=non_negative_int, default=200,
                        help="of the head alone before fine-tuning (LP-FT); 0: none")  # fmt: skip
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    start = time.perf_counter()
    result = run(
        os.path.expanduser(args.workdir),
        os.path.expanduser(args.data_dir),
        args.pretrain_steps,
        args.finetune_steps,
        args.label_fraction,
        args.tiny,
        seeds=args.seeds,
        head_steps=args.head_steps,
    )
    seconds = time.perf_counter() - start
    return publish("ssl", argv, lambda command: table(result, seconds, command), args.out)
