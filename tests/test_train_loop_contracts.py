"""Tests written from a mutation audit of the training loop (vjax/train.py, vjax/step.py,
vjax/preemption.py, vjax/loss_scale.py, vjax/objectives.py): each one fails on a mutant that the
suite let through and that a researcher would notice as a wrong number, a lost checkpoint or an
ignored setting. One tiny run off every cadence (7 steps: log every 3, validate every 5,
checkpoint every 4, keep 1) serves most of them."""

import os
import signal
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import randomized, tiny_config

from vjax import train
from vjax.metric_writers import read_metrics

ODD = {
    "train.num_steps": "7",
    "train.log_every": "3",
    "train.eval_every": "5",
    "train.checkpoint_every": "4",
    "train.keep_checkpoints": "1",
}


def _steps(workdir: str) -> list[str]:
    return sorted(os.listdir(os.path.join(workdir, "checkpoints")))


def _timed_steps(monkeypatch, keys: list | None = None):
    """Makes train.py's clock a fake one that only train steps advance, step k by k seconds,
    and records the key each step is given (``keys``)."""
    clock = {"now": 0.0, "steps": 0}
    compile_steps = train.compile_steps

    def timed_compile(exp):
        train_step, eval_step = compile_steps(exp)

        def timed(state, batch, key):
            clock["steps"] += 1
            clock["now"] += clock["steps"]
            if keys is not None:
                keys.append(np.asarray(jax.random.key_data(key)))
            return train_step(state, batch, key)

        return timed, eval_step

    class FakeTime:
        @staticmethod
        def perf_counter():
            return clock["now"]

    monkeypatch.setattr(train, "compile_steps", timed_compile)
    monkeypatch.setattr(train, "time", FakeTime)


@pytest.fixture(scope="module")
def odd_run(data_dir, tmp_path_factory):
    """``(config, workdir, returned result, SIGTERM handler before, after)`` of the 7-step run."""
    workdir = str(tmp_path_factory.mktemp("odd"))
    config = tiny_config(data_dir, **ODD)
    with pytest.MonkeyPatch.context() as monkeypatch:
        _timed_steps(monkeypatch)
        before = signal.getsignal(signal.SIGTERM)
        result = train.train(config, workdir)
        after = signal.getsignal(signal.SIGTERM)
    return config, workdir, result, before, after


def test_last_step_is_logged_and_validated_off_the_cadence(odd_run):
    """A run whose length is no multiple of log_every / eval_every still logs and validates its last
    step."""
    _, workdir, _, _, _ = odd_run
    records = read_metrics(workdir)
    assert [r["step"] for r in records if r["split"] == "train"] == [3, 6, 7]
    assert [r["step"] for r in records if r["split"] == "validation"] == [5, 7]


def test_keep_checkpoints_is_obeyed_by_training(odd_run):
    """train.keep_checkpoints=1 leaves only the last checkpoint (7), not also 4."""
    _, workdir, _, _, _ = odd_run
    assert _steps(workdir) == ["7"]


def test_returned_result_is_the_final_checkpoint_scored_on_validation(odd_run):
    """What train() returns (and logs last) is the final checkpoint's validation, as vjax eval
    scores it."""
    config, workdir, result, _, _ = odd_run
    assert result["split"] == "validation"
    again = train.evaluate_checkpoint(config, workdir, "validation")
    assert again.pop("step") == 7
    assert result["num_examples"] == again["num_examples"] == config.dataset.num_validation
    for key in ("loss", "top1", "top5"):
        assert result[key] == pytest.approx(again[key], rel=1e-6), key
    logged = [r for r in read_metrics(workdir) if r["split"] == "validation"][-1]
    assert logged["loss"] == pytest.approx(again["loss"], rel=1e-6)


