"""Orbax checkpoints of the train state plus the run's config, and a restore that never trusts
a half-written step: it falls back to the newest checkpoint that restores cleanly, says which
step it skipped and why (one line), and a save that Orbax skips is an error, never silent."""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from vjax import storage
from vjax.checkpoint_paths import locate
from vjax.errors import UserError
from vjax.log_filters import drop_absl_warnings

log = logging.getLogger(__name__)
T = TypeVar("T")
# Logged by every read-only manager, i.e. whenever a checkpoint is merely read; and for a
# step folder without Orbax's metadata file (an empty or cut-short step), which vjax's own
# line names with the step it uses instead.
drop_absl_warnings(
    "Given directory is read only",
    "CheckpointManagerOptions.read_only=True",
    "Metadata file does not exist",
)
# (folder, step skipped, step used) already named in this process: a command reads a run's
# newest step in several places (its metadata, its shapes, its arrays).
_SKIPS_LOGGED: set[tuple[str, int, int]] = set()


# Replica-parallel saving splits every replicated array into one slice per replica, each
# written by its own device. For small arrays the slicing (an op dispatched per replica) costs
# far more than it saves: a data-parallel save of a 0.1M-parameter model on 8 devices spent
# most of its time cutting 1,000+ slices. Arrays whose slices are at least this big still
# save in parallel across replicas.
REPLICA_PARALLEL_MIN_SLICE_BYTES = 1 << 20


def _use_replica_parallel_for_large_arrays_only() -> None:
    """Registers Orbax's array handler with :data:`REPLICA_PARALLEL_MIN_SLICE_BYTES` (the
    same on-disk format; only which device writes which bytes changes)."""
    handler = ocp.type_handlers.ArrayHandler(
        min_slice_bytes_for_replica_parallel=REPLICA_PARALLEL_MIN_SLICE_BYTES
    )
    ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)


def make_manager(
    directory: str, max_to_keep: int, async_save: bool = True
) -> ocp.CheckpointManager:
    """A manager that keeps the newest ``max_to_keep`` steps; saves run in the background."""
    _use_replica_parallel_for_large_arrays_only()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        create=True,
        enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager(
        storage.absolute(directory), options=options, item_handlers=_item_handlers()
    )


def reading_manager(directory: str) -> ocp.CheckpointManager:
    """A manager that only reads (``vjax eval``, ``vjax.load``): it writes, deletes and cleans
    up nothing, so a training run saving into the same folder keeps its step in flight (a
    writing manager removes every ``*.orbax-checkpoint-tmp`` folder when it opens). It reads
    the state with Orbax's PyTree handler (the files the standard handler writes), which can
    restore a part of it: the model's variables without the optimiser's state."""
    return ocp.CheckpointManager(
        storage.absolute(directory),
        options=ocp.CheckpointManagerOptions(read_only=True),
        item_handlers=_item_handlers(ocp.PyTreeCheckpointHandler()),
    )


def _item_handlers(state_handler: ocp.CheckpointHandler | None = None) -> dict:
    """Handlers for a checkpoint's two items; new instances for every manager."""
    state = state_handler or ocp.StandardCheckpointHandler()
    return {"state": state, "metadata": ocp.JsonCheckpointHandler()}


# The parts of a saved state that evaluation and inference read: what ``model.apply`` takes.
# The optimiser's state (twice the parameters' bytes under Adam) is left on disk.
VARIABLES = ("params", "model_state")


def variables_of(part: Any) -> dict:
    """What ``model.apply`` takes, ``{"params": ..., **model_state}``, from a restored
    :data:`VARIABLES` part of a state."""
    return {"params": part["params"], **part.get("model_state", {})}


def _part(tree: Any, names: Sequence[str]) -> dict:
    """The entries ``names`` of a saved state or its target (a dict, tree metadata or a
    TrainState) that it has, as a dict."""
    get = tree.get if hasattr(tree, "get") else lambda name: getattr(tree, name, None)
    return {name: get(name) for name in names if get(name) is not None}


def _restore_args(names: Sequence[str] | None, target: Any) -> Any:
    """The restore arguments of the whole state (``names`` None; a writing manager's standard
    handler) or of its entries ``names`` alone (a reading manager's PyTree handler)."""
    if names is None:
        return ocp.args.StandardRestore(target)
    return ocp.args.PyTreeRestore(
        item=target,
        restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True,
    )


class CheckpointMismatchError(UserError):
    """A checkpoint that is complete but does not fit the model/optimiser being restored."""


