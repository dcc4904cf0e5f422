"""Test set-up: 8 host CPU devices for sharding tests, quiet logs, a shared tiny dataset."""

import os

# Before JAX is imported anywhere: eight CPU devices, so sharded code paths really shard.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

from vjax.torch_imports import disable_triton  # noqa: E402

# The reference packages' tests import torchvision / pytorchvideo directly, in workers that may
# have loaded TensorFlow already: without Triton that is safe (see vjax/torch_imports.py).
disable_triton()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


@pytest.fixture(scope="session")
def pretrained_run(data_dir, tmp_path_factory):
    """``(config, workdir, last validation)`` of the tiny VideoMAE pre-training run (200 steps,
    checkpoints every 20, validation at 100 and 200), trained once for the tests of exact
    resume, validation, pictures and fine-tuning."""
    from vjax import train
    from vjax.config_utils import apply_overrides, load_config

    config = load_config(PRETRAIN_CONFIG)
    steps = {"train.num_steps": "200", "train.checkpoint_every": "20", "train.eval_every": "100"}
    apply_overrides(config, {"dataset.data_dir": data_dir, "train.log_every": "10", **steps})
    workdir = str(tmp_path_factory.mktemp("pretrain"))
    return config, workdir, train.train(config, workdir)