def test_logged_train_metrics_are_the_mean_over_each_log_window(odd_run, data_dir, tmp_path):
    """The loss logged at step 6 is the mean of steps 4-6's losses (as a log_every=1 run logs them),
    step 7's its own."""
    config, workdir, _, _, _ = odd_run
    every = tiny_config(data_dir, **{**ODD, "train.log_every": "1"})
    train.train(every, str(tmp_path))
    per_step = {r["step"]: r for r in read_metrics(str(tmp_path)) if r["split"] == "train"}
    logged = {r["step"]: r for r in read_metrics(workdir) if r["split"] == "train"}
    for step, window in ((3, (1, 2, 3)), (6, (4, 5, 6)), (7, (7,))):
        for key in ("loss", "grad_norm"):
            expected = np.mean([per_step[s][key] for s in window])
            assert logged[step][key] == pytest.approx(expected, rel=1e-5), (step, key)


def test_steps_per_sec_is_the_rate_since_the_last_log(odd_run):
    """steps_per_sec = steps since the last log / seconds since it (fake clock: step k takes k)."""
    _, workdir, _, _, _ = odd_run
    rates = {r["step"]: r["steps_per_sec"] for r in read_metrics(workdir) if r["split"] == "train"}
    assert rates[3] == pytest.approx(3 / (1 + 2 + 3))
    assert rates[6] == pytest.approx(3 / (4 + 5 + 6))
    assert rates[7] == pytest.approx(1 / 7)


def test_sigterm_handler_is_restored_after_training(odd_run):
    """After train() returns, SIGTERM is handled as before (not swallowed by the loop's watcher)."""
    _, _, _, before, after = odd_run
    assert after == before


def test_a_finished_run_submitted_again_at_its_length_says_so(odd_run, capsys):
    """The same command again on a run already at train.num_steps trains nothing and says so."""
    config, workdir, _, _, _ = odd_run
    capsys.readouterr()
    assert train.train(config, workdir) == {}
    assert "already at step 7 of train.num_steps=7: nothing to train" in capsys.readouterr().out


def test_sigterm_between_steps_saves_that_step_at_once(data_dir, tmp_path, monkeypatch):
    """A preemption notice during step 3 saves step 3 and stops there, not at the next validation or
    checkpoint, and logs the metrics of the steps since the last log (step 3's: they were
    dropped)."""
    from vjax.metric_writers import read_metrics

    compile_steps = train.compile_steps
    calls = []

    def signalling_compile(exp):
        train_step, eval_step = compile_steps(exp)

        def step(state, batch, key):
            calls.append(1)
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGTERM)  # handled by the training loop's watcher
            return train_step(state, batch, key)

        return step, eval_step

    monkeypatch.setattr(train, "compile_steps", signalling_compile)
    workdir = str(tmp_path)
    config = tiny_config(data_dir, **{"train.num_steps": "6", "train.checkpoint_every": "6"})
    assert train.train(config, workdir) == {"preempted_at": 3}
    assert len(calls) == 3 and _steps(workdir) == ["3"]
    assert [r["step"] for r in read_metrics(workdir) if r["split"] == "train"] == [2, 3]
    # Step 3 was to be validated: the same command validates it first, then trains on.
    monkeypatch.setattr(train, "compile_steps", compile_steps)
    train.train(config, workdir)
    assert [r["step"] for r in read_metrics(workdir) if r["split"] == "validation"] == [3, 6]


def test_resume_past_an_unreadable_newest_step_moves_it_aside_and_trains_on(odd_run, tmp_path):
    """A run whose newest checkpoint cannot be read resumes from the one before, keeps the bad one
    as N.unreadable, and finishes."""
    import shutil

    config, finished, _, _, _ = odd_run
    workdir = str(tmp_path / "run")
    shutil.copytree(finished, workdir)
    # keep 1 left only step 7: train to 8 first (checkpoint at 8, keep 2), then damage 8.
    longer = tiny_config(config.dataset.data_dir, **{**ODD, "train.num_steps": "8",
                                                     "train.keep_checkpoints": "2"})  # fmt: skip
    train.train(longer, workdir)
    assert _steps(workdir) == ["7", "8"]
    for root, _, files in os.walk(os.path.join(workdir, "checkpoints", "8", "state")):
        for name in files:
            open(os.path.join(root, name), "wb").close()  # a crash mid-write
    train.train(longer, workdir)
    assert _steps(workdir) == ["7", "8", "8.unreadable"]


