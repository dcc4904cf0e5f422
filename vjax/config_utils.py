"""Configs are code: load ``configs/<family>.py:variant``, apply ``--config.a.b=value`` overrides.

Every override is checked against the fields the config already has, so a typo fails at once
with the closest valid keys instead of being silently ignored.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import importlib.util
import inspect
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import ml_collections

from vjax.errors import UserError
from vjax.suggest import closest_hint


class ConfigError(UserError):
    """A config file, key or value that cannot be used; the message says which and why."""


RECIPES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
"""vjax's recipe files: a link to the checkout's ``configs/``, and in a wheel a copy of it."""


def config_file(path: str) -> str:
    """``path`` if it is a file; else, for ``configs/NAME.py``, the recipe installed with vjax,
    so that ``--config=configs/demo.py`` works outside a checkout too (vjax from a wheel)."""
    if os.path.isfile(path):
        return path
    first, _, rest = os.path.normpath(path).partition(os.sep)
    if first == "configs" and os.path.isfile(os.path.join(RECIPES, rest)):
        return os.path.join(RECIPES, rest)
    installed = sorted(n for n in os.listdir(RECIPES) if n.endswith(".py"))
    raise ConfigError(
        f"config file {path!r} does not exist (the recipes installed with vjax: "
        f"{', '.join('configs/' + name for name in installed)})"
    )


def config_module(path: str) -> Any:
    """The Python module of the config file ``path``, run afresh (configs are code). It is in
    ``sys.modules`` while it runs, so that what it registers knows its file
    (:func:`vjax.registration.defined_at`), and not after: pickle then refuses its functions
    in this process, and cloudpickle sends them by value, as for any unimported file."""
    name = f"vjax_config_{abs(hash(os.path.realpath(path)))}"  # one file, one name, however given
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


def users_module(path: str, named: str) -> Any:
    """:func:`config_module` of a user's own file (``named`` as the user gave it): its failure
    is their mistake, a ConfigError of one line (``--debug`` shows the traceback)."""
    if not os.path.isfile(path):
        raise ConfigError(f"{named} does not exist")
    try:
        return config_module(path)
    except Exception as e:
        raise ConfigError(f"{named} does not run: {type(e).__name__}: {e}") from e


def load_config(spec: str | os.PathLike) -> ml_collections.ConfigDict:
    """Loads ``path/to/config.py[:arg]`` by calling its ``get_config(arg)``; ``configs/NAME.py``
    is vjax's own recipe where no such file is in the working directory (``config_file``).

    >>> config = load_config("configs/demo.py:vivit")
    """
    path, _, arg = os.fspath(spec).partition(":")
    file = config_file(path)
    # A user's own config file that fails is their mistake, named in one line (--debug shows
    # its traceback); vjax's recipes keep theirs (a failure there is our bug).
    users = os.path.dirname(os.path.realpath(file)) != os.path.realpath(RECIPES)
    module = users_module(file, f"config file {path!r}") if users else config_module(file)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path!r} defines no get_config(arg)")
    try:
        return _config_dict(_call_get_config(module.get_config, spec, arg), spec)
    except ConfigError:
        raise
    except ValueError as e:  # a config file's own check of its argument (e.g. a variant name)
        raise ConfigError(f"--config={spec}: {e}") from e
    except Exception as e:
        if not users:
            raise
        raise ConfigError(f"--config={spec}: get_config failed: {type(e).__name__}: {e}") from e


# The sections every run reads (each recipe's get_config returns them all; a converter's
# config file may hold only its model and input).
SECTIONS = ("seed", "dataset", "input", "model", "optimizer", "train", "sharding")


def _call_get_config(get_config: Any, spec: str, arg: str) -> Any:
    """``get_config(arg)``; ``get_config()`` for one that takes no argument (ml_collections'
    usual form) when ``spec`` gives none."""
    try:
        takes_arg = bool(inspect.signature(get_config).parameters)
    except (TypeError, ValueError):  # no signature to read (a builtin): call it as documented
        takes_arg = True
    if takes_arg:
        return get_config(arg or None)
    if arg:
        raise ConfigError(f"--config={spec}: its get_config() takes no argument; drop ':{arg}'")
    return get_config()


def _config_dict(config: Any, spec: str) -> ml_collections.ConfigDict:
    """``config`` if it is a ConfigDict; else a ConfigError naming what get_config returned."""
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(
            f"--config={spec}: get_config returned {type(config).__name__}, not an "
            f"ml_collections.ConfigDict (start from a recipe, e.g. configs/demo.py)"
        )
    return config


def require_sections(config: ml_collections.ConfigDict, spec: str) -> None:
    """Raises a ConfigError naming the :data:`SECTIONS` a run's ``config`` (from ``--config=
    spec``) lacks: a user's config without ``seed`` failed with an AttributeError wherever the
    run first read it, some after its data was prepared."""
    missing = [name for name in SECTIONS if name not in config]
    if missing:
        raise ConfigError(
            f"--config={spec} lacks {', '.join(repr(m) for m in missing)}: every config has "
            f"{', '.join(SECTIONS)} (start from a recipe, e.g. configs/demo.py, and change what "
            f"differs)"
        )


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """All dotted leaf keys of a nested config, e.g. ``optimizer.lr``."""
    keys = []
    for key, value in config.items():
        full = f"{prefix}{key}"
        if isinstance(value, (Mapping, ml_collections.ConfigDict)):
            keys.extend(flat_keys(value, full + "."))
        keys.append(full)
    return keys


def unknown_key_error(key: str, valid: Iterable[str]) -> ConfigError:
    """An error naming ``key`` and the closest valid keys."""
    return ConfigError(f"unknown config key {key!r}{closest_hint(key, valid)}")


def _parse_value(text: str, current: Any, *, top_level: bool = False) -> Any:
    """Parses an override string to the type of the value it replaces.

    A section (a ConfigDict) takes only ``None``, which leaves it out, and only where it is
    nested in another (``input.audio``, ``train.distill``: vjax reads None there as off);
    the top-level sections (``model``, ``input``, ...) every run needs. ``None`` is spelt as
    Python writes it, as for every other field (``none`` is a string, e.g. ``model.remat``)."""
    if isinstance(current, ml_collections.ConfigDict):
        if text == "None" and not top_level:
            return None
        also = "" if top_level else ", or None to leave it out"
        raise ConfigError(f"a section: set its keys one at a time{also}; got {text!r}")
    if isinstance(current, bool):
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ConfigError(f"expected a boolean, got {text!r}")
    if isinstance(current, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if current is None:
            return text
        kind = type(current).__name__
        article = "an" if kind[0] in "aeiou" else "a"
        raise ConfigError(f"cannot parse {text!r} as {article} {kind}") from None
    if isinstance(value, bool) and current is not None and not isinstance(current, bool):
        raise ConfigError(f"expected a {type(current).__name__}, got {text!r}")  # True is an int
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if current is not None and not isinstance(value, type(current)):
        if isinstance(current, (tuple, list)) and isinstance(value, (tuple, list)):
            return type(current)(_numbers_if(current, value, text))
        raise ConfigError(f"expected a {type(current).__name__}, got {text!r}")
    if isinstance(current, (tuple, list)):
        return _numbers_if(current, value, text)
    return value


def _numbers_if(current: Sequence[Any], value: Any, text: str) -> Any:
    """``value``, refused unless it holds numbers where the sequence it replaces does
    (``input.mean=('a', 'b', 'c')`` stopped inside JAX before)."""

    def numbers(items: Any) -> bool:
        return all(isinstance(x, int | float) and not isinstance(x, bool) for x in items)

    if current and numbers(current) and not numbers(value):
        raise ConfigError(f"expected numbers, got {text!r}")
    return value


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> None:
    """Sets each dotted key to its parsed value, in place; unknown keys raise ConfigError.
    Values are the command line's strings (``"1e-3"``, ``"True"``); a Python value (``1e-3``,
    ``True``, ``(0.5,) * 3``, NumPy's) is read as its ``repr``, checked the same way; a path
    as its string; None as None.

    >>> apply_overrides(config, {"optimizer.lr": 1e-3, "train.num_steps": "100"})
    """
    for key, given in overrides.items():
        text = _override_text(given)
        valid = flat_keys(config)  # as the overrides before left it (a section set to None)
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
                raise unknown_key_error(key, valid)
            node = node[part]
        optional = _optional_fields(config, parents)
        if leaf not in node and leaf not in optional:
            section = ".".join(parents)
            raise unknown_key_error(key, [*valid, *(f"{section}.{k}" for k in optional)])
        try:
            declared = optional.get(leaf)
            current = node[leaf] if leaf in node else declared.parse_as
            if declared and text == "None" and declared.takes_none:
                value = None  # e.g. model.hidden_size=None: the size string's value
            elif given is None and isinstance(current, str):
                value = None  # from Python, e.g. train.init_from=None (text fields keep "None")
            else:  # a float field the recipe writes as an int still takes 2.5
                as_float = declared and isinstance(declared.parse_as, float)
                value = _parse_value(text, declared.parse_as if as_float else current,
                                     top_level=not parents)  # fmt: skip
        except ConfigError as e:
            raise ConfigError(f"--config.{key}: {e}") from None
        with node.unlocked():  # a model, input or dataset field the recipe left at its default
            if isinstance(value, float) and type(node.get(leaf)) is int:
                del node[leaf]  # ConfigDict keeps a field's first type: 2 -> 2.5 is refused
            node[leaf] = value


def _override_text(value: Any) -> str:
    """An override's text: a string as given, a path as its string, any other Python value (a
    number, a bool, a tuple, None; NumPy's as their Python values) as its ``repr``."""
    if isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return repr(value.tolist() if hasattr(value, "tolist") else value)


