"""Deterministic, resumable batches from a random-access source (e.g. ``builder.as_data_source``).

The training batch of global step ``s`` is a pure function of ``(seed, s)``: each epoch is a
seeded permutation and batches run across epoch boundaries. A run resumed at step ``s``
therefore sees exactly the batches an uninterrupted run would, with no iterator state to save.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

Batch = dict[str, np.ndarray]


class RandomAccessSource(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> dict[str, Any]: ...


Transform = Callable[[dict[str, Any], np.random.Generator], tuple[np.ndarray, int]]
BatchTransform = Callable[[Batch, np.random.Generator], Batch]


def stack(items: Sequence[Any]) -> Any:
    """Arrays stacked on a new first axis; dicts of arrays (clips with audio) key by key."""
    if isinstance(items[0], dict):
        return {key: np.stack([item[key] for item in items]) for key in items[0]}
    return np.stack(items)


def unstack(stacked: Any) -> Iterator[Any]:
    """The items :func:`stack` stacked, one at a time."""
    if isinstance(stacked, dict):
        for i in range(len(next(iter(stacked.values())))):
            yield {key: value[i] for key, value in stacked.items()}
    else:
        yield from stacked


def _read(
    source: RandomAccessSource,
    indices: Sequence[int],
    transform: Callable[..., tuple[np.ndarray, int]] | None = None,
    rngs: Sequence[np.random.Generator] | None = None,
    pool: ThreadPoolExecutor | None = None,
) -> Batch:
    """Reads ``indices``; ``transform(example[, rng])`` turns a stored video into a clip, on
    ``pool``'s threads when given (JPEG decoding and resizing release the GIL)."""
    getitems = getattr(source, "__getitems__", None)
    examples = getitems(list(indices)) if getitems else [source[int(i)] for i in indices]
    if transform is None:
        return {
            "video": np.stack([np.asarray(np.stack(ex["video"]), np.uint8) for ex in examples]),
            "label": np.asarray([ex["label"] for ex in examples], np.int32),
        }
    args = [(ex,) for ex in examples] if rngs is None else list(zip(examples, rngs, strict=True))
    if pool is None:
        results = [transform(*a) for a in args]
    else:
        results = list(pool.map(lambda a: transform(*a), args))
    clips, labels = zip(*results, strict=True)
    inputs = stack(clips)  # several inputs per clip: {"video", "audio", "has_audio"}
    inputs = inputs if isinstance(inputs, dict) else {"video": inputs}
    return {**inputs, "label": np.asarray(labels, np.int32)}