def test_config_seed_reaches_the_initial_parameters_and_the_step_keys(
    data_dir, tmp_path, monkeypatch
):
    """Two seeds start from different parameters and give the train step different keys (dropout,
    masks)."""
    params, keys = {}, {}
    for seed in (0, 1):
        # 2 steps: the train step other tests compile (num_steps is compiled into it)
        config = tiny_config(data_dir, **{"seed": str(seed), "train.num_steps": "2"})
        exp = train.setup(config)
        _, state, _ = train._start_state(exp, str(tmp_path / f"init{seed}"), True)
        params[seed] = jax.tree.leaves(jax.device_get(state.params))
        keys[seed] = []
        with monkeypatch.context() as patch:
            _timed_steps(patch, keys[seed])
            train.train(config, str(tmp_path / f"run{seed}"))
    assert any(not np.array_equal(a, b) for a, b in zip(params[0], params[1], strict=True))
    assert not np.array_equal(keys[0][0], keys[1][0])


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # lr 1e39 in float32
def test_state_gone_non_finite_stops_at_the_validation_of_that_step(data_dir, tmp_path):
    """A state gone non-finite at step 1 stops the run at step 1's validation, not steps later at a
    log."""
    config = tiny_config(data_dir, **{
        "train.num_steps": "4", "train.eval_every": "1", "train.log_every": "100",
        "train.checkpoint_every": "100", "optimizer.lr": "1e39", "optimizer.warmup_steps": "0",
    })  # fmt: skip
    with pytest.raises(
        train.NonFiniteLossError, match="non-finite parameters or optimiser state at step 1"
    ):
        train.train(config, str(tmp_path))
    assert not [r for r in read_metrics(str(tmp_path)) if r["split"] == "validation"]


def _stub_experiment(num_examples: int, batch_size: int = 8):
    """An Experiment with just what train.evaluate reads (a validation split of
    ``num_examples``), as tests/test_multihost_eval.py builds one."""
    from types import SimpleNamespace

    import ml_collections

    from vjax import parallel

    mesh = parallel.make_mesh((("data", -1),))
    rules = (("batch", ("data",)),)
    info = SimpleNamespace(splits={"validation": SimpleNamespace(num_examples=num_examples)})
    config = {"input": {"global_batch_size": batch_size, "num_workers": 0}}
    return train.Experiment(
        config=ml_collections.ConfigDict(config), mesh=mesh, rules=rules,
        builder=SimpleNamespace(info=info), class_names=[f"c{i}" for i in range(20)],
        model=None, input_shape=(batch_size, 1, 1, 1, 3), state_shardings=None,
        batch_sharding=parallel.batch_sharding(mesh, rules), tx=None, init_state=None,
    )  # fmt: skip


def _labelled_batches(num_examples: int, batch_size: int = 8, **extra):
    """``_data_map`` stand-in: batch ``i`` holds examples ``8i ..`` (label = index, written in
    the first pixel), rows past the split masked."""
    import contextlib

    @contextlib.contextmanager
    def data_map(exp, kind, split, stop):
        def batch(i):
            index = batch_size * i + np.arange(batch_size)
            video = np.broadcast_to(
                (index % 20).astype(np.uint8)[:, None, None, None, None], (batch_size, 1, 1, 1, 3)
            ).copy()
            rows = {"video": video, "label": index % 20, "mask": index < num_examples}
            return {**rows, **{k: v(index) for k, v in extra.items()}}

        yield batch

    return data_map


def test_validation_scores_every_example_of_a_split_one_past_a_whole_batch(monkeypatch):
    """A validation split of 9 examples in batches of 8 is scored on all 9 (two batches), each
    right."""
    exp = _stub_experiment(9)
    monkeypatch.setattr(train, "_data_map", _labelled_batches(9))
    eval_step = jax.jit(lambda variables, batch: jax.nn.one_hot(batch["video"][:, 0, 0, 0, 0], 20))
    result = train.evaluate(exp, eval_step, None, "validation")
    assert result["num_examples"] == 9 and result["top1"] == 1.0


