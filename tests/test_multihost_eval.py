"""Multi-host evaluation pairs every logit with its own label, on meshes where a process's rows
are not one block of the global batch.

Two real ``jax.distributed`` processes x 2 CPU devices run ``train.evaluate`` and
``train.evaluate_views`` on two meshes: ``fsdp`` spanning the processes
(``dcn_mesh=(("fsdp", 2),)``) and ``fsdp`` listed before ``data``. Process ``p``'s examples are
labelled ``10 * p + row`` and its videos carry their label in their pixels; the stand-in eval
step predicts exactly that pixel, so every metric is perfect iff logits meet their labels
(masked rows carry a wrong pixel, so a misplaced mask shows too). No model or dataset is
built: one subprocess pair covers both meshes in a few seconds.
"""

import json
import os
import subprocess
import sys

CLASSES, PER_PROCESS_BATCH, NUM_VIDEOS, VIEWS = 20, 4, 7, 3
MESHES = {  # name: (mesh, dcn_mesh), the two layouts the issue names
    "fsdp_over_processes": ((("data", -1), ("fsdp", 1)), (("fsdp", 2),)),
    "fsdp_before_data": ((("fsdp", 2), ("data", 2)), ()),
}


def _pixels(labels):
    import numpy as np

    labels = np.asarray(labels, np.uint8)
    return np.broadcast_to(labels[:, None, None, None, None], (len(labels), 1, 1, 1, 3)).copy()


def _experiment(mesh_axes, dcn_axes):
    """An Experiment with just what evaluation reads, and an eval step that predicts the
    label written in a video's first pixel."""
    from types import SimpleNamespace

    import jax
    import ml_collections

    from vjax import parallel, train

    mesh = parallel.make_mesh(mesh_axes, dcn_axes=dcn_axes)
    rules = (("batch", ("data", "fsdp")),)
    sharding = parallel.batch_sharding(mesh, rules)
    sizes = {"validation": 2 * 2 * PER_PROCESS_BATCH, "test": NUM_VIDEOS}
    splits = {split: SimpleNamespace(num_examples=n) for split, n in sizes.items()}
    builder = SimpleNamespace(
        info=SimpleNamespace(splits=splits), as_data_source=lambda split: range(sizes[split])
    )
    exp = train.Experiment(
        config=ml_collections.ConfigDict({"input": {"global_batch_size": 8, "num_workers": 0}}),
        mesh=mesh,
        rules=rules,
        builder=builder,
        class_names=[f"c{i}" for i in range(CLASSES)],
        model=None,
        input_shape=(8, 1, 1, 1, 3),
        state_shardings=None,
        batch_sharding=sharding,
        tx=None,
        init_state=None,
    )
    eval_step = jax.jit(
        lambda variables, batch: jax.nn.one_hot(batch["video"][:, 0, 0, 0, 0], CLASSES),
        in_shardings=(None, sharding),
        out_shardings=sharding,
    )
    return exp, eval_step


def _worker() -> None:
    """One process: both meshes, ``evaluate`` and ``evaluate_views``; process 0 prints JSON."""
    import contextlib

    import jax
    import numpy as np

    from vjax import distributed, parallel, train

    distributed.initialize()
    pid = jax.process_index()

    def eval_batch(i):  # 2 batches of 4 local rows; the last row of each is masked out
        labels = 10 * pid + PER_PROCESS_BATCH * i + np.arange(PER_PROCESS_BATCH)
        mask = np.arange(PER_PROCESS_BATCH) < PER_PROCESS_BATCH - 1
        index = 2 * PER_PROCESS_BATCH * i + PER_PROCESS_BATCH * pid + np.arange(PER_PROCESS_BATCH)
        video = _pixels(np.where(mask, labels, labels + 1))
        return {"video": video, "label": labels, "mask": mask, "index": index}

    def video_views(k):  # process p's k-th video (process 1's last one is padding)
        return {"views": _pixels([10 * pid + k] * VIEWS), "label": 10 * pid + k}

    @contextlib.contextmanager
    def data_map(exp, kind, split, stop):
        yield eval_batch if kind == "eval" else video_views

    train._data_map = data_map
    results = {}
    for name, (mesh_axes, dcn_axes) in MESHES.items():
        exp, eval_step = _experiment(mesh_axes, dcn_axes)
        rows = jax.make_array_from_callback((8,), exp.batch_sharding, lambda i: np.arange(8)[i])
        results[name] = {
            "my_rows": parallel.process_rows(rows).tolist(),
            "evaluate": train.evaluate(exp, eval_step, None, "validation"),
            "views": train.evaluate_views(exp, eval_step, None, "test"),
        }
    if pid == 0:
        print("RESULTS " + json.dumps(results))


def test_logits_meet_their_labels_on_two_processes():
    from conftest import REPO  # here: the worker processes must not import conftest's 8 devices

    sys.path.insert(0, os.path.join(REPO, "launch"))
    import local

    port = local.free_port()
    env = {**os.environ, "PYTHONPATH": REPO}
    procs = [
        subprocess.Popen(
            [sys.executable, __file__],
            cwd=REPO,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**env, **local.process_env(i, 2, port, "cpu", 2)},
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    line = next(x for x in outputs[0].splitlines() if x.startswith("RESULTS "))
    results = json.loads(line.removeprefix("RESULTS "))
    for name, result in results.items():
        # The layout really interleaves: process 0 does not hold global rows 0-3.
        assert result["my_rows"] != [0, 1, 2, 3], name
        evaluated = result["evaluate"]
        assert evaluated["num_examples"] == 2 * 2 * (PER_PROCESS_BATCH - 1), name
        assert evaluated["top1"] == 1.0 and evaluated["mean_class_accuracy"] == 1.0, name
        # Scored in the split's order (gathered, process 0's rows came first).
        in_order = [0, 1, 2, 10, 11, 12, 4, 5, 6, 14, 15, 16]
        assert evaluated["per_video"]["label"] == in_order, name
        views = result["views"]
        assert views["num_examples"] == NUM_VIDEOS and views["top1"] == 1.0, name
        assert views["per_video"]["label"] == [0, 10, 1, 11, 2, 12, 3], name  # videos 0, 1, ...
        present = [c for c, a in views["per_class_accuracy"].items() if a is not None]
        assert present == ["c0", "c1", "c2", "c3", "c10", "c11", "c12"], name


if __name__ == "__main__":
    _worker()
