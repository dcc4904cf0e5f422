"""Run folders on local disk or in a bucket (``gs://...``, what a TPU pod's hosts all see):
file operations through ``etils.epath``, which reads and writes both, plus the two things it
does not do alike for both (an absolute path, an append).

>>> path("gs://bucket/runs/demo", "config.json").write_text("{}")
>>> append("gs://bucket/runs/demo/metrics.jsonl", '{"step": 1}\\n')
"""

from __future__ import annotations

import os

from etils import epath


def is_remote(location: str) -> bool:
    """Whether ``location`` names a bucket (``gs://``, ``s3://``...) rather than a local path."""
    return "://" in str(location)


def absolute(location: str) -> str:
    """``location`` made absolute when local (a relative folder stays the one meant when the
    working directory changes); a bucket's URL as it is but for a trailing slash, as abspath
    drops one (``os.path.abspath`` would make it a local folder named ``gs:``)."""
    return str(location).rstrip("/") if is_remote(location) else os.path.abspath(location)


def path(location: str, *parts: str) -> epath.Path:
    """``location`` joined with ``parts``, local or in a bucket."""
    return epath.Path(location).joinpath(*parts)


def append(location: str, data: str | bytes) -> None:
    """Adds ``data`` (text as UTF-8) at the end of the file ``location``, created if missing.
    A bucket's objects cannot be appended to: there the file is read and written again whole
    (fine for a run's logs, a few MB at most)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if not is_remote(location):
        with open(location, "ab") as f:
            f.write(raw)
        return
    target = epath.Path(location)
    target.write_bytes((target.read_bytes() if target.exists() else b"") + raw)