def test_validation_ships_has_audio_to_the_model(monkeypatch):
    """Validation gives the model the batch's has_audio (clips without sound), as training does."""
    exp = _stub_experiment(8)
    extra = {"label": lambda index: index % 2, "has_audio": lambda index: index % 2 == 1}
    monkeypatch.setattr(train, "_data_map", _labelled_batches(8, **extra))

    def eval_step(variables, batch):  # predicts class 1 for a clip with sound, 0 without
        return jax.nn.one_hot(batch["has_audio"].astype(jnp.int32), 20)

    result = train.evaluate(exp, jax.jit(eval_step), None, "validation")
    assert result["num_examples"] == 8 and result["top1"] == 1.0


def test_train_step_minimises_the_configured_smoothed_loss_on_normalised_clips(odd_run):
    """The compiled train step's loss is cross-entropy against labels smoothed by
    optimizer.label_smoothing, on clips normalised by input.mean/std."""
    import flax.linen as nn
    import optax

    from vjax import checkpoint, parallel

    _, workdir, _, _, _ = odd_run
    overrides = {"optimizer.label_smoothing": "0.3", "input.std": "(0.2, 0.3, 0.4)"}
    config = tiny_config(odd_run[0].dataset.data_dir, **overrides)
    exp = train.setup(config)
    # a trained state with its head scaled up: a fresh one's zero head gives uniform logits,
    # whose loss is log(4) for any targets and input, and 7 steps' logits are ~1e-3
    manager = checkpoint.make_manager(os.path.join(workdir, "checkpoints"), 1)
    state, _ = train.restore_state(exp, manager)
    louder = lambda path, x: x * 1000 if "classifier" in jax.tree_util.keystr(path) else x  # noqa: E731
    state = state.replace(params=jax.tree_util.tree_map_with_path(louder, state.params))
    rng = np.random.default_rng(0)
    batch = {"video": rng.integers(0, 256, exp.input_shape, np.uint8),
             "label": rng.integers(0, 4, exp.input_shape[:1]).astype(np.int32)}  # fmt: skip
    mean, std = np.float32(config.input.mean), np.float32(config.input.std)
    video = (batch["video"].astype(np.float32) / 255.0 - mean) / std  # written out, not vjax's
    logits = exp.model.apply(jax.device_get(state.variables), video, train=False)
    targets = optax.smooth_labels(jax.nn.one_hot(batch["label"], 4), 0.3)
    expected = float(optax.softmax_cross_entropy(logits, targets).mean())
    train_step, _ = train.compile_steps(exp)
    with jax.set_mesh(exp.mesh), nn.logical_axis_rules(exp.rules):
        _, metrics = train_step(
            state, parallel.global_batch(batch, exp.batch_sharding), jax.random.key(0)
        )
    assert float(metrics["loss"]) == pytest.approx(expected, rel=1e-5)


def test_each_step_draws_new_dropout_from_the_same_key():
    """The loop passes one key to every step: the step folds its count in, so step 0 and step 1 drop
    different units."""
    import flax.linen as nn
    import optax

    from vjax.models import build_model
    from vjax.step import make_init_state, make_train_step

    config = {"name": "vivit", "size": "Ti/8x2", "num_layers": 1, "hidden_size": 16,
              "num_heads": 2, "mlp_dim": 32, "dropout_rate": 0.5}  # fmt: skip
    model = build_model(config, 4)
    tx = optax.sgd(0.0)  # the parameters stay put: only the dropout can differ
    init = make_init_state(model, tx, (4, 16, 16, 3))
    state = jax.jit(lambda key: nn.meta.unbox(init(key)))(jax.random.key(0))
    # Random parameters: from a fresh init only the (zero) head has a gradient, and a norm over
    # the head alone would pass.
    state = state.replace(params=randomized({"params": state.params})["params"])
    rng = np.random.default_rng(0)
    batch = {"video": rng.integers(0, 256, (2, 4, 16, 16, 3), np.uint8), "label": np.arange(2)}
    step = jax.jit(make_train_step(model, tx, mean=(0.5,) * 3, std=(0.25,) * 3))
    key = jax.random.key(1)
    first, metrics0 = step(state, batch, key)
    _, metrics1 = step(first, batch, key)
    _, again = step(state, batch, key)
    # (a zero-initialised head gives every clip the same loss: the gradients show the dropout)
    assert float(metrics0["grad_norm"]) == float(again["grad_norm"])  # one step count: same units
    assert float(metrics0["grad_norm"]) != float(metrics1["grad_norm"])