@dataclasses.dataclass(frozen=True)
class _Declared:
    """What a section's field is declared as: ``parse_as``, the value an override is parsed
    to the type of (:func:`_parsed_against`), and whether the field takes None."""

    parse_as: Any
    takes_none: bool


def _declared(default: Any, annotation: Any) -> _Declared:
    return _Declared(
        _parsed_against(default, annotation), default is None or "None" in str(annotation)
    )


def _optional_fields(config: ml_collections.ConfigDict, section: list[str]) -> dict[str, _Declared]:
    """``{field: declared}`` of the fields a section's code declares (which a config may set
    beyond its own keys, and what an override of one it names is parsed as): the fields of
    ``config.model``'s model (``--config.model.remat=block`` on a config that does not name
    ``remat``), every clip option of ``input`` (``--config.input.test_num_clips=4``) and every
    preparation setting of ``config.dataset``'s dataset (``--config.dataset.fps=25``)."""
    if section == ["model"]:
        from vjax.models.registry import config_fields

        name = config.get("model", {}).get("name")
        fields = config_fields(name).values() if isinstance(name, str) else ()
        return {f.name: _declared(f.default, f.type) for f in fields}
    if section == ["input"]:
        from vjax.data.transforms import InputOptions

        return {f.name: _declared(f.default, f.type) for f in dataclasses.fields(InputOptions)}
    name = config.get("dataset", {}).get("name") if section == ["dataset"] else None
    if isinstance(name, str):
        from vjax.data.datasets import check_dataset_name, preparer

        try:
            check_dataset_name(name)
        except ConfigError:  # an unknown dataset is named where the run starts
            return {}
        parameters = inspect.signature(preparer(name)).parameters.values()
        return {
            p.name: _declared(p.default, p.annotation)
            for p in parameters
            if p.default is not inspect.Parameter.empty
        }
    return {}


