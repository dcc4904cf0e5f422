"""Knowledge distillation (``train.distill``): the student minimises
``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * its own task loss`` (Hinton et al.
2015), each head distilled for a multi-task model. The teacher is any vjax checkpoint or
``vjax convert`` folder, of any family; it runs frozen inside the same jitted, sharded train
step, on the same augmented batch, resampled to the teacher's own clip when the two differ.

>>> teacher = load_teacher("runs/demo/vivit", class_names, clip_shape=(4, 16, 16, 3))
>>> objective = distilled(objectives.get("classification"), teacher, temperature=4.0, alpha=0.5)
>>> step = jax.jit(make_train_step(model, tx, objective=objective, mean=mean, std=std))
>>> frozen = jax.device_put(teacher.variables, teacher.shardings(mesh, rules))
>>> state, metrics = step(state, batch, key, frozen)      # the teacher's variables, frozen
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vjax import parallel
from vjax.config_utils import ConfigError
from vjax.flops import abstract_variables
from vjax.models.registry import model_modalities
from vjax.objectives import OBJECTIVES, Objective, scored_logits
from vjax.objectives import get as objective_named
from vjax.step import batched, model_input
from vjax.tasks import task_outputs

log = logging.getLogger(__name__)


def kl_divergence(
    teacher_logits: jax.Array,
    student_logits: jax.Array,
    temperature: float,
    multi_label: bool,
    sum_classes: bool = False,
) -> jax.Array:
    """Per-example ``KL(teacher_T || student_T)`` ``(B,)`` of logits softened by ``temperature``:
    over the classes' softmax, or (``multi_label``) each class's sigmoid (Bernoulli) KL
    averaged over the classes, or summed with ``sum_classes`` (as its task loss sums them:
    ``multi_label_sum``; averaged, the teacher's term would weigh 1/K of the ``alpha`` asked)."""
    t = teacher_logits.astype(jnp.float32) / temperature
    s = student_logits.astype(jnp.float32) / temperature
    if multi_label:
        p = jax.nn.sigmoid(t)
        on = p * (jax.nn.log_sigmoid(t) - jax.nn.log_sigmoid(s))
        off = (1.0 - p) * (jax.nn.log_sigmoid(-t) - jax.nn.log_sigmoid(-s))
        return (on + off).sum(axis=-1) if sum_classes else (on + off).mean(axis=-1)
    log_p = jax.nn.log_softmax(t, axis=-1)
    return (jnp.exp(log_p) * (log_p - jax.nn.log_softmax(s, axis=-1))).sum(axis=-1)


def distillation_losses(
    student_logits: Any,
    teacher_logits: Any,
    temperature: float,
    multi_label: bool = False,
    sum_classes: bool = False,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``(loss, metrics)``: ``T^2`` times the batch-mean KL, summed over tasks (the task losses
    are summed the same way); several tasks add ``loss_distill_<task>``."""
    students, teachers = task_outputs(student_logits), task_outputs(teacher_logits)
    metrics = {
        f"loss_distill_{task}": temperature**2
        * kl_divergence(teachers[task], out, temperature, multi_label, sum_classes).mean()
        for task, out in students.items()
    }
    loss = sum(metrics.values())
    return loss, {"loss_distill": loss, **(metrics if len(students) > 1 else {})}


def resample_clip(video: jax.Array, clip_shape: Sequence[int]) -> jax.Array:
    """float32 ``(B, *clip_shape)`` of frames ``(B, T, H, W, C)``: frames taken at evenly spaced
    times (nearest index: fewer frames stride, more frames repeat), space resized bilinearly.
    Shapes are static, so a teacher on the student's clip costs nothing."""
    video = jnp.asarray(video, jnp.float32)
    frames, height, width = clip_shape[:3]
    if frames != video.shape[1]:
        index = ((np.arange(frames) + 0.5) * video.shape[1] / frames).astype(np.int32)
        video = video[:, index]
    if (height, width) != video.shape[2:4]:
        shape = (video.shape[0], frames, height, width, video.shape[-1])
        video = jax.image.resize(video, shape, "bilinear")
    return video


@dataclasses.dataclass(frozen=True, eq=False)
class Teacher:
    """A frozen teacher: its module, its variables (host arrays), the normalisation and clip
    ``(T, H, W, C)`` it was trained with, and where it came from."""

    path: str
    module: nn.Module
    variables: Any
    mean: tuple[float, ...]
    std: tuple[float, ...]
    clip_shape: tuple[int, ...]
    # The teacher's input shapes without the batch axis (vjax.load's input_shapes): its clip,
    # or {modality: shape} for an audio-visual teacher, which also hears the batch's audio.
    input_shapes: Any = None

    def logits(self, variables: Any, batch: Mapping[str, jax.Array]) -> Any:
        """The teacher's logits of the student's batch: uint8 ``video`` resampled to its clip
        and normalised with its own mean and std, and what else it takes (``audio``) as it is
        (:func:`vjax.step.model_input`; inside the step: traced, not a pipeline)."""
        if "video" in model_modalities(self.module):
            batch = {**batch, "video": resample_clip(batch["video"], self.clip_shape)}
        inputs = model_input(self.module, batch, self.mean, self.std)
        return self.module.apply(variables, inputs, train=False)

    def shardings(self, mesh: jax.sharding.Mesh, rules: Any) -> Any:
        """Shardings of the teacher's variables by the same logical axis rules as the student."""
        shapes = self.clip_shape if self.input_shapes is None else self.input_shapes
        abstract = abstract_variables(self.module, batched(shapes, 1))
        parallel.check_rules_cover(abstract, rules, "teacher's variables")
        parallel.check_divisible(abstract, mesh, rules)
        return parallel.logical_shardings(abstract, mesh, rules)

    def describe(self, student_clip: Sequence[int]) -> str:
        """One line for the log: what teaches, and how the batch reaches it."""
        size = sum(np.size(x) for x in jax.tree.leaves(self.variables["params"]))
        clip = tuple(self.clip_shape)
        how = "the same clip" if clip == tuple(student_clip) else (
            f"clip {clip} resampled from the student's {tuple(student_clip)} (frames by evenly "
            f"spaced index, space bilinear)"
        )  # fmt: skip
        return f"{type(self.module).__name__} teacher from {self.path} ({size:,} params), {how}"


def _plain(value: Any) -> Any:
    """Class names as plain JSON values (tuples to lists), so equal names compare equal."""
    return json.loads(json.dumps(value))


def clip_seconds(config: Any) -> float | None:
    """Seconds a training clip of ``config`` spans: ``num_frames x frame_stride`` frames at
    ``input.fps``, or at the dataset's stored rate (``dataset.fps``); None when it is each
    video's own: the rate is the video's, or ``input.sampling="tsn"`` spreads the frames over
    the whole video (or the config says neither, as a converted model's)."""
    inputs, dataset = config.get("input"), config.get("dataset")
    rate = (inputs.get("fps") if inputs else 0) or (dataset.get("fps") if dataset else 0)
    if not rate or not inputs or "num_frames" not in inputs or inputs.get("sampling") == "tsn":
        return None
    return inputs.num_frames * inputs.get("frame_stride", 1) / rate


def load_teacher(
    path: str,
    class_names: Any,
    clip_shape: Sequence[int],
    multi_label: bool = False,
    audio_shape: Sequence[int] | None = None,
    seconds: float | None = None,
) -> Teacher:
    """The teacher at ``path``, after the start-up checks: it exists, its classes (names and
    order, per task) are the student's, it is single- or multi-label as the data is, its clip
    has the student's channels and, where it hears sound, its spectrograms are the shape the
    student's data yields (``audio_shape``: ``(input.audio.frames, mel_bins)``, None without).
    A teacher trained on clips of another span than the student's ``seconds`` (its frames are
    resampled by count, not time, so it sees motion at another speed) is warned about."""
    from vjax.errors import NotFoundError
    from vjax.loaded import load

    try:
        loaded = load(path)
    except NotFoundError as e:
        raise ConfigError(f"train.distill.teacher: {e}") from None
    trained_by = getattr(loaded.module, "OBJECTIVE", None) or loaded.config.train.get(
        "objective", "classification"
    )
    if trained_by not in OBJECTIVES:  # one of the teacher's run's own
        raise ConfigError(
            f"train.distill.teacher {path!r} was trained by train.objective={trained_by!r}, "
            f"which this run does not know: register it in this run's config file too"
        )
    if not objective_named(trained_by).classifies:
        raise ConfigError(
            f"train.distill.teacher {path!r} was trained by train.objective={trained_by!r} "
            f"and predicts no classes: fine-tune it on labels first (train.init_from), then "
            f"distil from that"
        )
    if _plain(loaded.class_names) != _plain(class_names):
        raise ConfigError(
            f"train.distill.teacher {path!r} predicts classes {_plain(loaded.class_names)}, "
            f"but the student's data has {_plain(class_names)}: a teacher must have the "
            f"student's classes in the same order (train it on the same dataset)"
        )
    if bool(loaded.metadata.get("multi_label", False)) != multi_label:
        kinds = ("several classes per video", "one class per video")
        teacher_kind, data_kind = (kinds[0], kinds[1]) if not multi_label else kinds[::-1]
        raise ConfigError(
            f"train.distill.teacher {path!r} predicts {teacher_kind}, but the student's data "
            f"has {data_kind}: distil from a teacher trained with the same objective"
        )
    clip = tuple(int(n) for n in loaded.clip_shape)
    if clip[-1] != clip_shape[-1]:
        raise ConfigError(
            f"train.distill.teacher {path!r} takes {clip[-1]} channels per frame, the "
            f"student's clips have {clip_shape[-1]}: frames and size are resampled, channels "
            f"cannot be"
        )
    heard = loaded.input_shapes.get("audio") if isinstance(loaded.input_shapes, dict) else None
    if heard is not None and tuple(heard) != tuple(audio_shape or ()):
        given = (
            f"spectrograms of {tuple(audio_shape)} (frames, mel bins)"
            if audio_shape
            else "no spectrograms (config.input.audio is not set)"
        )
        raise ConfigError(
            f"train.distill.teacher {path!r} hears spectrograms of {tuple(heard)} (frames, mel "
            f"bins), but the student's data yields {given}: set config.input.audio like the "
            f"teacher's (frames={heard[0]}, mel_bins={heard[1]}) or distil from a video teacher"
        )
    taught = clip_seconds(loaded.config)
    if seconds and taught and not 0.9 <= taught / seconds <= 1.1:
        log.warning(
            "train.distill.teacher %r was trained on clips of %.2f s, the student's span "
            "%.2f s: resampled to its %d frames, the teacher sees motion %.2gx as fast as in "
            "training; sample the student's clips as the teacher's (input.num_frames, "
            "frame_stride, fps) unless this is meant",
            path, taught, seconds, clip[0], seconds / taught,
        )  # fmt: skip
    input_config = loaded.config.input
    return Teacher(
        path, loaded.module, loaded.variables, tuple(input_config.mean),
        tuple(input_config.std), clip, loaded.input_shapes,
    )  # fmt: skip


def distilled(
    objective: Objective, teacher: Teacher, temperature: float, alpha: float
) -> Objective:
    """``objective`` (a labelled one) with its training loss mixed with the distillation loss:
    ``alpha * T^2 * KL + (1 - alpha) * task loss``, logged as ``loss`` (the total),
    ``loss_task`` and ``loss_distill``, beside ``top1_teacher`` (the teacher's accuracy on the
    same batches: a teacher fed wrongly shows here). Its loss takes the teacher's variables
    as ``frozen`` (the train step's fourth argument); validation is the objective's own."""
    if objective.losses is None:
        raise ConfigError(
            f"train.distill needs a labelled objective (classification or multi_label), not "
            f"train.objective={objective.name!r}"
        )
    if not temperature > 0:
        raise ConfigError(f"train.distill.temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"train.distill.alpha must be in [0, 1], got {alpha}")

    def loss(
        model: nn.Module,
        variables: Any,
        batch: dict[str, jax.Array],
        inputs: Any,
        key: jax.Array,
        mutable: Sequence[str] = (),
        frozen: Any = None,
        **options: Any,
    ) -> tuple[jax.Array, dict[str, jax.Array], Any]:
        if frozen is None:
            raise ValueError("a distilled loss needs the teacher's variables: frozen=...")
        task_loss, metrics, model_state, logits = scored_logits(
            objective.losses, model, variables, batch, inputs, key, mutable, **options
        )
        targets = teacher.logits(frozen, batch)
        kd_loss, kd_metrics = distillation_losses(
            logits, targets, temperature, objective.multi_label, objective.sum_classes
        )
        total = alpha * kd_loss + (1.0 - alpha) * task_loss
        scored = objective.losses(targets, batch, **options)[1]  # the teacher's top-1, if any
        teacher_top1 = {"top1_teacher": scored["top1"]} if "top1" in scored else {}
        metrics = {**metrics, **kd_metrics, "loss_task": task_loss, **teacher_top1}
        return total, {**metrics, "loss": total}, model_state

    return dataclasses.replace(objective, loss=loss)


def from_config(
    config: Any, objective: Objective, class_names: Any, clip_shape: Sequence[int]
) -> tuple[Objective, Teacher | None]:
    """``(objective to train, teacher)``: ``objective`` and None without
    ``train.distill.teacher``, else the distilled objective and its checked teacher."""
    settings = config.train.get("distill") or {}
    if not settings.get("teacher"):
        return objective, None
    audio = config.input.get("audio")
    audio_shape = (int(audio.frames), int(audio.mel_bins)) if audio else None
    teacher = load_teacher(
        settings["teacher"],
        class_names,
        clip_shape,
        objective.multi_label,
        audio_shape,
        clip_seconds(config),
    )
    temperature, alpha = settings.get("temperature", 4.0), settings.get("alpha", 0.5)
    return distilled(objective, teacher, temperature, alpha), teacher