def test_logged_grad_norm_is_the_gradients_global_norm():
    """metrics["grad_norm"] is the global norm of the loss's gradient (as jax.grad gives it), not of
    the optimiser's update."""
    import flax.linen as nn
    import optax

    from vjax.models import build_model
    from vjax.step import make_init_state, make_train_step

    config = {"name": "vivit", "size": "Ti/8x2", "num_layers": 1, "hidden_size": 16,
              "num_heads": 2, "mlp_dim": 32}  # fmt: skip
    model = build_model(config, 4)
    tx = optax.adam(0.1)
    init = make_init_state(model, tx, (4, 16, 16, 3))
    state = jax.jit(lambda key: nn.meta.unbox(init(key)))(jax.random.key(0))
    # Random parameters: from a fresh init only the (zero) head has a gradient, and a norm over
    # the head alone would pass.
    state = state.replace(params=randomized({"params": state.params})["params"])
    rng = np.random.default_rng(0)
    batch = {"video": rng.integers(0, 256, (2, 4, 16, 16, 3), np.uint8), "label": np.arange(2)}
    video = (batch["video"] / 255.0 - 0.5) / 0.25

    def loss(params):
        logits = model.apply({"params": params}, video, train=False)
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

    grads = jax.jit(jax.grad(loss))(state.params)
    expected = np.sqrt(sum(float(np.sum(np.square(g))) for g in jax.tree.leaves(grads)))
    head = np.sqrt(sum(float(np.sum(np.square(g))) for g in jax.tree.leaves(grads["classifier"])))
    assert expected > 1.01 * head
    step = jax.jit(make_train_step(model, tx, mean=(0.5,) * 3, std=(0.25,) * 3))
    _, metrics = step(state, batch, jax.random.key(1))
    assert float(metrics["grad_norm"]) == pytest.approx(expected, rel=1e-4)


def test_float16_loss_scale_starts_at_2_to_15_and_doubles_after_2000_finite_steps():
    """The dynamic loss scale's documented defaults: scale 2^15, growth after 2000 finite steps
    (PyTorch AMP's interval)."""
    from vjax.loss_scale import initial_loss_scale

    scale = initial_loss_scale(jnp.float16)
    # flax's DynamicScale doubles on the finite step after growth_interval of them: the
    # 2000th (tests/test_loss_scale.py counts it on a small interval)
    assert float(scale.scale) == 2.0**15 and scale.growth_interval + 1 == 2000
    assert int(scale.fin_steps) == 0 and scale.growth_factor == 2.0 and scale.backoff_factor == 0.5


def test_preemption_watcher_works_off_the_main_thread():
    """Training started from a worker thread (a notebook's) runs: the watcher installs no handler
    there instead of failing."""
    from vjax.preemption import PreemptionWatcher

    errors, answers = [], []

    def run():
        try:
            with PreemptionWatcher() as preempted:
                answers.append(preempted())
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert not errors and answers == [False]
    assert signal.getsignal(signal.SIGTERM) == before


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")
def test_a_non_finite_loss_stops_the_run_at_the_log_that_sees_it(data_dir, tmp_path):
    """A NaN loss (beside a finite top-1) stops the run at that step's log, naming the training
    metrics, before any validation or checkpoint."""
    config = tiny_config(data_dir, **{
        "train.num_steps": "12", "train.log_every": "1", "train.eval_every": "100",
        "train.checkpoint_every": "100", "optimizer.lr": "1e30", "optimizer.warmup_steps": "0",
    })  # fmt: skip
    message = r"non-finite training metrics at step (\d+)"
    with pytest.raises(train.NonFiniteLossError, match=message) as err:
        train.train(config, str(tmp_path))
    bad = int(err.value.args[0].split("at step ")[1].split(":")[0])
    logged = [r["step"] for r in read_metrics(str(tmp_path)) if r["split"] == "train"]
    assert bad < 12 and logged == list(range(1, bad))  # every step before it logged, none after