def check_compatible(saved: Any, expected: Any, where: str) -> None:
    """Raises CheckpointMismatchError naming each parameter that is missing, extra or reshaped."""
    saved_flat = ocp.tree.to_flat_dict(saved)
    expected_flat = ocp.tree.to_flat_dict(expected)
    problems = []
    for key in expected_flat.keys() - saved_flat.keys():
        problems.append(
            f"{'/'.join(key)}: missing from the checkpoint "
            f"(model has {tuple(expected_flat[key].shape)})"
        )
    for key in saved_flat.keys() - expected_flat.keys():
        problems.append(
            f"{'/'.join(key)}: in the checkpoint {tuple(saved_flat[key].shape)} "
            f"but not in the model"
        )
    for key in saved_flat.keys() & expected_flat.keys():
        got, want = tuple(saved_flat[key].shape), tuple(expected_flat[key].shape)
        if got != want:
            problems.append(f"{'/'.join(key)}: checkpoint has shape {got}, model expects {want}")
    if problems:
        problems.sort(key=lambda p: (not p.startswith("params/"), p))  # parameters first
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        fix = "Use a new workdir, or the config that wrote this checkpoint."
        if all(p.startswith("opt_state/") for p in problems):
            fix = (
                "Only the optimiser's state differs: an optimiser setting changed since it was "
                "saved (optimizer.freeze, name or layer_decay). Continue with the config that "
                "wrote it, or start a new workdir with --config.train.init_from=<this run>."
            )
        raise CheckpointMismatchError(
            f"checkpoint {where} does not fit this model/optimiser: "
            + "; ".join(problems[:8])
            + more
            + ". "
            + fix
        )


def _log_dtype_changes(saved: Any, expected: Any, where: str) -> None:
    """One warning per (saved, restored) dtype pair that differs: a run resumed with another
    ``train.param_dtype`` (float32 parameters and optimiser state read into bfloat16 ones
    lose their low bits at the next save), cast by Orbax without a word otherwise."""
    saved_flat, expected_flat = ocp.tree.to_flat_dict(saved), ocp.tree.to_flat_dict(expected)
    changes: dict[tuple[str, str], list[str]] = {}
    for key in sorted(saved_flat.keys() & expected_flat.keys()):
        old, new = (
            getattr(saved_flat[key], "dtype", None),
            getattr(expected_flat[key], "dtype", None),
        )
        if old is not None and new is not None and np.dtype(old) != np.dtype(new):
            changes.setdefault((str(np.dtype(old)), str(np.dtype(new))), []).append("/".join(key))
    for (old, new), keys in changes.items():
        log.warning(
            "checkpoint %s stores %d arrays as %s that this run keeps as %s (e.g. %s): they are "
            "cast on restore (train.param_dtype changed since it was saved?)",
            where, len(keys), old, new, keys[0],
        )  # fmt: skip


class CheckpointNotSavedError(UserError):
    """A save that did not happen: the folder already holds this step or a newer one."""


class UnreadableCheckpointError(UserError):
    """No saved step of a checkpoints folder can be read (each step's reason is named)."""


def save(manager: ocp.CheckpointManager, step: int, state: Any, metadata: dict) -> None:
    """Saves the state plus JSON metadata (the config, class names, clip shape), so a checkpoint
    folder alone is enough to rebuild the model.

    Raises CheckpointNotSavedError when Orbax skips the save: it saves only steps newer than
    the newest in the folder (its :meth:`should_save`; vjax's managers save at any step, so
    that is the only reason), and a skipped save would lose the work it was to keep.
    """
    saved = manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), metadata=ocp.args.JsonSave(metadata)
        ),
    )
    if not saved:
        raise CheckpointNotSavedError(
            f"checkpoint of step {step} was not saved: {manager.directory} already holds step "
            f"{manager.latest_step()}, and Orbax saves only newer steps; move that step aside "
            f"or use a new folder"
        )


def write_single(directory: str, state: dict, metadata: dict) -> str:
    """Writes one checkpoint (step 0, no optimiser) of host arrays into ``directory`` (a
    ``checkpoints`` folder): what ``vjax convert`` and ``vjax quantize`` leave behind. Raises
    CheckpointNotSavedError when ``directory`` already holds a step (nothing is written)."""
    manager = make_manager(directory, 1, async_save=False)
    try:
        save(manager, 0, jax.tree.map(np.asarray, state), metadata)
        manager.wait_until_finished()
    finally:
        manager.close()
    return directory


# How much of a failed read's innermost error a warning quotes.
MAX_REASON_CHARS = 300
# What an unrestorable step's folder is renamed to (``6`` -> ``6.unreadable``): out of Orbax's
# list of steps, kept on disk for the user.
UNREADABLE_SUFFIX = ".unreadable"
REPLACED_SUFFIX = ".replaced"


