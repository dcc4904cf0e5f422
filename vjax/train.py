"""The training loop, top to bottom: config -> data -> model -> optimiser -> sharded state ->
restore -> jitted steps -> periodic eval, logging and checkpoints.

    >>> from vjax import train
    >>> result = train.train(config, workdir="/tmp/run")
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vjax import checkpoint, objectives, parallel, storage
from vjax.checkpoint_paths import has_checkpoint, require_trained
from vjax.compile_options import compiler_options
from vjax.config_utils import ConfigError, config_to_json, with_absolute_paths
from vjax.data.loaders import data_function, worker_data_function
from vjax.data.pipeline import ProcessMap, num_eval_batches, prefetch
from vjax.distributed import process_zero_first
from vjax.errors import UserError
from vjax.evaluate import scoring
from vjax.evaluate.metrics import MetricInputError, task_metrics
from vjax.evaluate.report import named_result, scalars, summary
from vjax.metric_writers import MetricWriter, progress_line, read_metrics
from vjax.models import build_model
from vjax.models.precise_bn import precise_batch_stats
from vjax.models.widths import check_widths
from vjax.optim import CLIPPED_WARMUP_FRACTION, frozen_summary, make_optimizer, warmup_steps
from vjax.preemption import PreemptionWatcher
from vjax.preflight import check_config, model_input_shapes
from vjax.step import (
    TrainState,
    batched,
    make_eval_step,
    make_init_state,
    make_train_step,
    normalize_video,
)
from vjax.tasks import head_sizes

log = logging.getLogger(__name__)


# The batch keys a model may read (vjax.step.model_input); evaluation ships only these.
INPUT_KEYS = ("video", "audio", "has_audio")

# Larger tensors may not sit whole on every device of an FSDP/tensor-parallel mesh.
DEFAULT_MAX_REPLICATED_MIB = 4.0


class NonFiniteLossError(UserError, FloatingPointError):
    """Training produced a NaN/inf loss or state; nothing non-finite is saved, so the last good
    checkpoint is left untouched. Not a typo, but its fix is in the config (a lower learning
    rate, gradient clipping): a UserError, which the commands print as one line naming the
    step, not a traceback."""


@dataclasses.dataclass
class Experiment:
    """What both training and evaluation build from a config, before anything is compiled."""

    config: ml_collections.ConfigDict
    mesh: jax.sharding.Mesh
    rules: Any
    builder: Any
    class_names: list[str] | dict[str, list[str]]  # {task: names} for multi-task data
    model: nn.Module
    input_shape: tuple[int, ...]  # (batch, T, H, W, C) of the data's clips
    state_shardings: Any
    batch_sharding: jax.sharding.NamedSharding
    tx: Any
    init_state: Any  # key -> boxed TrainState (logical axis metadata on the leaves)
    objective: objectives.Objective = objectives.OBJECTIVES["classification"]
    teacher: Any = None  # vjax.distill.Teacher with train.distill.teacher (training only)
    # The model input's shapes with the batch axis: input_shape for a video model, the
    # spectrogram's for AST, {modality: shape} for a model of several (vjax.step.model_input).
    input_shapes: Any = None


def setup(
    config: ml_collections.ConfigDict,
    devices: list | None = None,
    splits: tuple[str, ...] = (),
    why: str = "",
    distill: bool = True,
) -> Experiment:
    """Builds mesh (over ``devices``, default all), data, model and optimiser. The config is
    checked (:func:`vjax.preflight.check_config`) before the dataset is prepared, and the
    prepared dataset must hold ``splits`` (``why``: what needs them); nothing is compiled.
    ``distill``: load and check ``train.distill.teacher`` (evaluation does not need it)."""
    from vjax.data.datasets import clip_spec, is_multilabel, load_dataset, require_splits

    mesh = check_config(config, devices)

    builder = process_zero_first(lambda: load_dataset(config.dataset), "preparing the dataset")
    if jax.process_index() == 0 and (note := getattr(builder, "source_change_note", str)()):
        log.warning("%s; it is used as prepared: delete that folder to prepare it again", note)
    require_splits(builder, splits, why)
    clip_shape, class_names = clip_spec(builder, config.input)
    return build_experiment(
        config, mesh, builder, clip_shape, class_names, is_multilabel(builder), distill
    )


def build_experiment(
    config: ml_collections.ConfigDict,
    mesh: jax.sharding.Mesh,
    builder: Any,
    clip_shape: tuple[int, ...],
    class_names: Any,
    multi_label: bool = False,
    distill: bool = True,
) -> Experiment:
    """The model, objective, optimiser and sharded initial state of :func:`setup`, for data of
    clips ``clip_shape`` and ``class_names`` (and ``config.input.audio``'s spectrograms for a
    model that takes audio); nothing is compiled."""
    from vjax import distill as distillation

    rules = parallel.normalize_rules(config.sharding.rules)
    batch_size = config.input.global_batch_size
    model = build_model(config.model, head_sizes(class_names), config.train.dtype)
    objective = objectives.check(
        config.train.get("objective", "classification"),
        model,
        config.model.name,
        class_names,
        multi_label,
    )
    if distill:
        objective, teacher = distillation.from_config(config, objective, class_names, clip_shape)
    else:
        teacher = None
    input_shape = (batch_size, *clip_shape)
    shapes = model_input_shapes(model, config.model.name, clip_shape, config.input)
    if config.train.get("quantization"):  # quantization-aware training
        from vjax.deploy.quantize import qat_model

        model = qat_model(model, config.train.quantization)
    model.check_input(batched(shapes, batch_size))
    tx = make_optimizer(config.optimizer, config.train.num_steps)

    init_state = make_init_state(model, tx, shapes, config.train.get("param_dtype", "float32"))
    abstract = jax.eval_shape(init_state, jax.random.key(0))
    try:
        check_widths(config.model.get("widths"), abstract.params)
        parallel.check_rules_cover(abstract, rules)
        parallel.check_divisible(abstract, mesh, rules)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return Experiment(
        config=config,
        mesh=mesh,
        rules=rules,
        builder=builder,
        class_names=class_names,
        model=model,
        input_shape=input_shape,
        state_shardings=parallel.logical_shardings(abstract, mesh, rules),
        batch_sharding=parallel.batch_sharding(mesh, rules),
        tx=tx,
        init_state=init_state,
        objective=objective,
        teacher=teacher,
        input_shapes=batched(shapes, batch_size),
    )


def unbatched(shapes: Any) -> dict[str, list[int]] | list[int]:
    """Input shapes without the batch axis, as JSON values (for the checkpoint metadata)."""
    if isinstance(shapes, Mapping):
        return {name: list(shape[1:]) for name, shape in shapes.items()}
    return list(shapes[1:])


def checkpoint_metadata(exp: Experiment, config_json: str) -> dict[str, Any]:
    """What every checkpoint of a run records beside its state: the config, the classes, the
    data's clip and the model's input shapes (``vjax.load`` rebuilds the model from them)."""
    return {
        "config": json.loads(config_json),
        "class_names": exp.class_names,
        "clip_shape": list(exp.input_shape[1:]),
        "input_shapes": unbatched(exp.input_shapes),
        "multi_label": exp.objective.multi_label,
    }


def create_state(exp: Experiment, seed: int) -> TrainState:
    """Initialises the train state directly into its shardings (never whole on one device)."""
    init = jax.jit(
        lambda key: nn.meta.unbox(exp.init_state(key)), out_shardings=exp.state_shardings
    )
    with jax.set_mesh(exp.mesh):
        return init(jax.random.key(seed))


def restore_state(
    exp: Experiment, manager, move_aside: bool = False
) -> tuple[TrainState, int] | None:
    """The newest good checkpoint of ``manager`` restored straight into the state shardings
    (``move_aside``: newer unreadable steps renamed, for a run that will save again)."""
    return checkpoint.restore_latest(manager, _restore_target(exp), move_aside)


def _restore_target(exp: Experiment) -> TrainState:
    """The state's abstract arrays on their shardings: what a restore reads into."""
    abstract = jax.eval_shape(lambda k: nn.meta.unbox(exp.init_state(k)), jax.random.key(0))
    return checkpoint.abstract_like(abstract, exp.state_shardings)