def _parsed_against(default: Any, annotation: Any) -> Any:
    """What an override of a field the config leaves out is parsed to the type of: its default,
    a float for a float field whose default is written as an int, and None (any literal or
    text) for a field of several types (``int | None``, ``tuple | str``); a ``float | None``
    field is a float's (``input.mixup_rate=1`` then ``=0.5``)."""
    kinds = [kind.strip() for kind in str(annotation).split("|")]
    if kinds in (["float", "None"], ["None", "float"]):
        return 0.0 if default is None else float(default)
    if len(kinds) > 1:
        return None
    if str(annotation) == "float" and isinstance(default, int) and not isinstance(default, bool):
        return float(default)
    return default


def config_to_json(config: ml_collections.ConfigDict) -> str:
    return config.to_json(sort_keys=True)


def config_from_json(text: str | dict) -> ml_collections.ConfigDict:
    data = json.loads(text) if isinstance(text, str) else text
    return ml_collections.ConfigDict(data)


def with_defaults(
    recorded: Mapping[str, Any], defaults: Mapping[str, Any], whole: Iterable[str] = ()
) -> dict[str, Any]:
    """``recorded`` (a config as a run saved it) with every setting it lacks taken from
    ``defaults``, section by section; the sections named in ``whole`` as recorded (a model's
    or dataset's fields depend on which one it is). What a run saved by an older vjax, before
    a setting existed, is read with."""
    filled = dict(recorded)
    for key, default in defaults.items():
        if key not in filled:
            filled[key] = default
        elif isinstance(default, Mapping) and isinstance(filled[key], Mapping) and key not in whole:
            filled[key] = with_defaults(filled[key], default)
    return filled


