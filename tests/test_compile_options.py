"""vjax's XLA:CPU compile options (vjax/compile_options.py): nothing runs in YNNPACK in the
steps vjax compiles (the train steps of every conv recipe: tests/test_configs_conv3d.py; the
eval step, a loaded model's apply and `vjax bench train`'s step: here), with XLA's default
outputs; GPUs and a user's own ``XLA_FLAGS`` choice get nothing."""

import re
from types import SimpleNamespace

import flax.linen as nn
import jax
import numpy as np
import pytest
from conftest import REPO, randomized

from vjax import compile_options, train
from vjax.bench_train import compile_step
from vjax.compile_options import CPU_OPTIONS, YNN_OPTION, compiler_options
from vjax.config_utils import load_config
from vjax.loaded import batch_apply
from vjax.models import build_model

TINY_R2PLUS1D = {"name": "r2plus1d_18", "layers": (1, 1, 1, 1), "width": 8}
CLIP = (4, 16, 16)


def ynn_fusions(compiled) -> int:
    """How many YNNPACK fusions (convolutions, matmuls, reductions or elementwise ops handed to
    that library) a compiled program calls."""
    return len(re.findall(r"%ynn_fusion[.\d]* = ", compiled.as_text()))


def test_cpu_turns_ynnpack_off_and_gpus_get_nothing(monkeypatch):
    assert compiler_options("cpu") == CPU_OPTIONS and compiler_options("gpu") is None
    options = compiler_options("cpu")
    options[YNN_OPTION] = "changed"  # each caller gets its own copy
    assert compiler_options("cpu") == CPU_OPTIONS
    # A user who sets the option in XLA_FLAGS keeps it.
    monkeypatch.setenv("XLA_FLAGS", f"--{YNN_OPTION}= --xla_force_host_platform_device_count=8")
    assert compiler_options("cpu") is None


def test_a_jaxlib_without_the_option_gets_none(monkeypatch):
    """The probe compiles once with the options; a jaxlib that rejects them gets XLA's default."""
    monkeypatch.setattr(compile_options, "CPU_OPTIONS", {"xla_cpu_no_such_option": "1"})
    compile_options._jaxlib_knows_cpu_options.cache_clear()
    try:
        assert compiler_options("cpu") is None
    finally:
        compile_options._jaxlib_knows_cpu_options.cache_clear()


def tiny_r2plus1d() -> tuple:
    """A tiny R(2+1)D, its variables (random: a fresh head is zero, and so would be every
    logit) and a float clip."""
    model = build_model(TINY_R2PLUS1D, 5)
    video = np.random.default_rng(0).random((1, *CLIP, 3), np.float32)
    init = jax.jit(lambda k: model.init(k, video, train=False))
    return model, randomized(jax.device_get(init(jax.random.key(0)))), video


def test_the_options_keep_everything_out_of_ynnpack_with_the_same_logits():
    """A tiny R(2+1)D's forward: XLA's default puts its convs in YNNPACK fusions (so the count
    can tell), the options put nothing there and compute the same logits; `vjax bench train`'s
    step (convs and the head's matmul) is compiled with them."""
    model, variables, video = tiny_r2plus1d()

    def apply(video):
        return model.apply(variables, video, train=False)

    default = jax.jit(apply).lower(video).compile()
    ours = jax.jit(apply, compiler_options=compiler_options()).lower(video).compile()
    if not ynn_fusions(default):
        pytest.skip(f"jaxlib {jax.__version__}'s XLA:CPU puts no conv in YNNPACK by default")
    assert ynn_fusions(ours) == 0
    assert np.abs(default(video)).max() > 1e-3
    np.testing.assert_allclose(ours(video), default(video), rtol=1e-5, atol=1e-6)
    # On one device, whose compile is cheaper: without the options this step has YNNPACK
    # fusions there as data parallel over 8 (49 and 46 with jaxlib 0.10).
    step = compile_step(TINY_R2PLUS1D, CLIP, 8, "float32", devices=jax.devices()[:1])
    assert ynn_fusions(step.compiled) == 0


def test_eval_step_runs_outside_ynnpack(data_dir):
    """The trainer's eval step (its train step: tests/test_configs_conv3d.py)."""
    config = load_config(f"{REPO}/configs/conv3d.py:r2plus1d_18_ucf101,tiny")
    config.dataset.data_dir = data_dir
    exp = train.setup(config, devices=jax.devices()[:1])
    # Lowered for the state's shapes alone (nothing initialised: the compile is the same).
    state = jax.eval_shape(lambda key: nn.meta.unbox(exp.init_state(key)), jax.random.key(0))
    variables = state.variables
    video = jax.ShapeDtypeStruct(exp.input_shape, np.uint8)
    _, eval_step = train.compile_steps(exp)
    with jax.set_mesh(exp.mesh):
        compiled = eval_step.lower(variables, {"video": video}).compile()
    assert ynn_fusions(compiled) == 0


def test_a_loaded_models_apply_runs_outside_ynnpack():
    """``model(video)`` and ``vjax predict`` (:func:`vjax.loaded.batch_apply`)."""
    model, variables, _ = tiny_r2plus1d()
    config = SimpleNamespace(input=SimpleNamespace(mean=(0.5,) * 3, std=(0.25,) * 3))
    video = np.zeros((1, *CLIP, 3), np.uint8)
    compiled = batch_apply(config, model, variables).lower({"video": video}).compile()
    assert ynn_fusions(compiled) == 0
