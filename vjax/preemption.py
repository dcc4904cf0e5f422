"""Preemption: on SIGTERM (what TPU maintenance events, SLURM and Kubernetes send before killing
a job), finish the current step, save a checkpoint and exit cleanly.

With several processes, JAX's preemption service (started by ``jax.distributed.initialize``)
catches the signal on whichever host gets it and agrees with all hosts on one call to stop
at (``multihost_utils.reached_preemption_sync_point``); on one process a signal handler does.
Every process must ask at the same points (after each step, before each validation batch),
so that the n-th question means the same place on all of them.

>>> with PreemptionWatcher() as preempted:
...     for step in steps:
...         ...
...         if preempted():
...             save(step); break
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import jax
from jax.experimental import multihost_utils


class PreemptionWatcher:
    """Context manager; calling it says whether to save and stop now (asked at the same
    points on every process)."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)):
        self._signals = signals
        self._received: int | None = None
        self._previous: dict[int, object] = {}
        self._multi = jax.process_count() > 1
        self._questions = 0  # the service's "step": rises by one per question, on every process

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._received = signum

    def __enter__(self) -> PreemptionWatcher:
        # Handlers can only be installed from the main thread; elsewhere (e.g. a notebook's
        # worker thread) preemption is simply not watched on a single process.
        if not self._multi and threading.current_thread() is threading.main_thread():
            for sig in self._signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __call__(self) -> bool:
        if self._multi:
            self._questions += 1
            return multihost_utils.reached_preemption_sync_point(self._questions)
        return self._received is not None
