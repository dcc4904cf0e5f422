"""Deterministic, resumable batches from a random-access source (e.g. ``builder.as_data_source``).

The training batch of global step ``s`` is a pure function of ``(seed, s)``: each epoch is a
seeded permutation and batches run across epoch boundaries. A run resumed at step ``s``
therefore sees exactly the batches an uninterrupted run would, with no iterator state to save.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np

Batch = dict[str, np.ndarray]


class RandomAccessSource(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> dict[str, Any]: ...


def _read(source: RandomAccessSource, indices: Sequence[int]) -> Batch:
    getitems = getattr(source, "__getitems__", None)
    examples = getitems(list(indices)) if getitems else [source[int(i)] for i in indices]
    return {
        "video": np.stack([np.asarray(np.stack(ex["video"]), np.uint8) for ex in examples]),
        "label": np.asarray([ex["label"] for ex in examples], np.int32),
    }


class TrainBatches:
    """Shuffled training batches indexed by step; this process gets its slice of each batch.

    >>> batches = TrainBatches(builder.as_data_source("train"), global_batch_size=32, seed=0)
    >>> batch = batches(step=123)   # {"video": uint8 (32, T, H, W, 3), "label": int32 (32,)}
    """

    def __init__(
        self,
        source: RandomAccessSource,
        global_batch_size: int,
        seed: int,
        process_index: int = 0,
        process_count: int = 1,
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
        self._permutations: dict[int, np.ndarray] = {}

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._permutations:
            if len(self._permutations) > 4:
                self._permutations.clear()
            rng = np.random.default_rng([self.seed, epoch])
            self._permutations[epoch] = rng.permutation(len(self.source))
        return self._permutations[epoch]

    def indices(self, step: int) -> np.ndarray:
        """Example indices of this process's rows of the global batch at ``step``."""
        n = len(self.source)
        start = step * self.global_batch_size + self.process_index * self.local_batch_size
        positions = np.arange(start, start + self.local_batch_size)
        return np.asarray([self._permutation(p // n)[p % n] for p in positions])

    def __call__(self, step: int) -> Batch:
        return _read(self.source, self.indices(step))


def eval_batches(
    source: RandomAccessSource,
    global_batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[Batch]:
    """Every example once, in order; the last batch is padded and padded rows have mask 0."""
    local = global_batch_size // process_count
    n = len(source)
    for start in range(0, n, global_batch_size):
        positions = np.arange(start + process_index * local, start + (process_index + 1) * local)
        valid = positions < n
        batch = _read(source, np.where(valid, positions, 0))
        batch["mask"] = valid.astype(np.float32)
        yield batch


def prefetch(make: Callable[[int], Any], steps: range, size: int = 2) -> Iterator[Any]:
    """Yields ``make(step)`` for each step, computed ``size`` steps ahead in a background thread."""
    buffer: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()

    def worker():
        try:
            for step in steps:
                item = make(step)
                while not stop.is_set():
                    try:
                        buffer.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as e:  # surfaced in the consumer, not lost in the thread
            buffer.put((None, e))
            return
        buffer.put((None, StopIteration()))

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
    finally:
        stop.set()