def replace_step(manager: ocp.CheckpointManager, step: int, save_again: Callable[[], T]) -> T:
    """Writes ``step`` again with ``save_again()`` (which saves it through ``manager``) with a
    complete copy of it in the folder all along: the old one is renamed ``N.replaced`` first
    and removed once the new one is written, and a run killed in between gets the old one
    back (:func:`recover_replaced`). Deleting it first lost the step, the run's only one with
    ``keep_checkpoints=1``, to a kill during the write."""
    directory = epath.Path(manager.directory)
    aside = directory / f"{step}{REPLACED_SUFFIX}"
    manager.wait_until_finished()
    if jax.process_index() == 0:
        (directory / str(step)).rename(aside)
    _every_process_here("vjax_replace_step")
    manager.reload()
    result = save_again()
    manager.wait_until_finished()
    if jax.process_index() == 0:
        aside.rmtree()
    return result


def recover_replaced(directory: str) -> list[int]:
    """Each step :func:`replace_step` set aside as ``N.replaced``: removed where the new ``N``
    is complete, else renamed back to ``N`` (the new copy never finished). Run before a
    manager opens ``directory``. Returns the steps put back (on process 0; [] elsewhere)."""
    folder, restored = storage.path(directory), []
    if jax.process_index() == 0 and folder.exists():
        for aside in folder.glob(f"*{REPLACED_SUFFIX}"):
            step = folder / aside.name.removesuffix(REPLACED_SUFFIX)
            if step.exists() and ocp.step.is_checkpoint_finalized(step):
                aside.rmtree()
            else:
                if step.exists():
                    step.rmtree()  # a new copy cut short
                aside.rename(step)
                restored.append(int(step.name))
                log.warning("step %s: its rewrite was cut short; its old copy is back", step.name)
    _every_process_here("vjax_recover_replaced")
    return restored


def _every_process_here(name: str) -> None:
    """Waits until every process reaches this point (one process: returns at once)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def failure_reason(error: BaseException) -> str:
    """Why a read failed, on one readable line: the innermost error of ``error``'s chain
    (``__cause__``, else ``__context__``), first line, at most :data:`MAX_REASON_CHARS`.

    Orbax wraps TensorStore's useful ``OUT_OF_RANGE: Error reading "params/..." ...`` in an
    ``Encountered error while reading array index`` whose first line is a TensorStore spec.
    """
    seen = {id(error)}
    while True:
        inner = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
        if inner is None or id(inner) in seen:
            break
        seen.add(id(inner))
        error = inner
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if len(text) > MAX_REASON_CHARS:
        text = text[: MAX_REASON_CHARS - 3] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class _AbandonedReadFilter(logging.Filter):
    """Drops asyncio's "Task (Future, _GatheringFuture) exception was never retrieved" for
    Orbax's reads (see :func:`_hush_abandoned_reads`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "exception was never retrieved" not in message:
            return True
        if record.exc_info and record.exc_info[1] is not None:
            message += "".join(traceback.format_exception(record.exc_info[1]))
        return not any(mark in message for mark in ("orbax", "TensorStore", "OCDBT"))


_ABANDONED_READS = _AbandonedReadFilter()


def _is_abandoned_read(unraisable: Any) -> bool:
    """True for what an abandoned Orbax read prints when it ends: its coroutine, closed with
    an error, or TensorStore's callback onto Orbax's closed event loop."""
    code = getattr(unraisable.object, "cr_code", None)
    if inspect.iscoroutine(unraisable.object) and code is not None:
        return f"{os.sep}orbax{os.sep}" in code.co_filename
    error = unraisable.exc_value
    return unraisable.object is None and str(error) == "Event loop is closed"


def _hush_abandoned_reads() -> None:
    """Drops what Orbax's abandoned reads print. A failed restore leaves the other arrays'
    reads in flight; as each ends (whenever its TensorStore read does, often after the failure
    is reported) Python prints "Exception ignored in: <coroutine ...>" or "Event loop is
    closed", and asyncio "Task exception was never retrieved", each with a whole TensorStore
    spec: hundreds of lines for one truncated step. vjax says once why the step does not read
    (:func:`failure_reason`); every other unraisable error and log record goes on as before.
    Called before every read: idempotent, and put back when another hook replaced it."""
    previous = sys.unraisablehook
    if not getattr(previous, "hushes_abandoned_reads", False):

        def hook(unraisable: Any) -> None:
            if not _is_abandoned_read(unraisable):
                previous(unraisable)

        hook.hushes_abandoned_reads = True  # type: ignore[attr-defined]
        sys.unraisablehook = hook
    asyncio_log = logging.getLogger("asyncio")
    if _ABANDONED_READS not in asyncio_log.filters:
        asyncio_log.addFilter(_ABANDONED_READS)