class TrainBatches:
    """Shuffled training batches indexed by step; this process gets its slice of each batch.

    >>> batches = TrainBatches(builder.as_data_source("train"), global_batch_size=32, seed=0)
    >>> batch = batches(step=123)   # {"video": uint8 (32, T, H, W, 3), "label": int32 (32,)}

    A transform giving ``({"video", "audio", "has_audio"}, label)`` (``config.input.audio``)
    adds ``audio`` float32 ``(B, frames, mel_bins)`` and ``has_audio`` bool ``(B,)``.

    ``transform(example, rng) -> (clip, label)`` makes a clip from a stored video (random clip,
    crop, flip: :func:`vjax.data.transforms.make_train_transform`); its rng is keyed on
    ``(seed, step, row of the global batch)``, so a batch stays a pure function of
    ``(seed, step)`` whatever the number of processes. ``batch_transform(batch, rng)`` (mixup /
    cutmix) gets an rng keyed on ``(seed, step, process_index)`` and mixes within this
    process's rows. ``num_threads > 0`` runs the transforms of a batch on that many threads
    (the batch is the same).
    """

    def __init__(
        self,
        source: RandomAccessSource,
        global_batch_size: int,
        seed: int,
        process_index: int = 0,
        process_count: int = 1,
        transform: Transform | None = None,
        batch_transform: BatchTransform | None = None,
        num_threads: int = 0,
    ):
        if global_batch_size % process_count:
            raise ValueError(
                f"global batch size {global_batch_size} is not divisible by the "
                f"number of processes {process_count}"
            )
        if len(source) == 0:
            raise ValueError("the training split is empty")
        self.source = source
        self.global_batch_size = global_batch_size
        self.seed = seed
        self.local_batch_size = global_batch_size // process_count
        self.process_index = process_index
        self.transform = transform
        self.batch_transform = batch_transform
        self._pool = ThreadPoolExecutor(num_threads) if num_threads and transform else None
        self._permutations: dict[int, np.ndarray] = {}

    def _permutation(self, epoch: int) -> np.ndarray:
        """Epoch ``epoch``'s order, cached for a few epochs. The prefetch thread and precise
        BN's pass read batches at once, so the result is never read back from the cache,
        which the other thread may have just cleared."""
        permutation = self._permutations.get(epoch)
        if permutation is None:
            rng = np.random.default_rng([self.seed, epoch])
            permutation = rng.permutation(len(self.source))
            if len(self._permutations) > 4:
                self._permutations.clear()
            self._permutations[epoch] = permutation
        return permutation

    def indices(self, step: int) -> np.ndarray:
        """Example indices of this process's rows of the global batch at ``step``."""
        n = len(self.source)
        start = step * self.global_batch_size + self.process_index * self.local_batch_size
        positions = np.arange(start, start + self.local_batch_size)
        return np.asarray([self._permutation(p // n)[p % n] for p in positions])

    def __call__(self, step: int) -> Batch:
        rngs = None
        if self.transform is not None:
            first = self.process_index * self.local_batch_size
            rows = range(first, first + self.local_batch_size)
            rngs = [np.random.default_rng([self.seed, step, row]) for row in rows]
        batch = _read(self.source, self.indices(step), self.transform, rngs, self._pool)
        if self.batch_transform is not None:
            rng = np.random.default_rng([self.seed, step, 1 << 32, self.process_index])
            batch = self.batch_transform(batch, rng)
        return batch


def eval_batch(
    source: RandomAccessSource,
    global_batch_size: int,
    number: int,
    process_index: int = 0,
    process_count: int = 1,
    transform: Callable[[dict[str, Any]], tuple[np.ndarray, int]] | None = None,
) -> Batch:
    """This process's rows of evaluation batch ``number`` (examples ``number *
    global_batch_size`` on, in order; ``index``: each row's example); rows past the end repeat
    example 0 with mask 0. ``transform(example) -> (clip, label)`` is deterministic (e.g. the
    centre view)."""
    local = global_batch_size // process_count
    start = number * global_batch_size + process_index * local
    positions = np.arange(start, start + local)
    valid = positions < len(source)
    batch = _read(source, np.where(valid, positions, 0), transform)
    batch["mask"] = valid.astype(np.float32)
    batch["index"] = positions
    return batch


def eval_batches(
    source: RandomAccessSource,
    global_batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    transform: Callable[[dict[str, Any]], tuple[np.ndarray, int]] | None = None,
) -> Iterator[Batch]:
    """Every example once, in order: :func:`eval_batch` ``0, 1, ...`` (the last one padded,
    padded rows with mask 0)."""
    for number in range(num_eval_batches(len(source), global_batch_size)):
        yield eval_batch(source, global_batch_size, number, process_index, process_count, transform)


def num_eval_batches(num_examples: int, global_batch_size: int) -> int:
    return -(-num_examples // global_batch_size)


# A worker process's function (set once by the pool's initializer).
_WORKER_FUNCTION: Callable[[int], Any] | None = None


def _start_worker(factory: Callable[[], Callable[[int], Any]]) -> None:
    """Builds the worker's function. A worker ignores SIGTERM and SIGINT: Slurm, systemd and
    Ctrl-C signal the whole process group, and a loader that died of it broke the pool before
    the trainer could save its preemption checkpoint; the pool's shutdown stops it, and so
    does its parent's end, however that comes (a command without a handler dies of the
    signal the worker ignored)."""
    import signal

    global _WORKER_FUNCTION
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_parent()
    os.environ["JAX_PLATFORMS"] = "cpu"  # a loader never claims the accelerators
    _WORKER_FUNCTION = factory()


def exit_with_parent() -> None:
    """Ends this worker process as soon as its parent has ended, however that comes (SIGKILL,
    the out-of-memory killer): a pool's worker otherwise waits for work forever, orphaned. A
    process pool's ``initializer``; nothing in a process that is not a multiprocessing child."""
    import multiprocessing

    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: Any) -> None:
    """Ends this worker as soon as ``parent`` (a multiprocessing process) has ended."""
    from multiprocessing.connection import wait

    wait([parent.sentinel])
    os._exit(0)


def _worker_call(index: int) -> Any:
    return _WORKER_FUNCTION(index)


class ProcessMap:
    """``f(i)`` computed by ``num_workers`` processes, each building its own ``f`` with
    ``factory()`` (picklable, e.g. a ``functools.partial`` of a module-level function): the
    trainer's batches by step, the multi-view test's views by video. For a pure ``f`` the
    result is the same as in one process. The pool works up to ``ahead`` indices past the one
    asked for (calls in increasing order never wait for more than one result), never past
    ``stop``. Thread-safe; an index asked for twice is computed twice.

    >>> batches = ProcessMap(functools.partial(make_batches, config), 8, stop=num_steps)
    >>> batch = batches(0)       # the same arrays as make_batches(config)(0)
    >>> batches.close()
    """

    def __init__(
        self,
        factory: Callable[[], Callable[[int], Any]],
        num_workers: int,
        stop: int | None = None,
        ahead: int | None = None,
    ):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        context = multiprocessing.get_context("spawn")  # no forked JAX/TF state in workers
        self._pool = ProcessPoolExecutor(num_workers, context, _start_worker, (factory,))
        self._ahead = ahead or 2 * num_workers
        self._stop = stop
        self._pending: dict[int, Any] = {}
        self._lock = threading.Lock()

    def __call__(self, index: int) -> Any:
        last = index + self._ahead if self._stop is None else min(index + self._ahead, self._stop)
        with self._lock:  # callers may share it (the prefetch thread and precise BN)
            for i in range(index, max(last, index + 1)):
                if i not in self._pending:
                    self._pending[i] = self._pool.submit(_worker_call, i)
            for i in [i for i in self._pending if i < index - self._ahead]:  # left far behind
                self._pending.pop(i).cancel()
            future = self._pending.pop(index)
        return future.result()

    def close(self) -> None:
        """Stops the workers (pending results are dropped)."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def _put(buffer: queue.Queue, stop: threading.Event, item: Any) -> bool:
    """Puts ``item`` into ``buffer``, waiting while it is full, unless ``stop`` is set first
    (the consumer has gone: nobody would ever take it). True when it was put."""
    while not stop.is_set():
        try:
            buffer.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def prefetch(make: Callable[[int], Any], steps: range, size: int = 2) -> Iterator[Any]:
    """Yields ``make(step)`` for each step, computed ``size`` steps ahead in a background thread.
    Closing it early (a break, an error, a preemption) stops the thread, whatever it was about
    to hand over: every item, the end and an error are put only while the consumer is there."""
    buffer: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()

    def worker():
        try:
            for step in steps:
                if not _put(buffer, stop, (make(step), None)):
                    return
        except BaseException as e:  # surfaced in the consumer, not lost in the thread
            _put(buffer, stop, (None, e))
            return
        _put(buffer, stop, (None, StopIteration()))

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        while True:
            item, error = buffer.get()
            if isinstance(error, StopIteration):
                return
            if error is not None:
                raise error
            yield item
    finally:  # closed early (e.g. a preemption): let the worker finish before anyone exits
        stop.set()
        thread.join()
