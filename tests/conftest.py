"""Test set-up: 8 host CPU devices for sharding tests, quiet logs, a shared tiny dataset."""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "launch"))
from local import host_device_flags  # noqa: E402

from vjax.huge_pages import takes_effect, with_huge_pages  # noqa: E402

# Before JAX is imported anywhere: eight CPU devices, so sharded code paths really shard;
# LLVM's cheapest optimisation level, which halves the CPU compile time of a small 3D-CNN's
# train step (15.4 -> 8.4 CPU-s for R(2+1)D's tiny variant, the same loss to 6 digits); XLA's
# older elementwise-fusion emitter, which takes 40-55% off that again (R(2+1)D 6.9 -> 4.3 s,
# SlowFast 15.7 -> 9.1 s, X3D 9.2 -> 4.3 s, the demo ViViT 2.3 -> 1.3 s per train step) and
# runs the steps as fast; and LLVM code generation in one piece, not split across threads that
# the two pytest-xdist workers leave no core for: 16-18% less CPU time per compile (X3D 1.92 ->
# 1.58 CPU-s, SlowFast 3.42 -> 2.85, R(2+1)D 1.78 -> 1.50; the same losses). All cost little at
# the tests' tiny sizes. Subprocesses inherit them (launch/local.py and env_with_host_devices
# change only the device count). XLA aborts on a flag it does not know (jaxlib 0.11 has no
# older emitter): a process probes them once and the workers and subprocesses inherit the
# answer.
OPTIONAL_XLA_FLAGS = (
    "--xla_cpu_use_fusion_emitters=false",
    "--xla_cpu_parallel_codegen_split_count=1",
)


def _xla_accepts(flags: str) -> bool:
    """Whether a JAX process starts with ``XLA_FLAGS=flags``."""
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    probe = [sys.executable, "-c", "import jax; jax.devices()"]
    return subprocess.run(probe, env=env, capture_output=True).returncode == 0


if "VJAX_TESTS_XLA_FLAGS" not in os.environ:
    _known = list(OPTIONAL_XLA_FLAGS)
    if not _xla_accepts(" ".join(_known)):
        _known = [flag for flag in OPTIONAL_XLA_FLAGS if _xla_accepts(flag)]
    os.environ["VJAX_TESTS_XLA_FLAGS"] = " ".join(["--xla_backend_optimization_level=0", *_known])
os.environ["XLA_FLAGS"] = " ".join(
    (os.environ.get("XLA_FLAGS", "") + " " + os.environ["VJAX_TESTS_XLA_FLAGS"]).split()
)
os.environ["XLA_FLAGS"] = host_device_flags(8)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache for the whole run: the pytest-xdist workers and every
# subprocess a test starts (resume, multi-host, CLI) inherit it, so the same tiny train step
# compiles once per run instead of once per process. A fresh folder per run (created by the
# process that starts pytest, removed when it exits) keeps runs independent of each other.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="vjax-tests-jax-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.05")
# glibc's huge pages for XLA's large allocations (vjax/huge_pages.py, which the vjax command
# asks for itself) in the pytest-xdist workers and every subprocess, which start after this
# file is read: four test files ran 2-9% faster with them, run in turn twice each.
if takes_effect() and (_huge_pages := with_huge_pages(os.environ)):
    os.environ.update(_huge_pages)

import pytest  # noqa: E402

from vjax.torch_imports import disable_triton  # noqa: E402

# The reference packages' tests import torchvision / pytorchvideo directly, in workers that may
# have loaded TensorFlow already: without Triton that is safe (see vjax/torch_imports.py).
disable_triton()

DEMO_CONFIG = os.path.join(REPO, "configs", "demo.py")
PRETRAIN_CONFIG = os.path.join(REPO, "configs", "videomae.py:pretrain_k400_800,tiny")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    """One TFDS data dir for the whole session (datasets prepare once, then are read)."""
    return str(tmp_path_factory.mktemp("tfds"))


def tiny_config(data_dir: str, *variants: str, **overrides: str):
    """The demo config's tiny variant with its data in ``data_dir`` and string overrides."""
    from vjax.config_utils import apply_overrides, load_config

    config = load_config(f"{DEMO_CONFIG}:{','.join(('tiny',) + variants)}")
    apply_overrides(config, {"dataset.data_dir": data_dir, **overrides})
    return config


