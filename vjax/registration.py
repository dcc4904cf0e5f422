"""Names that code registers, vjax's and a user's alike (models, objectives): the same
definition registered again replaces itself (a notebook cell, or a config file that vjax runs
once for train and again for eval); another one under a taken name is refused, naming where
the first was defined. Otherwise a second file's ``"focal"`` silently replaced the first's.

>>> MODELS = Registry("model name", lambda cls: cls)
>>> MODELS.claim("mean_mlp", MeanMLP)
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

# How a model or objective of one's own becomes known, for the errors that meet an unknown one.
KNOWN_ONCE_RUN = (
    "is known once the file that registers it has run: --config=FILE (vjax train, eval, "
    "probe) or --import=FILE (any vjax command)"
)


def defined_at(definition: Any) -> str:
    """``FILE:QUALNAME`` of a class or function (a partial's function): its module's file by
    real path, however that file was run (a config file by any path, or imported); for a
    module without a file (a notebook's ``__main__``), the module's name."""
    while isinstance(definition, functools.partial):
        definition = definition.func
    file = getattr(sys.modules.get(definition.__module__), "__file__", None)
    where = os.path.realpath(file) if file else definition.__module__
    return f"{where}:{definition.__qualname__}"


class Registry(dict):
    """``{name: value}`` filled by :meth:`claim`; ``defines(value)`` is the class or function
    whose definition a value is (what :func:`defined_at` locates)."""

    def __init__(self, what: str, defines: Callable[[Any], Any], *args: Any) -> None:
        super().__init__(*args)
        self.what, self.defines = what, defines
        self.origins: dict[str, str] = {}  # where each claimed name's value was defined

    def claim(self, name: str, value: Any) -> None:
        """Registers ``value`` as ``name``; a ValueError if another definition holds it."""
        origin = defined_at(self.defines(value))
        if name in self:
            held = self.origins.get(name) or defined_at(self.defines(self[name]))
            if held != origin:
                raise ValueError(
                    f"{self.what} {name!r} is taken by {held}; register "
                    f"{origin.rpartition(':')[2]} under another name"
                )
        self[name] = value
        self.origins[name] = origin

    def copy(self) -> Registry:
        """A registry of the same entries whose claims do not reach this one (tests)."""
        copied = Registry(self.what, self.defines, self)
        copied.origins = dict(self.origins)
        return copied