def _try_read(read: Callable[[int], T], step: int) -> tuple[T | None, str | None]:
    """``(read(step), None)``, or ``(None, reason)`` when it fails for any reason but a
    UserError (a mismatch the user must see): a half-written or damaged step."""
    _hush_abandoned_reads()  # before: some end as the read fails, before it is caught
    try:
        return read(step), None
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001  (any failure means: try an older step)
        return None, failure_reason(e)


def _every_process_read(reason: str | None) -> str | None:
    """``reason`` agreed over the processes: a step that one process cannot read is unreadable
    on all (else they would restore different steps, and their collectives would not match)."""
    if jax.process_count() == 1:
        return reason
    from jax.experimental import multihost_utils

    read_ok = multihost_utils.process_allgather(np.int32(reason is None))
    if reason is None and not np.all(read_ok):
        return "cannot be read on another process"
    return reason


def _read_newest(
    steps: Sequence[int],
    read: Callable[[int], T],
    where: str,
    agree: Callable[[str | None], str | None] = lambda reason: reason,
) -> tuple[T, int, dict[int, str]]:
    """``(read(step), step, {newer step skipped: why})`` of the newest of ``steps`` that reads,
    trying them newest first (``agree``: the processes' verdict on each, for a restore that
    every process does). Raises UnreadableCheckpointError naming every step's reason when
    none reads."""
    reasons: dict[int, str] = {}
    for step in sorted(steps, reverse=True):
        result, reason = _try_read(read, step)
        reason = agree(reason)
        if reason is None:
            return result, step, reasons
        reasons[step] = reason
    raise UnreadableCheckpointError(
        f"no checkpoint in {where} can be read: "
        + "; ".join(f"step {step}: {why}" for step, why in reasons.items())
        + " (a crash mid-write or damaged files); move those steps aside or use a new folder"
    )


def _skipped(step: int, where: str, reason: str) -> str:
    """The start of the one line that says a step was skipped, and why."""
    return f"checkpoint at step {step} in {where} cannot be read ({reason})"


def _log_skipped(reasons: dict[int, str], where: str, used: int) -> None:
    """One warning per step of ``reasons`` left in place: what failed, and the step used;
    once per process (the first read's reason), however many reads skip it."""
    folder = storage.absolute(str(where))  # the same folder, however a caller named it
    for step, reason in reasons.items():
        if (folder, step, used) not in _SKIPS_LOGGED:
            _SKIPS_LOGGED.add((folder, step, used))
            log.warning("%s; using step %d", _skipped(step, where, reason), used)


def _restore_state(
    manager: ocp.CheckpointManager, abstract_state: Any, step: int, names: Sequence[str] | None
) -> Any:
    """The state saved at ``step`` (its entries ``names`` alone, as a dict, unless None),
    checked against ``abstract_state`` first (a mismatch raises CheckpointMismatchError) and
    restored onto its shardings. Its JSON metadata is read too: a step that
    :func:`read_checkpoint` (``vjax.load``, predict, export) cannot read is not one to resume
    or evaluate either."""
    saved = manager.item_metadata(step)["state"]
    if saved is None:
        raise ValueError("the saved state has no readable array metadata")
    if names is not None:
        saved, abstract_state = _part(saved, names), _part(abstract_state, names)
    check_compatible(saved, abstract_state, f"step {step} in {manager.directory}")
    _log_dtype_changes(saved, abstract_state, f"step {step} in {manager.directory}")
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=_restore_args(names, abstract_state), metadata=ocp.args.JsonRestore()
        ),
    )
    return restored["state"]


def _move_aside(manager: ocp.CheckpointManager, reasons: dict[int, str], used: int) -> None:
    """Renames each unreadable step ``N`` of ``reasons`` to ``N.unreadable`` (its data kept for
    the user), logs one line for each, and reloads ``manager``. While it stays, Orbax saves no
    step up to ``N``: a resume from an older step would train to ``N`` again, saving nothing.
    Every process calls it with the same ``reasons``; process 0 renames, and a failure is
    raised on every process (none is left waiting in a collective)."""
    if not reasons:
        return
    directory = epath.Path(manager.directory)
    failure = ""
    if jax.process_index() == 0:
        failure = _rename_unreadable(directory, reasons, used)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        failed = multihost_utils.broadcast_one_to_all(np.int32(bool(failure)))
        failure = failure or ("a step could not be moved aside on process 0" if failed else "")
    if failure:
        raise UserError(failure)
    manager.reload()