# The smallest model each family builds, with a clip (T, H, W) it takes: for checks that run
# over every family (weight decay, input refusals).
_VIT = {"size": "Ti/4x2", "hidden_size": 8, "num_layers": 1, "num_heads": 2, "mlp_dim": 8}
_RESNET = {"depth": 14, "width": 8}
_R3D = {"layers": (1, 1, 1, 1), "width": 8}
_CLIP, _CONV_CLIP = (4, 8, 8), (4, 32, 32)
MODEL_FAMILIES = {
    "vivit_model1": ({"name": "vivit", **_VIT}, _CLIP),
    "vivit_model2": ({"name": "vivit", **_VIT, "variant": "factorised_encoder"}, _CLIP),
    "vivit_model3": ({"name": "vivit", **_VIT, "variant": "factorised_self_attention"}, _CLIP),
    "vivit_model4": ({"name": "vivit", **_VIT, "variant": "factorised_dot_product"}, _CLIP),
    "vivit_average_pool": ({"name": "vivit", **_VIT, "variant": "average_pool"}, _CLIP),
    "single_frame": ({"name": "single_frame", **_VIT}, _CLIP),
    "timesformer": ({"name": "timesformer", **_VIT, "size": "Ti/4"}, (2, 8, 8)),
    "videomae": ({"name": "videomae", **_VIT}, _CLIP),
    "c3d": ({"name": "c3d", "hidden": 8}, (16, 112, 112)),
    "r3d": ({"name": "r3d_18", **_R3D}, (4, 16, 16)),
    "mc3": ({"name": "mc3_18", **_R3D}, (4, 16, 16)),
    "r2plus1d": ({"name": "r2plus1d_18", **_R3D}, (4, 16, 16)),
    "i3d": ({"name": "i3d_r50", **_RESNET}, _CONV_CLIP),
    "csn": ({"name": "csn_r101", **_RESNET}, _CONV_CLIP),
    "slowfast": ({"name": "slowfast", **_RESNET, "alpha": 2}, _CONV_CLIP),
    "x3d": ({"name": "x3d_xs", "depth_factor": 0.4, "head_width": 8}, _CONV_CLIP),
    "lrcn": ({"name": "lrcn", "frame_layers": (1, 1, 1, 1), "frame_width": 8}, (4, 16, 16)),
    "conv_lstm": ({"name": "conv_lstm", "stem_features": 4, "hidden_features": (4,)}, _CLIP),
    "recurrent_over": (
        {"name": "recurrent_over", "backbone": {"name": "r3d_18", **_R3D}},
        (4, 16, 16),
    ),
}
MODEL_FAMILIES["vivit_model2"][0]["temporal_layers"] = 1
MODEL_FAMILIES["lrcn"][0]["hidden_size"] = MODEL_FAMILIES["recurrent_over"][0]["hidden_size"] = 8


# What the GPU machine's image lacks (the device tool's KINDS.md lists what it has): the code
# that must run there (models, train step, `vjax bench`, tests/gpu_*.py) is tested without them.
NOT_ON_GPU_IMAGE = ("ml_collections", "tensorflow", "tensorflow_datasets", "grain", "av")


