"""Drops warnings of the libraries vjax drives that mislead a user on every ordinary run, such
as Orbax's "Given directory is read only" when a checkpoint is merely read, or TFDS's "Using
custom data configuration" for every vjax dataset (all are custom configurations).

>>> drop_absl_warnings("Given directory is read only")
"""

from __future__ import annotations

import logging

_DROPPED: set[str] = set()


class _DropPrefixes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not any(message.startswith(prefix) for prefix in _DROPPED)


_FILTER = _DropPrefixes()


def drop_absl_warnings(*prefixes: str) -> None:
    """Drops the messages that start with one of ``prefixes`` (format strings as logged) from
    absl's Python logger, which TFDS and Orbax log through; idempotent."""
    _DROPPED.update(prefixes)
    logger = logging.getLogger("absl")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
