"""Where a run's checkpoints are, found from folder names alone: no Orbax, no JAX, nothing
created. So a command given a wrong path says so at once, before loading anything.

>>> locate("runs/vivit")            # ("/abs/runs/vivit/checkpoints", None): newest step
>>> locate("runs/vivit/checkpoints/400")   # ("/abs/runs/vivit/checkpoints", 400)
"""

from __future__ import annotations

import os

from vjax import storage
from vjax.errors import NotFoundError, UserError


def saved_steps(directory: str) -> list[int]:
    """The step numbers saved under a checkpoints folder (none when it does not exist)."""
    folder = storage.path(directory)
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and p.is_dir())


def has_checkpoint(workdir: str) -> bool:
    """Whether the run folder ``workdir`` holds a saved checkpoint."""
    return bool(saved_steps(os.path.join(workdir, "checkpoints")))


def require_trained(workdir: str) -> None:
    """Raises NotFoundError unless ``workdir`` holds a saved checkpoint (a run to evaluate)."""
    if has_checkpoint(workdir):
        return
    folder = os.path.normpath(workdir) if not storage.is_remote(workdir) else ""
    if os.path.basename(folder).isdigit():  # one step: checkpoints/6
        folder = os.path.dirname(folder)
    if os.path.basename(folder) == "checkpoints" and saved_steps(folder):
        raise NotFoundError(
            f"{workdir!r} is a run's checkpoints; give the run's folder: "
            f"--workdir={os.path.dirname(folder) or '.'}"
        )
    raise NotFoundError(
        f"no checkpoint to evaluate in {workdir!r}; train first (vjax train --workdir=...)"
    )


def require_new_output(out_dir: str, error: type[UserError] = UserError) -> None:
    """Raises ``error`` unless ``out_dir`` may receive a new model folder (``checkpoints/0``):
    a file there, or a ``checkpoints`` folder already in it, would leave the old model in
    place (Orbax saves no step at or below one it already holds). A bucket that cannot be
    written is named here too, before the work whose result it would hold."""
    storage.require_writable(out_dir)
    if storage.path(out_dir).is_file():
        raise error(f"{out_dir!r} is a file; choose a new folder for --out")
    if storage.path(out_dir, "checkpoints").exists():
        raise error(f"{out_dir!r} already holds a checkpoint; choose a new --out")


def locate(path: str) -> tuple[str, int | None]:
    """``(checkpoints folder, step or None for the newest)`` of a workdir, its checkpoints
    folder, one step folder in it, or a ``vjax convert`` folder; NotFoundError otherwise."""
    path = storage.absolute(path)
    if storage.path(path, "checkpoints").is_dir():
        path = os.path.join(path, "checkpoints")
    if os.path.basename(path).isdigit() and storage.path(path, "state").is_dir():
        return os.path.dirname(path), int(os.path.basename(path))
    if not saved_steps(path):
        from vjax.deploy.signature import is_exported

        if is_exported(path):
            raise NotFoundError(
                f"{path!r} holds a model `vjax export` wrote, not a checkpoint: open it with "
                f"vjax.deploy.runtime.load_exported({path!r}), or give the folder it came from"
            )
        what = "does not exist" if not storage.path(path).exists() else "holds no checkpoint"
        raise NotFoundError(
            f"{path!r} {what}; give a training workdir, its checkpoints folder, one step in "
            f"it, or a folder `vjax convert` wrote"
        )
    return path, None