def restore_variables(exp: Experiment, manager) -> tuple[dict, int] | None:
    """``(variables, step)`` of the newest good checkpoint of a reading ``manager``: the
    model's parameters and state on their shardings, without the optimiser's state (neither
    read nor checked, so a config whose optimiser differs evaluates the run)."""
    restored = checkpoint.restore_latest(manager, _restore_target(exp), names=checkpoint.VARIABLES)
    if restored is None:
        return None
    part, step = restored
    return checkpoint.variables_of(part), step


def compile_steps(exp: Experiment):
    """The jitted train and eval steps with explicit in/out shardings; the state is donated.
    A distillation teacher's variables are placed on the mesh by the same logical rules and
    bound as the train step's frozen argument, so callers still call ``step(state, batch,
    key)``."""
    cfg = exp.config
    norm = {"mean": tuple(cfg.input.mean), "std": tuple(cfg.input.std)}
    replicated = parallel.replicated(exp.mesh)
    smoothing, objective = cfg.optimizer.label_smoothing, exp.objective
    freeze = cfg.optimizer.get("freeze", "")
    frozen_shardings = () if exp.teacher is None else (exp.teacher.shardings(exp.mesh, exp.rules),)
    train_step = jax.jit(
        make_train_step(
            exp.model, exp.tx, label_smoothing=smoothing, objective=objective, freeze=freeze, **norm
        ),
        in_shardings=(exp.state_shardings, exp.batch_sharding, replicated, *frozen_shardings),
        out_shardings=(exp.state_shardings, replicated),
        donate_argnums=0,
        compiler_options=compiler_options(),
    )
    if exp.teacher is not None:
        frozen = jax.device_put(exp.teacher.variables, frozen_shardings[0])
        train_step = functools.partial(_with_frozen, train_step, frozen)
    eval_step = jax.jit(
        make_eval_step(exp.model, objective=objective, **norm),
        in_shardings=(exp.state_shardings.variables, exp.batch_sharding),
        out_shardings=exp.batch_sharding,
        compiler_options=compiler_options(),
    )
    return train_step, eval_step


def _with_frozen(train_step, frozen: Any, state: TrainState, batch: Any, key: jax.Array):
    """``train_step`` with its frozen (teacher) variables given."""
    return train_step(state, batch, key, frozen)


def _num_examples(exp: Experiment, split: str) -> int:
    """The size of ``split``, from the dataset's info (no reader opened)."""
    return exp.builder.info.splits[split].num_examples


