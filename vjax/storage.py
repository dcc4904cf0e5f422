"""Run folders on local disk or in a bucket (``gs://...``, what a TPU pod's hosts all see):
file operations through ``etils.epath``, which reads and writes both, plus what it does not
do alike for both (an absolute path, an append) and a check that a bucket can be written.

>>> path("gs://bucket/runs/demo", "config.json").write_text("{}")
>>> append("gs://bucket/runs/demo/metrics.jsonl", '{"step": 1}\\n')
"""

from __future__ import annotations

import os
import socket

from etils import epath

from vjax.errors import UserError, one_line


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


def require_writable(location: str) -> None:
    """Raises a UserError naming the cause when no file can be written in the bucket folder
    ``location`` (a bucket that does not exist, no credentials, no permission): checked with
    a small file written and deleted, before any work whose results would be lost."""
    check = path(location, f".vjax-write-check-{socket.gethostname()}-{os.getpid()}")
    try:
        path(location).mkdir(parents=True, exist_ok=True)
        check.write_bytes(b"")
        check.unlink()
    except Exception as e:  # each file system raises its own kind (gcsfs, TensorFlow's, s3fs)
        raise UserError(f"cannot write to {location}: {type(e).__name__}: {one_line(e)}") from e
