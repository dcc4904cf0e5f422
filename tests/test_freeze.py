"""``optimizer.freeze``: the parameters it names keep their values and get no optimiser state;
a frozen encoder under its head trains the head as logistic regression on the encoder's
features; the compiled step skips the backward pass below the head; a run does it end to end
from a pre-training, and a pattern that names no parameter is one line."""

import os
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import DEMO_CONFIG, PRETRAIN_CONFIG
from flax.traverse_util import flatten_dict

import vjax
from vjax import train
from vjax.checkpoint import CheckpointMismatchError
from vjax.config_utils import ConfigError, apply_overrides, load_config
from vjax.evaluate.probe import head_input_function
from vjax.main import main
from vjax.models import build_model
from vjax.optim import HEAD_ONLY, make_optimizer
from vjax.step import make_init_state, make_train_step, model_input

OPT = dict(name="adamw", lr=0.05, end_lr=0.05, warmup_steps=0, b1=0.9, b2=0.999,
           weight_decay=0.1, grad_clip_norm=0.5, label_smoothing=0.1)  # fmt: skip
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
CLIP = (4, 16, 16, 3)


def _model():
    return build_model(
        {"name": "vivit", "size": "Ti/8x2", "hidden_size": 32, "num_layers": 2, "num_heads": 2,
         "mlp_dim": 64}, num_classes=3,
    )  # fmt: skip


def _batches(count: int) -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        {"video": rng.integers(0, 256, (6, *CLIP), np.uint8), "label": rng.integers(0, 3, 6)}
        for _ in range(count)
    ]


def test_a_frozen_encoder_trains_its_head_as_logistic_regression_on_its_features():
    model = _model()
    tx = make_optimizer({**OPT, "freeze": HEAD_ONLY}, num_steps=100)
    state = nn.meta.unbox(make_init_state(model, tx, CLIP)(jax.random.key(0)))
    step = jax.jit(make_train_step(model, tx, mean=MEAN, std=STD, label_smoothing=0.1,
                                   freeze=HEAD_ONLY))  # fmt: skip
    batches = _batches(3)
    start = jax.device_get(state.params)
    for batch in batches:
        state, metrics = step(state, batch, jax.random.key(1))

    # The reference: optax's AdamW (clipped, decay on the kernel) on the head alone, fed the
    # features the head receives from the untrained encoder (read by interception).
    features = jax.jit(head_input_function(model))
    head = start["classifier"]["head"]
    reference = optax.chain(
        optax.clip_by_global_norm(OPT["grad_clip_norm"]),
        optax.adamw(OPT["lr"], weight_decay=OPT["weight_decay"],
                    mask={"kernel": True, "bias": False}),
    )  # fmt: skip
    opt_state = reference.init(head)

    def loss(head, x, labels):
        targets = optax.smooth_labels(jax.nn.one_hot(labels, 3), 0.1)
        return optax.softmax_cross_entropy(x @ head["kernel"] + head["bias"], targets).mean()

    for batch in batches:
        x = features({"params": start}, model_input(model, batch, MEAN, STD))
        grads = jax.grad(loss)(head, x, batch["label"])
        updates, opt_state = reference.update(grads, opt_state, head)
        head = optax.apply_updates(head, updates)
    trained = jax.device_get(state.params)
    for name in ("kernel", "bias"):
        np.testing.assert_allclose(trained["classifier"]["head"][name], head[name], atol=1e-6)
    assert np.abs(head["kernel"]).max() > 1e-3  # the head did train
    # The logged norm is the head's gradient's (the last batch's), before clipping.
    np.testing.assert_allclose(metrics["grad_norm"], optax.global_norm(grads), rtol=1e-5)
    # Every encoder parameter as it started (weight decay 0.1 would have shrunk its kernels).
    del trained["classifier"], start["classifier"]
    jax.tree.map(np.testing.assert_array_equal, trained, start)
    # Adam's moments are kept for the head alone: two copies of its 32 x 3 + 3 numbers.
    moments = sum(x.size for x in jax.tree.leaves(state.opt_state) if x.ndim)
    assert moments == 2 * (32 * 3 + 3)


def test_the_compiled_step_skips_the_backward_pass_below_the_trained_layers():
    model, batch = _model(), _batches(1)[0]
    flops = {}
    for freeze in ("", HEAD_ONLY):
        tx = make_optimizer({**OPT, "freeze": freeze}, num_steps=100)
        state = nn.meta.unbox(make_init_state(model, tx, CLIP)(jax.random.key(0)))
        step = make_train_step(model, tx, mean=MEAN, std=STD, freeze=freeze)
        compiled = jax.jit(step).lower(state, batch, jax.random.key(1)).compile()
        flops[freeze or "none"] = compiled.cost_analysis()["flops"]
    forward = (
        jax.jit(lambda v, x: model.apply(v, x, train=False))
        .lower({"params": state.params}, model_input(model, batch, MEAN, STD))
        .compile()
        .cost_analysis()["flops"]
    )
    # A full step is about three forward passes; with the encoder frozen, about one.
    assert flops["none"] > 2.5 * forward, (flops, forward)
    assert flops[HEAD_ONLY] < 1.3 * forward, (flops, forward)


