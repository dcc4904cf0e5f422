"""Model registry: families plug in by name, configs build them with a checked set of fields."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from vjax.models.layers import NumClasses
from vjax.registration import KNOWN_ONCE_RUN, Registry
from vjax.suggest import closest_hint

_MODELS = Registry("model name", lambda cls: cls)
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def register(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator that makes a model buildable as ``config.model.name = name``.

    A model is a Flax module with the fields ``num_classes`` (the head's size, or ``{task:
    size}``) and ``dtype`` (the compute dtype ``train.dtype`` builds it with), a
    ``check_input(input_shape)`` that raises a ValueError for a clip it cannot take (vjax calls
    it before compiling anything) and ``__call__(video, *, train)``. Registering the same class
    again (a notebook cell or a config file run twice) replaces it.

    >>> @register("mean_mlp")
    ... class MeanMLP(nn.Module):
    ...     num_classes: int
    ...     dtype: Any = jnp.float32
    ...     def check_input(self, input_shape): ...   # any clip
    ...     @nn.compact
    ...     def __call__(self, video, *, train):
    ...         return nn.Dense(self.num_classes, dtype=self.dtype)(video.mean((1, 2, 3)))
    """

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        lacks = _lacks(cls)
        if lacks:
            raise TypeError(f"model {name!r} ({cls.__qualname__}) lacks {'; '.join(lacks)}")
        _MODELS.claim(name, cls)
        return cls

    return add


def _lacks(cls: type[nn.Module]) -> list[str]:
    """What of the model interface (:func:`register`) ``cls`` lacks, each with why vjax needs it."""
    fields = set(model_fields(cls)) if dataclasses.is_dataclass(cls) else set()
    needs = {
        "num_classes": "a field num_classes (vjax builds the head for the dataset's classes)",
        "dtype": "a field dtype, e.g. `dtype: Any = jnp.float32` (train.dtype's compute dtype)",
    }
    lacks = [why for field, why in needs.items() if field not in fields]
    if not callable(getattr(cls, "check_input", None)):
        lacks.append(
            "a method check_input(self, input_shape) that raises a ValueError for a clip the "
            "model cannot take (vjax calls it before compiling; `pass` takes any)"
        )
    return lacks


def compute_dtype(name: str) -> Any:
    """The compute dtype ``train.dtype`` names; a ValueError naming the valid ones otherwise."""
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {name!r}; valid: {', '.join(_DTYPES)}")
    return _DTYPES[name]


def dtype_name(dtype: Any) -> str:
    """The config name (``train.dtype``) of a compute dtype: the inverse of build_model's."""
    names = {jnp.dtype(v): k for k, v in _DTYPES.items()}
    if jnp.dtype(dtype) not in names:
        raise ValueError(f"dtype {dtype!r} has no config name; valid: {', '.join(_DTYPES)}")
    return names[jnp.dtype(dtype)]


def model_modalities(model: Any) -> tuple[str, ...]:
    """The inputs a model takes, by batch key: its ``modalities`` (AST ``("audio",)``, MBT
    ``("video", "audio")`` or one of them), ``("video",)`` for every other model. One name:
    the model is called with that array; several: with a dict of them."""
    return tuple(getattr(model, "modalities", ("video",)))


def available_models() -> list[str]:
    return sorted(_MODELS)


def model_fields(cls: type[nn.Module]) -> list[str]:
    """The constructor fields a config may set (flax's own ``parent``/``name`` excluded)."""
    return [f.name for f in dataclasses.fields(cls) if f.init and f.name not in ("parent", "name")]


def config_fields(name: str) -> dict[str, dataclasses.Field]:
    """``{field: dataclass field}`` (default and type) of the registered model ``name`` (empty
    for an unknown name): the fields a config's ``model`` section may set (e.g. ``remat``)."""
    import vjax.models  # noqa: F401  (registers the built-in families)

    cls = _MODELS.get(name)
    if cls is None:
        return {}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    return {k: fields[k] for k in model_fields(cls)}


def build_model(
    model_config: Mapping[str, Any], num_classes: NumClasses, dtype: str = "float32"
) -> nn.Module:
    """Builds the registered model ``model_config['name']`` with the remaining keys as fields.

    Unknown names and fields raise a ValueError that lists the closest valid ones.
    """
    import vjax.models  # noqa: F401  (registers the built-in families)

    kwargs = dict(model_config)
    name = kwargs.pop("name")
    if name not in _MODELS:
        hint = closest_hint(name, available_models()) or (
            f"; a model of your own {KNOWN_ONCE_RUN}; in Python, import it before vjax.load"
        )
        raise ValueError(f"unknown model {name!r}{hint}")
    cls = _MODELS[name]
    fields = model_fields(cls)
    for key in kwargs:
        if key not in fields:
            raise ValueError(
                f"unknown config key 'model.{key}' for model {name!r}{closest_hint(key, fields)}"
            )
    for key, value in kwargs.items():  # a fraction of units dropped: 1 would drop them all
        if key.endswith("_rate") and isinstance(value, int | float) and not 0 <= value < 1:
            raise ValueError(f"model.{key} must be in [0, 1), got {value!r}")
    return cls(num_classes=num_classes, dtype=compute_dtype(dtype), **kwargs)
