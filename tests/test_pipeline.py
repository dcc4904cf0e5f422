"""Step-indexed batches: deterministic, covering each epoch once, split across processes."""

import os
import time

import numpy as np
import pytest

from vjax.data.pipeline import TrainBatches, eval_batches, prefetch


class FakeSource:
    """A random-access source whose video encodes the example index (frames as a list, as
    TFDS data sources return them)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"video": [np.full((2, 2, 3), i, np.uint8)] * 2, "label": i % 3}


def test_batches_are_a_pure_function_of_seed_and_step():
    a, b = TrainBatches(FakeSource(10), 4, seed=0), TrainBatches(FakeSource(10), 4, seed=0)
    for step in (7, 0, 3):  # any order: no iterator state
        np.testing.assert_array_equal(a(step)["video"], b(step)["video"])
    assert not np.array_equal(a.indices(0), TrainBatches(FakeSource(10), 4, seed=1).indices(0))
    batch = a(2)
    assert batch["video"].shape == (4, 2, 2, 2, 3) and batch["video"].dtype == np.uint8
    np.testing.assert_array_equal(batch["label"], batch["video"][:, 0, 0, 0, 0] % 3)


def test_each_epoch_visits_every_example_once_across_step_boundaries():
    batches = TrainBatches(FakeSource(10), 4, seed=3)
    seen = np.concatenate([batches.indices(s) for s in range(5)])  # 20 = two epochs
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
    assert list(seen[:10]) != list(seen[10:])  # reshuffled per epoch


class _ClearedByAnotherThread(dict):
    """A permutation cache another thread clears right after each insertion (its cache was
    full: the interleaving that raised KeyError when a prefetch thread and precise BN's
    statistics pass read batches of one TrainBatches at once)."""

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self.clear()


def test_batch_indices_survive_another_thread_clearing_the_permutation_cache():
    batches = TrainBatches(FakeSource(10), 4, seed=3)
    expected = [batches.indices(s) for s in range(5)]
    racing = TrainBatches(FakeSource(10), 4, seed=3)
    racing._permutations = _ClearedByAnotherThread()
    for step in range(5):
        np.testing.assert_array_equal(racing.indices(step), expected[step])


def test_processes_get_disjoint_slices_of_the_same_global_batch():
    whole = TrainBatches(FakeSource(10), 4, seed=0).indices(3)
    parts = [TrainBatches(FakeSource(10), 4, 0, p, 2).indices(3) for p in range(2)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    with pytest.raises(ValueError, match="not divisible"):
        TrainBatches(FakeSource(10), 5, 0, 0, 2)


def test_eval_batches_cover_everything_once_with_a_padding_mask():
    batches = list(eval_batches(FakeSource(10), 4))
    assert [b["video"].shape[0] for b in batches] == [4, 4, 4]
    mask = np.concatenate([b["mask"] for b in batches])
    ids = np.concatenate([b["video"][:, 0, 0, 0, 0] for b in batches])
    assert mask.sum() == 10 and sorted(ids[mask > 0]) == list(range(10))


def test_prefetch_preserves_order_and_surfaces_errors():
    assert list(prefetch(lambda s: s * s, range(6))) == [0, 1, 4, 9, 16, 25]

    def fails(step):
        if step == 2:
            raise OSError("unreadable record 2")
        return step

    with pytest.raises(OSError, match="record 2"):
        list(prefetch(fails, range(5)))


@pytest.mark.parametrize("steps, fails_at", [(3, None), (4, 3)], ids=["end", "error"])
def test_prefetch_closed_early_returns_when_the_producer_has_finished(steps, fails_at):
    """Closing prefetch while its buffer is full and the producer holds its end marker (or the
    error of its last step) returns: a training loop that stops in its last steps (a NaN,
    Ctrl-C, a preemption) must not hang in the prefetch thread's join."""
    import threading
    import time

    made_last = threading.Event()

    def make(step):
        if step == steps - 1:
            made_last.set()
        if step == fails_at:
            raise OSError(f"unreadable record {step}")
        return step

    def take_one_then_close():
        batches = prefetch(make, range(steps))
        assert next(batches) == 0  # the next two steps fill the buffer of 2
        made_last.wait(5)
        time.sleep(0.3)  # the producer is at its last put, into the full buffer
        batches.close()

    closer = threading.Thread(target=take_one_then_close, daemon=True)
    closer.start()
    closer.join(10)
    assert not closer.is_alive(), "closing prefetch early never returned"


