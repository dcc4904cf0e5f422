"""Run folders on local disk or in a bucket (``gs://...``, what a TPU pod's hosts all see):
file operations through ``etils.epath``, which reads and writes both, plus what it does not
do alike for both (an absolute path, an append, a folder's files and their size), a check
that a bucket can be written, and local copies for the tools that open local files only
(ONNX Runtime, TensorFlow Lite, the exporters).

>>> path("gs://bucket/runs/demo", "config.json").write_text("{}")
>>> append("gs://bucket/runs/demo/metrics.jsonl", '{"step": 1}\\n')
>>> with staged_folder("gs://bucket/exported") as local:    # files written here are uploaded
...     open(os.path.join(local, "model.onnx"), "wb").write(onnx_bytes)
>>> local_copy("gs://bucket/exported/model.onnx")           # a downloaded copy's local path
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator

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


# The storage systems epath reaches (Cloud Storage; S3 and Azure with their fsspec packages).
SCHEMES = ("gs", "s3", "az")


def path(location: str, *parts: str) -> epath.Path:
    """``location`` joined with ``parts``, local or in a bucket; a URL of another kind
    (``file://``, ``http://``) is a UserError."""
    scheme = str(location).partition("://")[0] if is_remote(location) else None
    if scheme is not None and scheme not in SCHEMES:
        raise UserError(
            f"{location!r}: vjax reads and writes local paths and buckets "
            f"({', '.join(f'{s}://' for s in SCHEMES)}), not {scheme}://"
        )
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
    target = path(location)
    target.write_bytes((target.read_bytes() if target.exists() else b"") + raw)


def append_line(location: str, line: str) -> None:
    """Adds ``line`` (text ending in a newline) at the end of the text file ``location``,
    created if missing; after a newline where the file ends mid-line (a killed writer's half
    line), which would otherwise swallow this one when the file is read back."""
    raw = line.encode("utf-8")
    if not is_remote(location):
        with open(location, "a+b") as f:
            size = f.seek(0, os.SEEK_END)
            if size:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    raw = b"\n" + raw
            f.write(raw)
        return
    target = path(location)
    before = target.read_bytes() if target.exists() else b""
    target.write_bytes(before + (b"\n" if before and not before.endswith(b"\n") else b"") + raw)


def require_writable(location: str) -> None:
    """Raises a UserError naming the cause when no file can be written in the folder
    ``location``, checked before any work whose results would be lost. Locally: the folder,
    or the nearest one above it that exists (the one it would be made in), must be writable
    (a read-only mount, another user's folder). In a bucket (one that does not exist, no
    credentials, no permission): with a small file written and deleted."""
    if not is_remote(location):
        _require_local_writable(location)
        return
    check = path(location, f".vjax-write-check-{socket.gethostname()}-{os.getpid()}")
    try:
        path(location).mkdir(parents=True, exist_ok=True)
        check.write_bytes(b"")
        check.unlink()
    except Exception as e:  # each file system raises its own kind (gcsfs, TensorFlow's, s3fs)
        raise UserError(f"cannot write to {location}: {type(e).__name__}: {one_line(e)}") from e


def nearest_existing(location: str) -> str:
    """The absolute local path ``location``, or the nearest path above it that exists: the
    folder it would be made in, or a file in the way."""
    existing = os.path.abspath(location)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    return existing


def _require_local_writable(location: str) -> None:
    """A file made and removed in ``location`` or the nearest folder above it that exists
    (permissions alone miss a read-only mount for root, and /sys or /proc)."""
    existing = nearest_existing(location)
    if not os.path.isdir(existing):
        return  # a file in the way: the callers name that mistake themselves
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".vjax-write-check-"):
            pass
    except OSError as e:
        within = "" if existing == os.path.abspath(location) else f" (to be made in {existing!r})"
        raise UserError(f"cannot write to {location!r}{within}: {e.strerror or one_line(e)}") from e


def files_under(location: str) -> list[str]:
    """The paths, relative to the folder ``location`` and sorted, of every file under it."""
    # The walk's roots are normalised ("./out//" -> "out"), and a bucket's come without the
    # scheme under gcsfs ("bucket/dir"): cut the base spelt the same way.
    base = str(path(location)).split("://")[-1].rstrip("/")
    found = []
    for root, _, names in path(location).walk():
        inner = str(root).split("://")[-1][len(base) :].strip("/")
        found += [f"{inner}/{name}" if inner else name for name in names]
    return sorted(found)


def folder_bytes(location: str) -> int:
    """Bytes of every file under the folder ``location``."""
    return sum(path(location, name).stat().length for name in files_under(location))


def copy_file(source: str, target: str) -> None:
    """Copies the file ``source`` to ``target`` (either local or in a bucket), streamed, its
    folder made if missing."""
    path(target).parent.mkdir(parents=True, exist_ok=True)
    with path(source).open("rb") as reader, path(target).open("wb") as writer:
        shutil.copyfileobj(reader, writer, length=16 << 20)


@contextlib.contextmanager
def staged_folder(location: str) -> Iterator[str]:
    """A local folder whose files end up in the folder ``location``: that folder itself when
    it is local; for a bucket, a temporary one uploaded file by file when the block succeeds
    (after a failure nothing is uploaded), for writers that take local paths only."""
    if not is_remote(location):
        yield location
        return
    with tempfile.TemporaryDirectory(prefix="vjax-upload-") as local:
        yield local
        for name in files_under(local):
            copy_file(os.path.join(local, name), f"{location.rstrip('/')}/{name}")


def local_copy(location: str, only: Callable[[str], bool] = lambda name: True) -> str:
    """A local path holding the file or folder ``location``: itself when local; for a bucket,
    a copy downloaded into a temporary folder (of a folder, the files whose relative path
    ``only`` accepts), removed when the process exits: a runtime that maps a file keeps
    reading it until then, and each call downloads anew."""
    if not is_remote(location):
        return location
    scratch = tempfile.mkdtemp(prefix="vjax-download-")
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    local = os.path.join(scratch, path(location).name)
    if path(location).is_dir():
        for name in filter(only, files_under(location)):
            copy_file(f"{location.rstrip('/')}/{name}", os.path.join(local, name))
    else:
        copy_file(location, local)
    return local