def test_a_pattern_that_names_no_parameter_or_all_of_them_is_a_config_error():
    params = {"encoder": {"kernel": jnp.ones(2)}, "classifier": {"head": {"kernel": jnp.ones(2)}}}
    for pattern, what in (("^decoder/", "no parameter"), ("kernel", "every parameter")):
        tx = make_optimizer({**OPT, "freeze": pattern}, num_steps=10)
        message = f"optimizer.freeze={pattern!r} matches {what}"
        with pytest.raises(ConfigError, match=re.escape(message)) as error:
            tx.init(params)
        assert "'classifier/head/kernel' ... 'encoder/kernel'" in str(error.value)
    with pytest.raises(ValueError, match=r"optimizer.freeze='\[' is not a regular expression"):
        make_optimizer({**OPT, "freeze": "["}, num_steps=10)


def test_linear_probe_of_a_pretraining_through_the_training_loop(
    pretrained_run, data_dir, tmp_path, capsys
):
    """A VideoMAE classifier started from the session's pre-training with everything but its
    head frozen: the run says what it freezes, trains the head, keeps the encoder bit for bit,
    and resumes (the optimiser state of the head alone is saved and restored)."""
    import shutil

    _, source, _ = pretrained_run
    config = load_config(PRETRAIN_CONFIG.replace("pretrain_k400_800", "finetune_k400_800"))
    overrides = {"dataset.data_dir": data_dir, "train.init_from": source, "train.num_steps": "4",
                 "train.checkpoint_every": "3", "train.eval_every": "4",
                 "optimizer.freeze": HEAD_ONLY}  # fmt: skip
    apply_overrides(config, overrides)
    workdir = str(tmp_path / "probe")
    train.train(config, workdir)  # checkpoints at 3 and 4
    # Step 4's checkpoint gone: the same command resumes at 3 (the same num_steps, so the
    # same compiled train step: its learning-rate schedule is compiled in).
    shutil.rmtree(os.path.join(workdir, "checkpoints", "4"))
    validated = train.train(config, workdir)  # resumes at 3
    out = capsys.readouterr().out
    apply_overrides(config, {"train.num_steps": "8", "optimizer.freeze": ""})  # LP-FT's mistake
    with pytest.raises(CheckpointMismatchError, match="Only the optimiser's state differs"):
        train.train(config, workdir)
    # Evaluation reads the parameters alone: with that config too it scores the run's model.
    evaluated = train.evaluate_checkpoint(config, workdir, "validation")
    assert evaluated["step"] == 4
    assert evaluated["top1"] == validated["top1"]
    np.testing.assert_allclose(evaluated["loss"], validated["loss"], rtol=1e-6)
    assert "Restored checkpoint at step 3" in out
    assert re.search(r"optimizer.freeze='\^\(\?!classifier/\)': [\d,]+ parameters frozen", out)
    _, _, pretrained = vjax.load(source)
    _, _, probed = vjax.load(workdir)
    before = flatten_dict(pretrained["params"], sep="/")
    after = flatten_dict(probed["params"], sep="/")
    copied = [name for name in after if name in before]  # the encoder; not its new fc_norm
    assert any(name.startswith("encoder/block00/mlp") for name in copied)
    assert all(np.array_equal(after[name], before[name]) for name in copied)
    assert (after["fc_norm/scale"] == 1).all() and not after["fc_norm/bias"].any()  # frozen new
    assert np.abs(after["classifier/head/kernel"]).max() > 0  # zero at the start


def test_a_freeze_pattern_naming_no_parameter_is_one_line_before_any_data(tmp_path, capsys):
    workdir, data_dir = tmp_path / "run", tmp_path / "tfds"
    code = main(["--mode=train", f"--config={DEMO_CONFIG}:tiny", f"--workdir={workdir}",
                 f"--config.dataset.data_dir={data_dir}",
                 "--config.optimizer.freeze=^backbone/"])  # fmt: skip
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("vjax: error: ")]
    assert code == 2 and "Traceback" not in err and len(lines) == 1, err
    assert "optimizer.freeze='^backbone/' matches no parameter of this model" in lines[0]
    assert not workdir.exists() or not any(workdir.iterdir())  # no empty run left behind
    assert not data_dir.exists() or not any(data_dir.iterdir())  # nothing prepared first


def test_a_frozen_batchnorm_backbone_still_updates_its_statistics():
    """As the README says: freezing a CNN's parameters leaves its BatchNorm statistics following
    the batches (``model.frozen_bn``, tested in test_conv3d_models.py, keeps them)."""
    model = build_model({"name": "r3d_18", "layers": (1, 1, 1, 1), "width": 8}, num_classes=3)
    tx = make_optimizer({**OPT, "freeze": HEAD_ONLY}, num_steps=100)
    state = nn.meta.unbox(make_init_state(model, tx, CLIP)(jax.random.key(0)))
    step = jax.jit(make_train_step(model, tx, mean=MEAN, std=STD, freeze=HEAD_ONLY))
    trained, _ = step(state, _batches(1)[0], jax.random.key(1))
    before, after = (flatten_dict(s.params, sep="/") for s in (state, trained))
    assert all(np.array_equal(after[n], before[n]) for n in before if "classifier" not in n)
    assert not np.array_equal(after["classifier/head/bias"], before["classifier/head/bias"])
    differs = lambda old, new: not np.array_equal(old, new)  # noqa: E731
    changed = jax.tree.leaves(jax.tree.map(differs, state.model_state, trained.model_state))
    assert len(changed) > 10 and all(changed)