@pytest.fixture
def gpu_image_env(tmp_path) -> dict[str, str]:
    """This process's environment for subprocesses (and theirs) in which the packages
    :data:`NOT_ON_GPU_IMAGE` cannot be imported, as on the GPU machine: a ``sitecustomize``
    first on ``PYTHONPATH`` makes every import finder pass over them, so that they are not
    found (ModuleNotFoundError; ``importlib.util.find_spec`` None, which torch asks) and not
    in ``sys.modules`` (a ``None`` there einops takes for a loaded framework)."""
    site = tmp_path / "gpu_image_site"
    site.mkdir()
    blocked = f"""import sys


class PassOver:
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {NOT_ON_GPU_IMAGE!r}:
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, attribute):
        return getattr(self.finder, attribute)


sys.meta_path[:] = [PassOver(finder) for finder in sys.meta_path]
"""
    (site / "sitecustomize.py").write_text(blocked)
    path = [str(site), REPO, *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


def scored_result(top1: float, clips: int, **fields) -> dict:
    """A test result as ``train.evaluate_checkpoint`` hands it to the bench tables: right on the
    first ``top1 * clips`` clips (one label), with Wilson's interval and the per-video
    predictions the paired counts read; ``fields`` (params, steps, latency...) beside."""
    from vjax.evaluate.uncertainty import wilson_interval

    right = round(top1 * clips)
    videos = {"label": [0] * clips, "predicted": [0] * right + [1] * (clips - right)}
    return {"top1": top1, "top1_ci95": wilson_interval(right, clips), "num_examples": clips,
            "per_video": videos, **fields}  # fmt: skip


def eval_apply(model: Any):
    """``model.apply(variables, video, train=False)`` as one jitted function, to reuse for calls
    of the same shapes: run eagerly, XLA:CPU compiles every op on its own."""
    import jax

    return jax.jit(lambda variables, video: model.apply(variables, video, train=False))


def jit_logits(model: Any, variables: Any, video: Any):
    """Eval-mode outputs of ``model`` on ``video`` as a NumPy array, compiled once."""
    import numpy as np

    return np.asarray(eval_apply(model)(variables, video))


def zero_variables(model: Any, *inputs: Any) -> dict:
    """Zeros of the shapes ``model.init(key, *inputs, train=False)`` gives (unboxed), traced
    rather than compiled: for checks that read no value (refusals, tree keys, shapes)."""
    import flax.linen as nn
    import jax
    import numpy as np

    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *inputs, train=False))
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), nn.meta.unbox(shapes))


def randomized(variables: dict, seed: int = 0, scale: float = 0.05) -> dict:
    """``variables`` with Gaussian noise of ``scale`` added to every parameter: a new classifier
    head is zero, so a fresh model's scores are equal for any input and a check of its logits
    or predictions against another computation could not fail; BatchNorm statistics kept."""
    import jax
    import numpy as np

    rng = np.random.default_rng(seed)

    def perturbed(p):
        p = np.asarray(p)
        return (p + scale * rng.standard_normal(p.shape).astype(np.float32)).astype(p.dtype)

    return {**variables, "params": jax.tree.map(perturbed, variables["params"])}


def moved_below_the_head(before: Any, after: Any) -> list[str]:
    """The parameters outside the classifier that no weight decay moves (biases, norms,
    position tables: not :func:`vjax.optim.is_weight`) and that differ between two parameter
    trees: a step's gradient reached them. From a fresh init the zero head passes no gradient
    below it, and a test of the step would compare nothing but the head."""
    import jax
    import numpy as np

    from vjax.optim import is_weight

    leaves = jax.tree_util.tree_flatten_with_path(before)[0]
    return [
        jax.tree_util.keystr(path)
        for (path, a), b in zip(leaves, jax.tree.leaves(after), strict=True)
        if "classifier" not in jax.tree_util.keystr(path)
        and not is_weight(path)
        and not np.allclose(np.float32(a), np.float32(b))
    ]


def env_with_host_devices(count: int) -> dict[str, str]:
    """This process's environment for a subprocess that sees ``count`` host CPU devices."""
    return {**os.environ, "XLA_FLAGS": host_device_flags(count)}


@pytest.fixture(scope="session")
def pretrained_run(data_dir, tmp_path_factory):
    """``(config, workdir, last validation)`` of the tiny VideoMAE pre-training run (100 steps,
    checkpoints every 20, validation at 50 and 100), trained once per test run for the tests
    of exact resume, validation, pictures and fine-tuning: the first pytest-xdist worker to
    ask trains it, under a file lock, and the others read it (and the dataset it trained on)."""
    import fcntl
    import json

    from vjax import train
    from vjax.config_utils import apply_overrides, load_config

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the run's folder, above each worker's own
    workdir, record = shared / "pretrain", shared / "pretrain.json"
    steps = {"train.num_steps": "100", "train.checkpoint_every": "20", "train.eval_every": "50"}

    def config(data: str):
        c = load_config(PRETRAIN_CONFIG)
        apply_overrides(c, {"dataset.data_dir": data, "train.log_every": "10", **steps})
        return c

    with open(shared / "pretrain.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not record.exists():
            last = train.train(config(data_dir), str(workdir))
            record.write_text(json.dumps({"data_dir": data_dir, "last": last}))
    trained = json.loads(record.read_text())
    return config(trained["data_dir"]), str(workdir), trained["last"]