# What probe, demo and a new training run read without --config (a checkout's own
# ``configs/demo.py`` first, :func:`config_file`).
DEFAULT_CONFIG = "configs/demo.py"
# Sections whose keys are checked where their code reads them: a model's fields
# (``build_model``), a dataset's preparation (``load_dataset``).
_CHECKED_WHERE_READ = ("model", "dataset")


def default_settings() -> dict[str, Any]:
    """Every setting vjax reads, at its default: vjax's own demo config (never one in the
    working directory), which holds every key of train, optimizer and sharding and the top
    level (a recipe changes their values, never adds one; model, dataset and input keys
    depend on the model and dataset named). What a run saved by an older vjax lacks is read
    from it, and a key it lacks in those sections is a mistake (:func:`check_known_keys`)."""
    return load_config(os.path.join(RECIPES, "demo.py")).to_dict()


def _known(defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` with every key ``config.input`` may hold (the clip options a recipe leaves
    out too): the keys vjax reads outside :data:`_CHECKED_WHERE_READ`."""
    from vjax.data.transforms import input_keys

    return {**defaults, "input": {**dict.fromkeys(input_keys()), **defaults.get("input", {})}}


def unknown_keys(config: Mapping[str, Any], defaults: Mapping[str, Any]) -> list[str]:
    """The dotted keys of ``config`` that vjax does not read: that ``defaults`` (and, in
    ``input``, the clip options) lacks, except in the top-level sections
    :data:`_CHECKED_WHERE_READ`; under a key whose default is not a section (e.g.
    ``train.quantization=None``, ``input.audio``) anything goes."""

    def walk(node: Mapping[str, Any], known: Mapping[str, Any], prefix: str) -> Iterable[str]:
        for key, value in node.items():
            if not prefix and key in _CHECKED_WHERE_READ:
                continue
            if key not in known:
                yield prefix + key
            elif isinstance(value, Mapping) and isinstance(known[key], Mapping):
                yield from walk(value, known[key], f"{prefix}{key}.")

    return list(walk(config, _known(defaults), ""))


def check_known_keys(config: ml_collections.ConfigDict) -> None:
    """Raises a ConfigError naming a key of ``config`` that vjax does not read, with the
    closest ones it does: a misspelt ``train.num_step`` in a config file of one's own (or set
    on an unlocked ConfigDict) was silently ignored, and the run trained with the default."""
    defaults = default_settings()
    unknown = unknown_keys(config.to_dict(), defaults)
    if unknown:
        valid = flat_keys(ml_collections.ConfigDict(_known(defaults)))
        raise unknown_key_error(unknown[0], valid)


def without_keys(config: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """A copy of the nested dict ``config`` without the dotted ``keys``."""
    config = copy.deepcopy(config)
    for key in keys:
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        del node[leaf]
    return config


# The config's local paths: the data a run reads and the models it starts from or learns from.
PATH_KEYS = ("dataset.data_dir", "dataset.src", "train.init_from", "train.distill.teacher")


def with_absolute_paths(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of ``config`` whose local paths (:data:`PATH_KEYS`) are absolute (``~``
    expanded): what a run records, so that its config reads the same data and models from any
    working directory (``vjax eval`` without ``--config``)."""
    from vjax import storage

    config = copy.deepcopy(config)
    for key in PATH_KEYS:
        *sections, leaf = key.split(".")
        node = config
        for section in sections:
            node = node.get(section) if isinstance(node, ml_collections.ConfigDict) else None
        value = node.get(leaf) if isinstance(node, ml_collections.ConfigDict) else None
        if isinstance(value, str) and value and not storage.is_remote(value):
            with node.unlocked():
                node[leaf] = os.path.abspath(os.path.expanduser(value))
    return config


def recipe_config(
    base: ml_collections.ConfigDict, recipe: Mapping[str, Any], tiny_model: Mapping[str, Any] | None
) -> ml_collections.ConfigDict:
    """A paper recipe on top of the demo config ``base``.

    ``recipe`` holds ``dataset`` (``name``, ``num_classes``, ``train_size``), ``input``,
    ``model``, ``optimizer`` (with ``epochs`` and ``warmup_epochs``; the cosine ends at its
    ``end_lr``, else 0) and optionally ``train``.
    With ``tiny_model`` (pass ``base`` = the demo's ``tiny`` config) only the model family
    changes: the tiny data, input and schedule stay, so the recipe's model runs in seconds; a
    recipe's ``tiny`` sections (e.g. ``dataset`` and ``input`` of a two-headed dataset, which
    the demo's data is not) replace the demo's; the recipe's ``train.objective`` (what its
    data needs, e.g. ``multi_label``) is kept.
    """
    c = base
    c.unlock()
    if tiny_model is not None:
        c.model = ml_collections.ConfigDict(dict(tiny_model))
        if "objective" in recipe.get("train", {}):
            c.train.objective = recipe["train"]["objective"]
        for section, values in recipe.get("tiny", {}).items():
            c[section] = ml_collections.ConfigDict(dict(values))
        c.lock()
        return c
    data, batch = recipe["dataset"], recipe["input"]["global_batch_size"]
    opt = dict(recipe["optimizer"])
    steps = int(opt.pop("epochs") * data["train_size"] // batch)
    warmup = int(opt.pop("warmup_epochs") * data["train_size"] // batch)
    fields = {k: v for k, v in data.items() if k not in ("num_classes", "train_size")}
    c.dataset = ml_collections.ConfigDict(dict(dict(data_dir="", src="", short_side=256), **fields))
    c.input = ml_collections.ConfigDict({"num_workers": -1, **recipe["input"]})  # all cores
    c.optimizer.update({"end_lr": 0.0, **opt, "warmup_steps": warmup})  # the recipe's end_lr
    c.train.update(
        num_steps=steps,
        log_every=100,
        eval_every=max(steps // 10, 1),
        checkpoint_every=max(steps // 30, 1),
        dtype="bfloat16",
        **recipe.get("train", {}),
    )
    c.model = ml_collections.ConfigDict(dict(recipe["model"]))
    c.lock()
    return c