def _rename_unreadable(directory: epath.Path, reasons: dict[int, str], used: int) -> str:
    """Renames each step of ``reasons`` in ``directory`` to ``N.unreadable`` (``.2``, ... when
    taken), logging each; returns what failed ("" when all moved)."""
    for step, reason in reasons.items():
        target = directory / f"{step}{UNREADABLE_SUFFIX}"
        count = 1
        while target.exists():
            count += 1
            target = directory / f"{step}{UNREADABLE_SUFFIX}.{count}"
        try:
            (directory / str(step)).rename(target)
        except OSError as e:
            return (
                f"{_skipped(step, str(directory), reason)} and could not be moved aside ({e}); "
                f"move or delete it, then run again"
            )
        log.warning(
            "%s; moved it aside to %s (kept) and using step %d",
            _skipped(step, str(directory), reason),
            target.name,
            used,
        )
    return ""


def restore_latest(
    manager: ocp.CheckpointManager,
    abstract_state: Any,
    move_aside: bool = False,
    names: Sequence[str] | None = None,
) -> tuple[Any, int] | None:
    """Restores the newest checkpoint that loads, onto the shardings in ``abstract_state``
    (every process the same step): the whole state, or with ``names`` (a reading manager's;
    e.g. :data:`VARIABLES`) a dict of those entries alone, whatever the rest holds.

    A step that fails to restore (a crash mid-write, a truncated file) is skipped with one
    line naming it and why; with ``move_aside`` (a run resuming, which will save again) it is
    also renamed ``N.unreadable`` (:func:`_move_aside`), never deleted; an evaluation changes
    nothing in the folder. A complete checkpoint of another model or optimiser raises
    CheckpointMismatchError instead, and a folder whose every step fails
    UnreadableCheckpointError. Returns None when there is nothing.
    """
    steps = manager.all_steps()
    if not steps:
        return None
    read = functools.partial(_restore_state, manager, abstract_state, names=names)
    where = str(manager.directory)
    state, step, reasons = _read_newest(steps, read, where, _every_process_read)
    if move_aside:
        _move_aside(manager, reasons, step)
    else:
        _log_skipped(reasons, where, step)
    return state, step


def abstract_like(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs with shardings: the restore target for a tree of arrays."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )


def _one_local_device() -> jax.sharding.Sharding:
    return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def _read_newest_logged(
    path: str, read: Callable[[ocp.CheckpointManager, int], T]
) -> tuple[T, int]:
    """``(read(manager, step), step)`` of the newest step under ``path`` (a workdir,
    checkpoints folder or step folder: then only that step) that reads, through a read-only
    manager; each newer step that does not is logged as one line naming it and why."""
    directory, step = locate(path)
    manager = reading_manager(directory)
    steps = [step] if step is not None else manager.all_steps()
    result, used, reasons = _read_newest(steps, functools.partial(read, manager), directory)
    _log_skipped(reasons, directory, used)
    return result, used


def _read_step(manager: ocp.CheckpointManager, step: int) -> tuple[dict, dict]:
    """``(metadata, variables)`` of one step, its arrays on one local device (whatever mesh or
    process count wrote it) then on the host; the optimiser's state is not read."""
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=_one_local_device()),
        _part(manager.item_metadata(step)["state"], VARIABLES),
    )
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            metadata=ocp.args.JsonRestore(), state=_restore_args(VARIABLES, target)
        ),
    )
    state = jax.device_get(restored["state"])
    return dict(restored["metadata"]), variables_of(state)


def step_metadata(manager: ocp.CheckpointManager, step: int) -> dict:
    """The JSON metadata of one step, without reading any array."""
    restored = manager.restore(step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore()))
    return dict(restored["metadata"])


def read_checkpoint(path: str) -> tuple[dict, dict, int]:
    """Reads ``(metadata, variables, step)`` of the newest checkpoint that reads from a
    workdir, a checkpoints folder or a step folder; a newer step that does not read is logged
    as one line naming it and why. ``variables`` is ``{"params": ..., **model_state}`` of host
    numpy arrays, ready for ``model.apply``.
    """
    (metadata, variables), step = _read_newest_logged(path, _read_step)
    return metadata, variables, step


def read_metadata(path: str) -> dict:
    """The run metadata (config, class names, clip shape) of the newest checkpoint under
    ``path`` whose metadata reads (a newer one that does not is logged, as in
    :func:`read_checkpoint`), without reading any array."""
    return _read_newest_logged(path, step_metadata)[0]