def _shuffled_batches(seed: int) -> TrainBatches:
    """A loader process's batch function (module level, so spawned workers can import it)."""
    return TrainBatches(FakeSource(10), 4, seed=seed)


def test_loader_processes_outlive_the_signals_sent_to_the_whole_job():
    """Slurm's preemption notice, systemd and Ctrl-C signal every process of the job: the
    loaders ignore SIGTERM and SIGINT (the trainer handles them, and saves), so batches keep
    coming; they broke the pool (BrokenProcessPool) before the preemption checkpoint."""
    import functools
    import signal

    from vjax.data.pipeline import ProcessMap

    batches = ProcessMap(functools.partial(_shuffled_batches, 5), 1, stop=12)
    try:
        batches(0)  # the worker runs
        for pid in list(batches._pool._processes):
            os.kill(pid, signal.SIGTERM)
            os.kill(pid, signal.SIGINT)
        time.sleep(0.5)
        np.testing.assert_array_equal(batches(6)["video"], _shuffled_batches(5)(6)["video"])
    finally:
        batches.close()


ORPHAN = """
import functools, sys, time
sys.path.insert(0, {tests!r})
from test_pipeline import _shuffled_batches
from vjax.data.pipeline import ProcessMap
if __name__ == "__main__":
    batches = ProcessMap(functools.partial(_shuffled_batches, 5), 1, stop=12)
    batches(0)
    print(*batches._pool._processes, flush=True)
    time.sleep(60)
"""


def test_loader_processes_end_with_a_command_the_signal_ends():
    """A command without a SIGTERM handler (vjax eval, a bench's test phase) dies of the
    group's signal; its workers, which ignore it, end with it instead of being left behind
    holding their dataset readers."""
    import signal
    import subprocess
    import sys

    script = ORPHAN.format(tests=os.path.dirname(os.path.abspath(__file__)))
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                               text=True, start_new_session=True)  # fmt: skip
    workers = [int(pid) for pid in process.stdout.readline().split()]
    assert workers
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)
    deadline = time.time() + 20
    while time.time() < deadline and any(os.path.exists(f"/proc/{w}") for w in workers):
        time.sleep(0.1)
    alive = [w for w in workers if os.path.exists(f"/proc/{w}")]
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive, "loader workers outlived their command"


def test_loader_processes_make_the_same_batches_in_any_call_order():
    import functools
    import threading

    from vjax.data.pipeline import ProcessMap

    direct = _shuffled_batches(5)
    batches = ProcessMap(functools.partial(_shuffled_batches, 5), 2, stop=12)
    try:
        order = [0, 1, 2, 3, 9, 4, 4, 11, 0]  # in order (the trainer), jumps, a repeat, back
        for step in order:
            got, want = batches(step), direct(step)
            np.testing.assert_array_equal(got["video"], want["video"])
            np.testing.assert_array_equal(got["label"], want["label"])
        results = {}  # two threads at once (the prefetch thread and precise BN)
        threads = [
            threading.Thread(target=lambda s=s: results.update({s: batches(s)}))
            for s in (5, 6, 5, 7)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for step, got in results.items():
            np.testing.assert_array_equal(got["video"], direct(step)["video"])
    finally:
        batches.close()


def test_one_loader_per_core_is_capped(monkeypatch):
    """``input.num_workers=-1``: one process per core, at most MAX_AUTO_WORKERS (each holds
    its own dataset reader); explicit counts are taken as given."""
    import ml_collections

    from vjax import train

    def workers(value, cores):
        monkeypatch.setattr(train.os, "cpu_count", lambda: cores)
        config = ml_collections.ConfigDict({"input": {"num_workers": value}})
        return train._num_workers(config)

    assert workers(-1, 2) == 2
    assert workers(-1, 200) == train.MAX_AUTO_WORKERS == 32
    assert workers(48, 200) == 48 and workers(0, 200) == 0
