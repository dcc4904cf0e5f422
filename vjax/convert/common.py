"""What every converter shares: a checked parameter tree builder, the config it returns and the
folder it writes (an Orbax checkpoint with metadata, the same layout training writes)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from vjax.errors import UserError

if TYPE_CHECKING:  # imported where a config is made: the converters' config helpers and
    import ml_collections  # vjax bench train --peers run where ml_collections is not installed

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ConversionError(UserError):
    """A source checkpoint that does not fit the target model (missing/extra key, bad shape)."""


def assign(tree: dict, path: str, value: Any, expected_shape: Sequence[int] | None = None) -> None:
    """Sets ``tree[a][b][c] = value`` for ``path = "a/b/c"``, checking the shape when given.

    Raises ConversionError naming the parameter and both shapes on a mismatch, or when the
    path is already set (two source tensors mapped onto one parameter).
    """
    value = np.asarray(value)
    if expected_shape is not None and tuple(value.shape) != tuple(expected_shape):
        raise ConversionError(
            f"{path}: source has shape {tuple(value.shape)}, model expects {tuple(expected_shape)}"
        )
    *parents, leaf = path.split("/")
    node = tree
    for key in parents:
        node = node.setdefault(key, {})
    if leaf in node:
        raise ConversionError(f"{path}: assigned twice")
    node[leaf] = value


def check_tree_matches(converted: Mapping, expected: Mapping, where: str = "") -> None:
    """Raises ConversionError listing every key missing from/extra in ``converted`` and every
    shape that differs from ``expected`` (e.g. ``jax.eval_shape`` of ``model.init``)."""
    problems: list[str] = []

    def walk(a: Any, b: Any, prefix: str) -> None:
        if isinstance(b, Mapping):
            if not isinstance(a, Mapping):
                problems.append(f"{prefix}: expected a sub-tree, got an array")
                return
            for key in sorted(set(a) | set(b)):
                path = f"{prefix}/{key}" if prefix else str(key)
                if key not in a:
                    problems.append(f"{path}: missing (model expects {_shape(b[key])})")
                elif key not in b:
                    problems.append(f"{path}: not in the model (source has {_shape(a[key])})")
                else:
                    walk(a[key], b[key], path)
        elif tuple(np.shape(a)) != tuple(b.shape):
            problems.append(
                f"{prefix}: source has shape {tuple(np.shape(a))}, model expects {tuple(b.shape)}"
            )

    walk(converted, expected, "")
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise ConversionError(f"{where}{'; '.join(problems[:10])}{more}")


def _shape(x: Any) -> Any:
    return "a sub-tree" if isinstance(x, Mapping) else tuple(np.shape(x))


def pretrained_config(
    model: Mapping[str, Any],
    clip: Sequence[int],
    class_names: Sequence[str] | Mapping[str, Sequence[str]],
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    source: str = "",
    frame_stride: float = 1,
    **sampling: float,
) -> ml_collections.ConfigDict:
    """The config a converter returns: the model section, the clip ``(T, H, W, C)`` the weights
    were trained on, how its frames were sampled (``frame_stride``; ``sampling``: e.g. ``fps``,
    ``test_crop_fraction``: what ``vjax predict`` cuts a file by), normalisation, class names
    and where the weights came from."""
    import ml_collections

    return ml_collections.ConfigDict(
        {
            "model": dict(model),
            "input": {
                "clip": list(clip),
                "frame_stride": frame_stride,
                **sampling,
                "mean": list(mean),
                "std": list(std),
            },
            "class_names": _plain(class_names),
            "train": {"dtype": "float32"},
            "source": source,
        }
    )


def _plain(class_names: Any) -> list[str] | dict[str, list[str]]:
    """Class names as JSON-ready lists: one list, or ``{task: names}`` for several heads."""
    from vjax.tasks import is_multitask, task_class_names

    return task_class_names(class_names) if is_multitask(class_names) else list(class_names)


def _has(config: Any, dotted: str) -> bool:
    """Whether ``config`` (a ConfigDict or a dict) holds the dotted key."""
    node = config
    for part in dotted.split("."):
        try:
            node = node[part]
        except (KeyError, TypeError, AttributeError, IndexError):
            return False
    return True


def expected_params(config: ml_collections.ConfigDict) -> dict | None:
    """The parameter shapes (``jax.ShapeDtypeStruct``) of the model ``config`` (a
    :func:`pretrained_config`) builds for its classes and ``input.clip``, from an abstract
    initialisation: the tree :func:`save_converted` checks converted parameters against. None
    for a model that hears, where the config records no ``input.audio``."""
    from vjax.loaded import abstract_params, plain_module
    from vjax.models import model_modalities
    from vjax.preflight import model_input_shapes

    metadata = {"class_names": _plain(config.class_names)}
    module = plain_module(config, metadata)
    if "audio" in model_modalities(module) and not config.input.get("audio"):
        return None  # the spectrogram's size is not recorded: given at the call
    shapes = model_input_shapes(module, config.model.name, tuple(config.input.clip), config.input)
    return abstract_params(config, metadata, shapes)


def save_converted(out_dir: str, config: ml_collections.ConfigDict, variables: Mapping) -> str:
    """Writes converted ``variables`` as step 0 of an Orbax checkpoint under ``out_dir`` (with
    the config as metadata), so ``vjax.load(out_dir)`` opens it. Returns the folder. A folder
    that already holds a checkpoint is refused (ConversionError): the old model would stay."""
    import flax.linen as nn

    from vjax import checkpoint
    from vjax.checkpoint_paths import require_new_output
    from vjax.config_utils import config_to_json

    require_new_output(out_dir, ConversionError)
    missing = [name for name in ("class_names", "input.clip", "model.name", "train.dtype")
               if not _has(config, name)]  # fmt: skip
    if missing:
        raise ConversionError(
            f"the config lacks {', '.join(missing)}: build it with pretrained_config(model "
            f"config, clip, class names)"
        )
    variables = dict(nn.meta.unbox(variables))  # plain arrays, not logical-axis boxes
    params = variables.pop("params")
    # Checked before anything is written: a tree of another width, head or clip size loaded
    # and then failed at the first call, in Flax's parameter-shape check.
    expected = expected_params(config)
    if expected is not None:
        check_tree_matches(params, expected, f"{config.model.name}: ")
    metadata = {
        "config": json.loads(config_to_json(config)),
        "class_names": _plain(config.class_names),
        "clip_shape": list(config.input.clip),
    }
    state = {"step": np.zeros((), np.int32), "params": params, "model_state": variables}
    checkpoint.write_single(os.path.join(out_dir, "checkpoints"), state, metadata)
    return out_dir
