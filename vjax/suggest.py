"""'Did you mean' hints for unknown names (config keys, model fields, registry names)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

_LIST_ALL_UP_TO = 20  # with no close match, list every valid name if there are this few


def closest_hint(name: str, valid: Iterable[str]) -> str:
    """``"; did you mean a, b?"`` with the closest valid names, or the valid names themselves.

    >>> closest_hint("optimizer.lrr", ["optimizer.lr", "optimizer.b1"])
    '; did you mean optimizer.lr?'
    """
    valid = sorted(set(valid))
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    if close:
        return f"; did you mean {', '.join(close)}?"
    return f"; valid: {', '.join(valid)}" if len(valid) <= _LIST_ALL_UP_TO else ""