def _apply(exp: Experiment, eval_step, variables: Any):
    """``apply(this process's batch, or its uint8 videos) -> its logits``, row for row: the
    rows of every process (the model's inputs among :data:`INPUT_KEYS`) make one global batch
    for the sharded ``eval_step``."""

    def apply(local: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray:
        rows = local if isinstance(local, Mapping) else {"video": local}
        inputs = {k: v for k, v in rows.items() if k in INPUT_KEYS}
        batch = parallel.global_batch(inputs, exp.batch_sharding)
        with jax.set_mesh(exp.mesh), nn.logical_axis_rules(exp.rules):
            return parallel.process_rows(eval_step(variables, batch))

    return apply


def _gather(local: Any) -> Any:
    """Every process's arrays concatenated (one process: as they are)."""
    from jax.experimental import multihost_utils

    if jax.process_count() == 1:
        return local
    return multihost_utils.process_allgather(local, tiled=True)


def evaluate(
    exp: Experiment,
    eval_step,
    variables: Any,
    split: str,
    interrupted: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Every metric of :mod:`vjax.evaluate` on a whole split, one view per example (the
    centre clip and crop for stored whole videos); for an objective that does not classify
    (reconstruction), the mean of its per-example losses. ``interrupted()`` (asked before each
    batch) ends it early with :class:`~vjax.evaluate.scoring.EvaluationInterrupted`."""
    outputs, labels = split_outputs(exp, eval_step, variables, split, interrupted)
    if not exp.objective.classifies:  # per-example losses
        return {"split": split, "num_examples": len(outputs), "loss": float(outputs.mean())}
    metrics = _loss_as_trained(exp, task_metrics(outputs, labels, exp.class_names))
    return named_result(metrics, exp.class_names, split, _video_names(exp, split))


def _loss_as_trained(exp: Experiment, metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` with the ``loss`` the objective trains: ``multi_label_sum`` sums the binary
    cross-entropy over the classes, where the metrics average it over every (video, class)
    (:func:`~vjax.evaluate.metrics.binary_cross_entropy`): K times it, else its validation
    loss would read K times (AudioSet: 527) smaller than its training loss."""
    if not exp.objective.sum_classes:
        return metrics
    return {**metrics, "loss": metrics["loss"] * len(exp.class_names)}


def split_outputs(
    exp: Experiment,
    step: Callable,
    variables: Any,
    split: str,
    interrupted: Callable[[], bool] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(outputs, labels)`` of every example of ``split``, in its order, one view each (the
    evaluation transform's centre clip): ``step(variables, batch)``'s per-example outputs
    (the eval step's logits or losses, :func:`vjax.probing.features_step`'s features),
    gathered from every process. ``interrupted()``: as :func:`evaluate`'s."""
    number = num_eval_batches(_num_examples(exp, split), exp.config.input.global_batch_size)
    with _data_map(exp, "eval", split, number) as batches:
        return scoring.evaluate_batches(
            _apply(exp, step, variables), batches, number, exp.class_names, _gather,
            score=lambda outputs, labels, _: (outputs, labels), interrupted=interrupted,
        )  # fmt: skip


def _video_names(exp: Experiment, split: str) -> list[str] | None:
    """The split's video names in record order, where the dataset has them (prepared videos:
    :meth:`vjax.data.video_builder.VideoFolder.video_names`); None for rendered data."""
    return getattr(exp.builder, "video_names", lambda _: None)(split)


def evaluate_views(exp: Experiment, eval_step, variables: Any, split: str) -> dict[str, Any]:
    """The multi-view test (``input.test_num_clips`` x ``input.test_num_crops`` views per
    video, logits pooled per video) of a dataset of stored whole videos."""
    index, count = parallel.data_shard(exp.batch_sharding)
    chunk = exp.config.input.global_batch_size // count  # views per process per call
    per_process = -(-_num_examples(exp, split) // count)
    with _data_map(exp, "views", split, per_process) as video_views:
        metrics = scoring.evaluate_views(
            _apply(exp, eval_step, variables),
            exp.builder.as_data_source(split),
            exp.config.input,
            chunk,
            index,
            count,
            _gather if count > 1 else None,
            exp.class_names,
            video_views,
        )
    metrics = _loss_as_trained(exp, metrics)
    return named_result(metrics, exp.class_names, split, _video_names(exp, split))


RECONSTRUCTION_CLIPS = 4  # validation clips in each reconstruction picture


def reconstruction_picture(exp: Experiment, workdir: str):
    """``picture(variables, step)``: writes ``WORKDIR/reconstruction_stepN.png``, the first
    validation clips as original frames, masked input and reconstruction (in pixels), with
    the validation masks (:func:`vjax.objectives.reconstruct`)."""
    from jax.experimental import multihost_utils

    from vjax.evaluate.plots import plot_reconstruction

    cfg = exp.config.input
    norm = {"mean": tuple(cfg.mean), "std": tuple(cfg.std)}

    def rebuild(variables, batch):
        video = normalize_video(batch["video"], dtype=exp.model.dtype, **norm)
        return objectives.reconstruct(exp.model, variables, batch, video)

    rebuild = jax.jit(
        rebuild,
        in_shardings=(exp.state_shardings.variables, exp.batch_sharding),
        out_shardings=exp.batch_sharding,
    )

    def picture(variables: Any, step: int) -> None:
        with (
            _data_map(exp, "eval", "validation", 1) as batches,
            jax.set_mesh(exp.mesh),
            nn.logical_axis_rules(exp.rules),
        ):
            batch = parallel.global_batch({"video": batches(0)["video"]}, exp.batch_sharding)
            clips = multihost_utils.process_allgather(rebuild(variables, batch), tiled=True)
        if jax.process_index() == 0:
            path = os.path.join(workdir, f"reconstruction_step{step}.png")
            plot_reconstruction(*(np.asarray(c)[:RECONSTRUCTION_CLIPS] for c in clips), path)

    return picture


def widths_from(
    config: ml_collections.ConfigDict, source: str, what: str = "train.init_from"
) -> ml_collections.ConfigDict:
    """The config with ``model.widths`` taken from the checkpoint ``source`` (``what`` names
    it) when that is a pruned model (``vjax prune``) of the same family and the config gives
    none: fine-tuning or evaluating a pruned model needs only its folder. Widths given in both
    that differ are an error naming both."""
    from vjax.checkpoint import read_metadata

    if not source:
        return config
    model = read_metadata(source)["config"]["model"]
    widths, ours = model.get("widths") or {}, dict(config.model.get("widths") or {})
    if not widths or ours == widths:
        return config
    if ours:
        raise ConfigError(
            f"model.widths {ours} differ from those of the pruned model in {what} {source!r}: "
            f"{widths}; leave model.widths unset to take the pruned model's"
        )
    if model["name"] != config.model.name:
        raise ConfigError(
            f"{what} {source!r} is a pruned {model['name']!r}; its per-layer widths fit only "
            f"that model, not model.name={config.model.name!r}"
        )
    config = config.copy_and_resolve_references()
    with config.unlocked():
        config.model.widths = widths
    if jax.process_index() == 0:
        print(f"model.widths from the pruned model in {source} ({len(widths)} narrowed layers)")
    return config


def init_from_pretrained(
    exp: Experiment, state: TrainState, path: str, verbose: bool = True
) -> TrainState:
    """``train.init_from``: the parameters of a pretrained checkpoint (a workdir or a
    ``vjax convert`` folder) moved onto this model by :func:`vjax.convert.surgery.adapt_params`
    (tubelet inflation ``train.init_inflation``, position tables resized to this clip, a new
    classifier when the class count differs). BatchNorm statistics of the same shape are
    copied. Anything that cannot be adapted is an error naming the parameter and both shapes.
    """
    from jax.experimental import multihost_utils

    from vjax.checkpoint import read_checkpoint
    from vjax.config_utils import config_from_json
    from vjax.convert.surgery import SurgeryError, adapt_params, token_grid

    metadata, variables, _ = read_checkpoint(path)
    if quantized := metadata.get("quantization"):  # int8 kernels: no float weight to copy
        raise ConfigError(
            f"train.init_from {path!r} is a quantized model (vjax quantize); start from the "
            f"float model it was made from, {quantized.get('source', 'its --model')!r}"
        )
    source_model = build_model(
        config_from_json(metadata["config"]).model, head_sizes(metadata["class_names"])
    )
    grids = {}
    source_shape = metadata.get("input_shapes") or metadata["clip_shape"]
    single_input = not isinstance(exp.input_shapes, Mapping) and isinstance(source_shape, list)
    if single_input and all(hasattr(m, "tubelet") for m in (exp.model, source_model)):
        grids = {
            "source_grid": token_grid(source_model, tuple(source_shape)),
            "target_grid": token_grid(exp.model, exp.input_shapes),
        }
    initial = multihost_utils.process_allgather(state.params, tiled=True)  # whole, on the host
    inflation = exp.config.train.get("init_inflation", "central")
    try:
        if hasattr(exp.model, "vit_view") and not hasattr(source_model, "vit_view"):
            # an image model onto each of MBT's modality encoders (MBT onto MBT: by name)
            params, notes = _adapt_per_modality(
                exp, variables["params"], initial, inflation, source_model, source_shape
            )
        else:
            params, notes = adapt_params(variables["params"], initial, inflation=inflation, **grids)
    except SurgeryError as e:
        raise SurgeryError(f"train.init_from {path!r} does not fit this model: {e}") from e
    model_state = dict(state.model_state)
    for name in model_state.keys() & variables.keys():  # e.g. batch_stats
        copied = _matching_leaves(variables[name], model_state[name])
        model_state[name] = jax.device_put(copied, exp.state_shardings.model_state[name])
    if verbose:
        notes = _group_dropped(notes, initial)
        print(f"Initialised from {path}: " + "; ".join(notes or ["every parameter copied"]))
    params = jax.tree.map(lambda p, i: np.asarray(p, i.dtype), params, initial)  # param_dtype
    params = jax.device_put(params, exp.state_shardings.params)
    return state.replace(params=params, model_state=model_state)


def _matching_leaves(source: Any, initial: Any) -> Any:
    """``initial``'s tree with each leaf that ``source`` has at the same path and shape taken
    from ``source`` (a model state such as BatchNorm statistics, copied as the parameter
    surgery copies parameters: a block the source lacks keeps its initial statistics)."""
    from flax import traverse_util

    found = traverse_util.flatten_dict(dict(source))
    out = {
        path: np.asarray(found[path], value.dtype)
        if path in found and np.shape(found[path]) == value.shape
        else value
        for path, value in traverse_util.flatten_dict(dict(initial)).items()
    }
    return traverse_util.unflatten_dict(out)


def _adapt_per_modality(
    exp: Experiment, source: Any, initial: Any, inflation: str, source_model: Any, source_shape
) -> tuple[dict, list[str]]:
    """An image ViT (or ViViT) moved by surgery onto each modality's encoder of a model with
    ``vit_view`` (MBT): tubelets inflated for video, the RGB kernel summed for audio, each
    position table resized to its modality's grid; the bottlenecks keep their initial values."""
    from vjax.convert.surgery import adapt_params, token_grid
    from vjax.models import model_modalities

    model = exp.model
    modalities = model_modalities(model)
    shapes = exp.input_shapes
    shapes = shapes if isinstance(shapes, Mapping) else {modalities[0]: shapes}
    grid = None
    if hasattr(source_model, "tubelet") and isinstance(source_shape, list):
        grid = token_grid(source_model, tuple(source_shape))
    params, notes = dict(nn.meta.unbox(initial)), []
    for modality in modalities:
        view, done = adapt_params(
            source,
            model.vit_view(params, modality),
            inflation=inflation,
            source_grid=grid,
            target_grid=model.patch_grid(modality, shapes[modality]),
        )
        params = model.from_vit_view(params, modality, view)
        notes += [f"{modality}: {note}" for note in done]
    prefixes = tuple(f"{m}_" for m in modalities)
    kept = [n for n in sorted(params) if n != "classifier" and not n.startswith(prefixes)]
    notes += [f"kept the initial {name} (not in an image model)" for name in kept]
    return jax.tree.map(np.asarray, params), notes


def _group_dropped(notes: list[str], target: Any) -> list[str]:
    """:func:`adapt_params`'s notes with the source parameters this model lacks in one note,
    by top-level module where the model has none of it (e.g. a pre-training decoder)."""
    names = [n.split()[1] for n in notes if n.startswith("dropped ")]
    if not names:
        return notes
    groups = sorted({n.split("/")[0] + "/*" if n.split("/")[0] not in target else n for n in names})
    kept = [n for n in notes if not n.startswith("dropped ")]
    return [*kept, f"dropped {len(names)} parameters this model lacks: {', '.join(groups)}"]


def _precise_batch_stats(
    exp: Experiment, state: TrainState, make_batch, step: int, interrupted: Callable[[], bool]
) -> TrainState:
    """With ``train.precise_bn_batches = N > 0`` and a BatchNorm model: BatchNorm statistics
    recomputed exactly on the N training batches that follow ``step`` (precise BN), so the
    evaluation and the checkpoint use statistics of the current weights. ``interrupted()``
    (asked before each batch) ends it with :class:`~vjax.evaluate.scoring.EvaluationInterrupted`."""
    num = exp.config.train.get("precise_bn_batches", 0)
    if not num or "batch_stats" not in state.model_state:
        return state
    cfg = exp.config.input
    videos = (
        normalize_video(make_batch(step + i)["video"], cfg.mean, cfg.std, exp.model.dtype)
        for i in scoring.interruptible(num, interrupted, "precise BN ")
    )
    stats = precise_batch_stats(exp.model, state.variables, videos)["batch_stats"]
    stats = jax.device_put(stats, exp.state_shardings.model_state["batch_stats"])
    return state.replace(model_state={**state.model_state, "batch_stats": stats})


# input.num_workers = -1 takes one loader process per core up to this many: each holds its own
# dataset reader (~0.7 GB with TensorFlow), and 32 cores make clips far faster than one host's
# accelerators consume them (vjax bench data: ~1,000+ frames/s per core).
MAX_AUTO_WORKERS = 32


def _num_workers(config: ml_collections.ConfigDict) -> int:
    """``input.num_workers`` loader processes (``-1``: one per core, at most
    :data:`MAX_AUTO_WORKERS`; 0: none, the trainer's own thread)."""
    workers = config.input.get("num_workers", 0)
    return min(os.cpu_count() or 1, MAX_AUTO_WORKERS) if workers == -1 else workers


@contextlib.contextmanager
def _data_map(exp: Experiment, kind: str, split: str, stop: int):
    """:func:`data_function` of this process, computed here (``input.num_workers = 0``) or by
    that many loader processes (``-1``: one per core) reading ahead, which give the same
    results. The multi-view test keeps only a few videos' views ahead (they are large)."""
    index, count = parallel.data_shard(exp.batch_sharding)
    workers = _num_workers(exp.config)
    if not workers:
        yield data_function(exp.builder, exp.config, kind, split, index, count)
        return
    config_json = config_to_json(exp.config)
    factory = functools.partial(worker_data_function, config_json, kind, split, index, count)
    ahead = workers + 2 if kind == "views" else None
    mapped = ProcessMap(factory, workers, stop=stop, ahead=ahead)
    try:
        yield mapped
    finally:
        mapped.close()


def _non_finite(what: str, step: int, detail: Any, manager) -> NonFiniteLossError:
    """The error that stops a run at ``step`` because ``what`` went non-finite, naming the
    newest checkpoint of ``manager`` (none is ever saved non-finite, so it is a good one)."""
    last = manager.latest_step()
    kept = (
        "no checkpoint had been saved yet"
        if last is None
        else f"the last good checkpoint (step {last}) is intact"
    )
    detail = f": {detail}" if detail else ""
    return NonFiniteLossError(
        f"non-finite {what} at step {step}{detail}. Stopping; {kept}. Lower optimizer.lr or "
        f"enable optimizer.grad_clip_norm."
    )


def _check_finite(history: list[tuple[int, dict]], manager) -> list[tuple[int, dict]]:
    """Fetches pending step metrics; raises naming the first step whose loss is not finite."""
    fetched = jax.device_get(history)
    for step, metrics in fetched:
        if not all(math.isfinite(float(v)) for v in metrics.values()):
            bad = {k: float(v) for k, v in metrics.items()}
            raise _non_finite("training metrics", step, bad, manager)
    return fetched


def _all_finite(tree: Any) -> jax.Array:
    """Whether every floating-point array of ``tree`` is finite: one reduction on the devices,
    a single bool to fetch."""
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in leaves] or [jnp.bool_(True)]))


def _finite_check(exp: Experiment) -> Callable[[TrainState], bool]:
    """``is_finite(state)``: whether the whole state (parameters, optimiser and model state)
    is finite, reduced on the devices where it lives; only the answer is fetched."""
    all_finite = jax.jit(_all_finite, out_shardings=parallel.replicated(exp.mesh))
    return lambda state: bool(all_finite(state))


def _checked_saver(
    manager, metadata: dict[str, Any], is_finite: Callable[[TrainState], bool]
) -> Callable[[int, TrainState, list], list]:
    """``save(step, state, history) -> history fetched``: saves a checkpoint only when the
    step metrics pending in ``history`` and the state are all finite, else raises
    :class:`NonFiniteLossError` naming the step. The update of step N can turn the state
    non-finite while every metric so far (computed with the parameters before it) is finite;
    saving it would make it the step every resume, eval and ``vjax.load`` picks, and let
    keep-N delete a good one."""

    def save(step: int, state: TrainState, history: list[tuple[int, dict]], owed: bool = False):
        history = _check_finite(history, manager)
        if not is_finite(state):
            raise _non_finite("parameters or optimiser state", step, "not saved", manager)
        checkpoint.save(
            manager, step, state, {**metadata, VALIDATION_OWED: True} if owed else metadata
        )
        return history

    return save


VALIDATION_OWED = "validation_owed"  # checkpoint metadata: saved before its validation ran


def _validation_owed(manager, workdir: str, step: int, rewrite_cut_short: bool = False) -> bool:
    """True when the checkpoint of ``step`` was saved on a preemption notice before the
    validation scheduled at that step ran, and none of that step has been logged since (or
    it was, but the rewrite with precise BN's statistics that follows it was cut short): the
    resumed run validates it first, so a preemption loses no validation (the final one
    included)."""
    from jax.experimental import multihost_utils

    owed = False
    if step and checkpoint.step_metadata(manager, step).get(VALIDATION_OWED):
        if jax.process_index() == 0:  # a validation that could not be scored logs none: owed
            logged = read_metrics(workdir)
            owed = rewrite_cut_short or not any(
                r["step"] == step and r["split"] == "validation" for r in logged
            )
        # Every process takes the branch process 0 read (it alone writes metrics.jsonl).
        owed = bool(multihost_utils.broadcast_one_to_all(np.int32(owed)))
    return owed


def _check_restored(
    state: TrainState, step: int, workdir: str, is_finite: Callable[[TrainState], bool]
) -> None:
    """Raises a UserError when the restored checkpoint of ``step`` is not finite (an older
    vjax could save one): training on from it cannot recover, and every later error would
    name it as the last good checkpoint."""
    if step and not is_finite(state):
        folder = os.path.join(workdir, "checkpoints", str(step))
        raise UserError(
            f"the checkpoint at step {step} holds non-finite parameters or optimiser state; "
            f"move {folder!r} out of the checkpoints folder to resume from the one before"
        )


def check_workdir(workdir: str) -> None:
    """Raises a UserError when ``workdir`` or a folder above it is a file (no run can be made
    there), when it holds an export (``vjax predict`` would then run the export, not the run),
    or when it cannot be written to (a read-only folder, a bucket without access); checked
    before any dataset is prepared."""
    from vjax.deploy.signature import is_exported

    if not storage.is_remote(workdir):
        path = storage.nearest_existing(workdir)
        if not os.path.isdir(path):
            where = (
                "is a file" if path == os.path.abspath(workdir) else f"is inside a file, {path!r}"
            )
            raise UserError(
                f"workdir {workdir!r} {where}: give --workdir a folder (a new one, or a run's "
                f"to resume)"
            )
    if is_exported(workdir) and not has_checkpoint(workdir):  # (a run with one kept resumes)
        raise UserError(
            f"workdir {workdir!r} holds a model `vjax export` wrote: train into a new folder "
            f"(--config.train.init_from= takes the run or model it came from)"
        )
    storage.require_writable(workdir)


# What wrote a checkpoint that holds a model but no run: the metadata key it leaves -> verb.
MODEL_FOLDER_VERBS = {"quantization": "vjax quantize", "pruning": "vjax prune"}


def require_training_run(workdir: str) -> None:
    """Raises a UserError when the checkpoint in ``workdir`` is a model that ``vjax convert``,
    ``quantize`` or ``prune`` wrote (no optimiser state, no run to go on with): it is
    fine-tuned from, with ``train.init_from``, into a new workdir."""
    metadata = checkpoint.read_metadata(workdir)
    config = metadata.get("config")
    verbs = [verb for key, verb in MODEL_FOLDER_VERBS.items() if metadata.get(key)]
    if not (isinstance(config, dict) and isinstance(config.get("dataset"), dict)):
        verbs.append("vjax convert")  # a converted model records no dataset
    if verbs:
        raise UserError(
            f"{workdir!r} holds a model that {verbs[0]} wrote, not a training run to go on "
            f"with: fine-tune it into a new workdir with --config.train.init_from={workdir}"
        )


def _remove_if_empty(*folders: str) -> None:
    """Removes each folder that is empty, in order (a folder that holds anything stays)."""
    for folder in folders:
        with contextlib.suppress(OSError, ValueError):  # epath: ValueError when not empty
            storage.path(folder).rmdir()


def _start_state(exp: Experiment, workdir: str, is_main: bool) -> tuple[Any, TrainState, int]:
    """``(manager, state, step)``: the checkpoint manager of ``workdir`` and the state to
    train from, the newest good checkpoint's or else a fresh one (``train.init_from``'s
    parameters when set). The folders this call creates are removed again when that fails (a
    ``train.init_from`` that does not fit), so the mistake leaves no empty run behind."""
    tcfg = exp.config.train
    folder = os.path.join(workdir, "checkpoints")
    created = [path for path in (folder, workdir) if not storage.path(path).exists()]
    try:
        storage.path(workdir).mkdir(parents=True, exist_ok=True)
        manager = checkpoint.make_manager(folder, tcfg.keep_checkpoints)
        restored = restore_state(exp, manager, move_aside=True)
        if restored:
            print(f"Restored checkpoint at step {restored[1]} from {workdir}", flush=True)
            return manager, *restored
        state = create_state(exp, exp.config.seed)
        if tcfg.get("init_from"):
            state = init_from_pretrained(exp, state, tcfg.init_from, is_main)
        return manager, state, 0
    except BaseException:
        if is_main:
            _remove_if_empty(*created)
        raise


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains (resuming from the newest good checkpoint in ``workdir``) and returns the last
    validation metrics."""
    check_workdir(workdir)
    # A step whose rewrite with precise BN's statistics a kill cut short: its old copy back,
    # before anything reads the folder, and its validation owed again.
    rewrite_cut_short = checkpoint.recover_replaced(os.path.join(workdir, "checkpoints"))
    # A pruned model's widths: the run's own once it has a checkpoint (its train.init_from is
    # not read again, and may since have been deleted), else those of train.init_from.
    resuming = has_checkpoint(workdir)
    if resuming:
        require_training_run(workdir)
    source = workdir if resuming else config.train.get("init_from")
    config = widths_from(config, source, "--workdir" if resuming else "train.init_from")
    exp = setup(
        with_absolute_paths(config),  # as recorded: the same data from any working directory
        splits=("train", "validation"),
        why="training needs train and validation (videos given no split are split by "
        "dataset.split_fractions when the dataset is prepared: delete it to prepare it again)",
    )
    config = exp.config
    cfg, tcfg = config, config.train
    is_main = jax.process_index() == 0
    # State: restore the newest checkpoint that loads, else initialise.
    manager, state, start = _start_state(exp, workdir, is_main)
    owed = _validation_owed(manager, workdir, start, start in rewrite_cut_short)
    if start >= tcfg.num_steps and not owed:  # a finished run again, or num_steps lowered
        if is_main:
            print(
                f"{workdir} is already at step {start} of train.num_steps={tcfg.num_steps}: "
                f"nothing to train; raise --config.train.num_steps to continue",
                flush=True,
            )
        return {}
    is_finite = _finite_check(exp)
    _check_restored(state, start, workdir, is_finite)
    # Only for a run that trains: not before a refused resume or checkpoint, nor for a
    # finished run's no-op or its owed validation alone.
    warmup = warmup_steps(cfg.optimizer, tcfg.num_steps)
    if is_main and warmup != cfg.optimizer.warmup_steps and start < tcfg.num_steps:
        print(
            f"Note: optimizer.warmup_steps ({cfg.optimizer.warmup_steps}) is not shorter than "
            f"train.num_steps ({tcfg.num_steps}); warming up over {warmup} steps "
            f"({CLIPPED_WARMUP_FRACTION:.0%} of the run) instead",
            flush=True,
        )
    config_json = config_to_json(config)
    if is_main:  # only now: a rejected resume or init_from leaves the run's config as it was
        storage.path(workdir, "config.json").write_text(config_json)
    save = _checked_saver(manager, checkpoint_metadata(exp, config_json), is_finite)
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    memory = parallel.memory_report(
        (state.params, state.opt_state),
        exp.mesh,
        int(cfg.sharding.get("max_replicated_mib", DEFAULT_MAX_REPLICATED_MIB) * 2**20),
    )
    if is_main:
        print(
            f"{cfg.model.name}: {num_params:,} parameters; mesh {dict(exp.mesh.shape)}; "
            f"input {exp.input_shapes}\n{memory}",
            flush=True,
        )
        if cfg.optimizer.get("freeze"):
            print(frozen_summary(state.params, cfg.optimizer.freeze), flush=True)
        if exp.teacher is not None:
            distill = tcfg.distill
            print(
                f"Distilling from a {exp.teacher.describe(exp.input_shape[1:])}; temperature "
                f"{distill.temperature}, alpha {distill.alpha}",
                flush=True,
            )

    train_step, eval_step = compile_steps(exp)
    reconstructs = exp.objective.name == "reconstruction"
    picture = reconstruction_picture(exp, workdir) if reconstructs else None
    writer = MetricWriter(workdir, enabled=is_main)
    step_key = jax.random.key(cfg.seed + 1)
    history: list[tuple[int, dict]] = []
    last_eval: dict[str, Any] = {}
    tick, tick_step = time.perf_counter(), start

    preempted_at = None
    # The SIGTERM handler stays until the saves below have finished (a signal while the last
    # checkpoint is written would otherwise kill the process and lose it).
    with contextlib.ExitStack() as until_saved:
        try:
            with contextlib.ExitStack() as stack:
                batches = stack.enter_context(_data_map(exp, "train", "train", tcfg.num_steps))
                make_batch = lambda step: parallel.global_batch(batches(step), exp.batch_sharding)  # noqa: E731
                stack.enter_context(jax.set_mesh(exp.mesh))
                stack.enter_context(nn.logical_axis_rules(exp.rules))
                stop = until_saved.enter_context(PreemptionWatcher())
                batches_ahead = stack.enter_context(
                    contextlib.closing(prefetch(make_batch, range(start, tcfg.num_steps)))
                )

                def log_train(step: int) -> None:
                    """Writes the mean of the steps' metrics since the last log."""
                    nonlocal history, tick, tick_step
                    fetched = _check_finite(history, manager)
                    history = []
                    means = {k: float(np.mean([m[k] for _, m in fetched])) for k in fetched[0][1]}
                    rate = (step - tick_step) / (time.perf_counter() - tick)
                    tick, tick_step = time.perf_counter(), step
                    writer.write(step, "train", {**means, "steps_per_sec": rate})
                    if is_main:
                        print(progress_line(step, tcfg.num_steps, means, rate), flush=True)

                def validate(step: int, state: TrainState) -> tuple[TrainState, bool]:
                    """``(state, done)``: the validation of ``step`` logged (``last_eval``);
                    not done when a preemption notice stopped it."""
                    nonlocal last_eval
                    if not is_finite(state):  # name the step, not the evaluation's NaN logits
                        raise _non_finite("parameters or optimiser state", step, "", manager)
                    try:  # a long validation must not outlast the preemption's grace time
                        state = _precise_batch_stats(exp, state, make_batch, step, stop)
                        last_eval = evaluate(exp, eval_step, state.variables, "validation", stop)
                    except scoring.EvaluationInterrupted as e:
                        if is_main:
                            print(f"  validation @ {step}: preempted, {e}", flush=True)
                        return state, False
                    except MetricInputError as e:  # e.g. float16 overflow on validation clips
                        if is_main:  # the state is finite: log it, save, train on
                            print(f"  validation @ {step}: not scored: {e}", flush=True)
                    else:
                        writer.write(step, "validation", scalars(last_eval))
                        if is_main:
                            print(f"  validation @ {step}: {summary(last_eval)}", flush=True)
                    if picture is not None:
                        picture(state.variables, step)
                    return state, True

                def leave(step: int, state: TrainState, owes_validation: bool) -> None:
                    """Before a preemption ends the run: logs the steps since the last log
                    and saves ``step``, recording whether its validation is still owed."""
                    nonlocal history, preempted_at
                    if history:
                        log_train(step)
                    history = save(step, state, history, owed=owes_validation)
                    preempted_at = step

                if owed:  # the restored step's validation, which a preemption cut short
                    state, done = validate(start, state)
                    if not done:
                        preempted_at = start  # its checkpoint is saved, still owing it
                    elif tcfg.get("precise_bn_batches") and "batch_stats" in state.model_state:
                        # Precise BN's statistics, which it validated with, saved as the
                        # uninterrupted run saves them (Orbax writes a step once).
                        history = checkpoint.replace_step(
                            manager, start, lambda: save(start, state, history)
                        )
                ahead = batches_ahead if preempted_at is None else ()
                for step, batch in enumerate(ahead, start=start + 1):  # step = updates done
                    state, metrics = train_step(state, batch, step_key)
                    history.append((step, metrics))
                    is_last = step == tcfg.num_steps
                    validates = step % tcfg.eval_every == 0 or is_last

                    if stop():  # preemption notice: log, save this step and leave cleanly
                        leave(step, state, owes_validation=validates)
                        break

                    if step % tcfg.log_every == 0 or is_last:
                        log_train(step)

                    if validates:
                        state, done = validate(step, state)
                        if not done:
                            leave(step, state, owes_validation=True)
                            break

                    if step % tcfg.checkpoint_every == 0 or is_last:
                        history = save(step, state, history)  # never a state gone non-finite
        finally:  # an error mid-run still completes the saves already started
            manager.wait_until_finished()
    if preempted_at is not None:
        if is_main:
            print(
                f"Preempted: saved a checkpoint at step {preempted_at} in {workdir}; run the "
                f"same command to resume.",
                flush=True,
            )
        return {"preempted_at": preempted_at}
    return last_eval


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str, split: str) -> dict:
    """Restores the newest good checkpoint of ``workdir`` and evaluates it on ``split``."""
    require_trained(workdir)  # before the dataset or an empty checkpoints folder is made
    if jax.process_index() == 0 and (changed := _changed_from_training(config, workdir)):
        print(f"Note: evaluating with {changed}; the numbers are not those of the run as it "
              f"was trained", flush=True)  # fmt: skip
    config = widths_from(config, workdir, "--workdir")
    model_folder = _is_model_folder(workdir)
    if not model_folder:
        _check_model_fits(config, workdir)  # before setup prepares the dataset
    exp = setup(config, splits=(split,), distill=False)
    if model_folder:
        return _evaluate_model_folder(exp, workdir, split)
    manager = checkpoint.reading_manager(os.path.join(workdir, "checkpoints"))
    restored = restore_variables(exp, manager)
    if restored is None:  # every saved step failed to restore (each one is logged)
        raise UserError(f"no checkpoint in {workdir!r} restores (see the warnings above)")
    variables, step = restored
    _, eval_step = compile_steps(exp)
    from vjax.data.datasets import stores_whole_videos

    views = stores_whole_videos(exp.builder) and exp.objective.classifies
    run = evaluate_views if views else evaluate
    return {"step": step, **run(exp, eval_step, variables, split)}


def _check_model_fits(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Raises CheckpointMismatchError when ``config``'s model does not fit the newest step of
    ``workdir``, before any dataset is prepared (for Kinetics, hours): its parameters, built
    with the checkpoint's heads and input shapes, from an abstract initialisation against
    the saved shapes. Heads of another dataset are found at the restore (the classes are
    known once the data is); a step that cannot be read is left to the restore's fallback."""
    from vjax.loaded import abstract_params

    manager = checkpoint.reading_manager(os.path.join(workdir, "checkpoints"))
    step = manager.latest_step()
    try:
        metadata = checkpoint.step_metadata(manager, step)
        saved = manager.item_metadata(step)["state"]["params"]
    except Exception:  # noqa: BLE001 (an unreadable newest step: the restore names it)
        return
    recorded = metadata.get("input_shapes") or metadata.get("clip_shape")
    if recorded is None or not metadata.get("class_names"):
        return
    shapes = (
        {name: tuple(shape) for name, shape in recorded.items()}
        if isinstance(recorded, dict)
        else tuple(recorded)
    )
    try:
        params = abstract_params(config, metadata, shapes)
    except UserError:
        raise
    except Exception:  # noqa: BLE001 (a config mistake: setup's check_config names it)
        return
    checkpoint.check_compatible(
        {"params": saved}, {"params": params}, f"step {step} in {manager.directory}"
    )


# What the model saw in training: evaluating with other values scores another input.
_AS_TRAINED = ("input.mean", "input.std", "input.num_frames", "input.frame_stride", "input.fps",
               "input.crop_size", "dataset.name")  # fmt: skip


def _changed_from_training(config: ml_collections.ConfigDict, workdir: str) -> str:
    """The input settings (normalisation, clip, dataset) where ``config`` differs from the
    run's saved ``config.json`` ("input.std=(0.5, 0.5, 0.5) (trained with ...)"), or ""."""
    path = storage.path(workdir, "config.json")
    if not path.is_file():
        return ""
    try:
        trained = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:  # a copy of the checkpoint's record
        log.warning("%s is not readable JSON (%s); not compared with this config", path, e)
        return ""
    if not isinstance(trained, dict):
        return ""
    changed = []
    for key in _AS_TRAINED:
        section, field = key.split(".")
        now, then = config.get(section, {}).get(field), trained.get(section, {}).get(field)
        if then is not None and now is not None and _plain(now) != _plain(then):
            changed.append(f"{key}={_plain(now)} (trained with {_plain(then)})")
    return ", ".join(changed)


def _plain(value: Any) -> Any:
    return tuple(value) if isinstance(value, list | tuple) else value


def _is_model_folder(workdir: str) -> bool:
    """True for a ``vjax quantize`` or ``vjax prune`` folder: a model without training state
    (its checkpoint's metadata says so)."""
    if not storage.path(workdir, "checkpoints", "0", "metadata", "metadata").is_file():
        return False
    metadata = checkpoint.read_metadata(workdir)  # an unreadable one: one line, not a traceback
    return bool(metadata.get("quantization") or metadata.get("pruning"))


def _evaluate_model_folder(exp: Experiment, workdir: str, split: str) -> dict:
    """Evaluates the model of a ``vjax quantize`` / ``vjax prune`` folder on ``split`` with
    the data and views of ``exp``'s config (its variables replicated on every device)."""
    from vjax.data.datasets import stores_whole_videos
    from vjax.loaded import load

    _, model, variables = load(workdir)
    cfg = exp.config.input
    eval_step = jax.jit(
        make_eval_step(model, mean=tuple(cfg.mean), std=tuple(cfg.std)),
        compiler_options=compiler_options(),
    )
    exp = dataclasses.replace(exp, model=model)
    run = evaluate_views if stores_whole_videos(exp.builder) else evaluate
    return {"step": 0, **run(exp, eval_step, variables, split)}
