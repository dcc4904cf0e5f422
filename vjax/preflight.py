"""What a config must satisfy before any dataset is prepared or anything compiles: only keys vjax
reads (a misspelt one is named, not ignored), counts of at least one (steps, intervals, batch
size, checkpoints kept), a mesh that fits the devices, a batch that splits over them, valid
input options, an optimiser that can be built (a known name, rates and decays not negative, a
layer decay in (0, 1]), and a model that can take the clip (and, for an audio model, the
spectrogram of ``config.input.audio``). Each failure is a
:class:`~vjax.config_utils.ConfigError` naming the config section (the commands print it as
one line).

>>> mesh = check_config(config)   # then prepare data, build the state, compile
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import ml_collections

from vjax import parallel
from vjax.config_utils import ConfigError, check_known_keys
from vjax.errors import UserError, one_line
from vjax.models.registry import compute_dtype, model_modalities
from vjax.optim import make_optimizer

# Any number of classes builds the model for its checks; the dataset's is known only later.
_CHECK_CLASSES = 2

# Counts that must be at least 1, with what they count: the training loop divides by the
# intervals, the schedule decays over num_steps, and keep_checkpoints=0 makes Orbax delete
# every checkpoint, the ones saved before this run too.
AT_LEAST_ONE = {
    "train.num_steps": "training steps",
    "train.log_every": "steps between logged metrics",
    "train.eval_every": "steps between validations",
    "train.checkpoint_every": "steps between checkpoints",
    "train.keep_checkpoints": "checkpoints kept; 0 would delete every one",
    "input.global_batch_size": "clips per step",
}


@contextlib.contextmanager
def _section(name: str, fix: str = "") -> Iterator[None]:
    """Turns a ValueError of the checks inside (a model's, the mesh's) into a ConfigError that
    names the config section ``name``."""
    try:
        yield
    except UserError:
        raise
    except ValueError as e:
        raise ConfigError(f"config.{name}: {one_line(e)}" + (f"; {fix}" if fix else "")) from e


def check_config(
    config: ml_collections.ConfigDict, devices: Sequence[jax.Device] | None = None
) -> jax.sharding.Mesh:
    """Checks the config against ``devices`` (default: all) without touching any data and
    returns its mesh."""
    from vjax.convert.surgery import INFLATIONS
    from vjax.data.datasets import check_dataset_name, planned_clip_shape
    from vjax.data.transforms import InputOptions
    from vjax.models import build_model
    from vjax.models.precise_bn import has_frozen_bn
    from vjax.step import batched, check_param_dtype

    check_known_keys(config)
    check_counts(config)
    devices = list(devices if devices is not None else jax.devices())
    with _section(
        "sharding.mesh",
        f"set --config.sharding.mesh for the {len(devices)} device(s) here (one axis may be -1: "
        f"all remaining devices)",
    ):
        mesh = parallel.make_mesh(
            config.sharding.mesh, devices, config.sharding.get("dcn_mesh", ())
        )
    with _section("sharding"):
        parallel.check_rule_axes(config.sharding.rules, mesh)
    batch_size = config.input.global_batch_size
    if batch_size % mesh.size:
        raise ConfigError(
            f"input.global_batch_size ({batch_size}) must be divisible by the number of "
            f"devices ({mesh.size}); set --config.input.global_batch_size"
        )
    if config.get("seed", 0) < 0:
        raise ConfigError(f"seed must be >= 0 (NumPy's generators take none below), got "
                          f"{config.seed!r}")  # fmt: skip
    if config.input.get("num_workers", 0) < -1:
        raise ConfigError(f"input.num_workers must be >= -1 (-1: one per core), got "
                          f"{config.input.num_workers!r}")  # fmt: skip
    check_dataset_name(config.dataset.name)
    with _section("input"):
        InputOptions.from_config(config.input)  # every option, whatever the dataset uses
        mean, std = config.input.get("mean", (0, 0, 0)), config.input.get("std", (1, 1, 1))
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"input.mean and input.std are one value per RGB channel, the "
                             f"std's above 0; got {tuple(mean)} and {tuple(std)}")  # fmt: skip
        if not (0 <= min(mean) <= max(mean) <= 1 and max(std) <= 1):  # e.g. mmaction's 123.675
            raise ValueError(
                f"input.mean and input.std are in 0..1 units (frames are divided by 255 first), "
                f"got {tuple(mean)} and {tuple(std)}: divide 0..255 values by 255 (ImageNet's: "
                f"(0.485, 0.456, 0.406) and (0.229, 0.224, 0.225))"
            )
        clip = planned_clip_shape(config.dataset, config.input)
    with _section("optimizer"):
        tx = make_optimizer(config.optimizer, config.train.num_steps)
    with _section("train"):
        compute_dtype(config.train.dtype)
        check_param_dtype(config.train.get("param_dtype", "float32"))
        inflation = config.train.get("init_inflation", "central")
        if inflation not in INFLATIONS:
            raise ValueError(f"train.init_inflation must be one of {INFLATIONS}, got {inflation!r}")
    with _section("model"):
        model = build_model(config.model, _CHECK_CLASSES, config.train.dtype)
        if clip is not None:
            shapes = model_input_shapes(model, config.model.name, clip, config.input)
            model.check_input(batched(shapes, batch_size))
            _check_freeze(config.optimizer.get("freeze", ""), model, tx, shapes)
    if has_frozen_bn(model) and config.train.get("precise_bn_batches", 0):
        raise ConfigError(
            "train.precise_bn_batches recomputes the BatchNorm statistics that model.frozen_bn "
            "keeps fixed (PySlowFast's precise BN skips frozen layers); set "
            "--config.train.precise_bn_batches=0 or --config.model.frozen_bn=False (a "
            "recurrent_over backbone's: model.backbone's frozen_bn)"
        )
    return mesh


def _check_freeze(pattern: str, model: Any, tx: Any, shapes: Any) -> None:
    """``optimizer.freeze`` against the model's parameter names (:func:`~vjax.optim.frozen_mask`
    raises when it matches none or all), before a dataset is prepared: from an abstract
    initialisation, no array made. A pattern naming the classifier waits for the build: the
    heads are named by the dataset's tasks, unknown here (the check's model has one head)."""
    from vjax.step import make_init_state

    if pattern and "classifier" not in pattern:
        jax.eval_shape(make_init_state(model, tx, shapes), jax.random.key(0))


def check_counts(config: ml_collections.ConfigDict) -> None:
    """Raises a ConfigError naming the first of :data:`AT_LEAST_ONE` set below 1 (a key the
    config lacks is left to the code that reads it)."""
    for key, what in AT_LEAST_ONE.items():
        section, name = key.split(".")
        value = config[section].get(name)
        if value is not None and value < 1:
            raise ConfigError(
                f"{key} ({what}) must be >= 1, got {value}; set --config.{key}=N with N >= 1"
            )


def model_input_shapes(
    model: Any, model_name: str, clip_shape: tuple[int, ...], input_config: Any
) -> Any:
    """The model input's shape without the batch axis, by the modalities the model takes
    (:func:`vjax.models.model_modalities`): the data's clip for ``video``, ``(input.audio.frames,
    input.audio.mel_bins)`` for ``audio``; one modality's shape, or ``{modality: shape}``. A
    model that takes audio on a config without ``input.audio`` is an error naming both."""
    modalities = model_modalities(model)
    audio = input_config.get("audio")
    shapes: dict[str, tuple[int, ...]] = {}
    for name in modalities:
        if name == "video":
            shapes[name] = tuple(clip_shape)
        elif name == "audio":
            if not audio:
                raise ConfigError(
                    f"model {model_name!r} takes audio (its modalities are {modalities}), but "
                    f"config.input.audio is not set, so the data yields no spectrograms: set "
                    f"config.input.audio (frames, mel_bins, ...) for a dataset with sound, or "
                    f"train a video model (for MBT: --config.model.modalities=\"('video',)\")"
                )
            shapes[name] = (int(audio.frames), int(audio.mel_bins))
        else:
            raise ConfigError(f"model {model_name!r} takes {name!r}, which no dataset yields")
    return shapes[modalities[0]] if len(modalities) == 1 else shapes
