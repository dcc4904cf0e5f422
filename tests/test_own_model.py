"""A researcher's own model (the README's snippet): registered in their config file, it trains
and evaluates through the commands like vjax's own; what the interface needs is named when a
class lacks it (before: a TypeError, then an AttributeError traceback from the trainer)."""

import importlib
import os
import re
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DEMO_CONFIG, REPO

import vjax
from vjax.config_utils import load_config
from vjax.main import main
from vjax.models import available_models, build_model, register


def own_config() -> str:
    """A config file of one's own: the README's "Your own model" snippet, with its imports, and
    a get_config that names the model."""
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    snippet = re.search(r"\*\*Your own model\.\*\*.*?```python\n(.*?)```", readme, re.S).group(1)
    return (
        "from typing import Any\n\nimport flax.linen as nn\nimport jax.numpy as jnp\n\n"
        "import vjax.models\nfrom vjax.config_utils import load_config\n\n\n"
        f"{snippet}\n\n"
        "def get_config():\n"
        f"    config = load_config({DEMO_CONFIG + ':tiny'!r})\n"
        "    config.model = {'name': 'mean_mlp', 'width': 16}\n"
        "    return config\n"
    )


def own_registry(monkeypatch) -> dict:
    """The test's own copy of the model registry: what it registers goes with it."""
    from vjax.models import registry

    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))
    return registry._MODELS


def test_a_model_registered_in_a_config_file_trains_and_evaluates(
    data_dir, tmp_path, capsys, monkeypatch
):
    models = own_registry(monkeypatch)
    config, run = tmp_path / "mine.py", tmp_path / "run"
    config.write_text(own_config())
    common = [f"--config={config}", f"--workdir={run}", f"--config.dataset.data_dir={data_dir}"]
    assert main(["--mode=train", *common, "--config.train.num_steps=2"]) == 0
    assert "mean_mlp: 132 parameters" in capsys.readouterr().out  # (3 + 1) * 16 + (16 + 1) * 4
    # The file runs again (its class registers again, replacing itself) for the evaluation.
    assert main(["--mode=eval", *common]) == 0
    assert "top1" in capsys.readouterr().out
    model = vjax.load(str(run))  # in Python, once the file has run
    assert model(np.zeros((2, *model.clip_shape), np.uint8)).shape == (2, 4)
    # Without the file the name is unknown, and the one line says how it becomes known.
    del models["mean_mlp"]
    assert main(["--mode=eval", f"--workdir={run}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown model 'mean_mlp'; a model of your own is known once" in err[0]


def test_what_a_model_class_lacks_is_named_at_registration():
    class Bare(nn.Module):
        width: int = 4

        def __call__(self, video, *, train):
            return video

    with pytest.raises(TypeError) as lacks:
        register("bare")(Bare)
    message = str(lacks.value)
    for needed in ("a field num_classes", "a field dtype", "a method check_input(self, input"):
        assert needed in message
    assert "bare" not in available_models()


def test_a_taken_name_is_refused_and_the_same_class_replaces_itself(tmp_path, monkeypatch):
    def define(width: int) -> type:
        class Tiny(nn.Module):
            num_classes: int
            dtype: Any = jnp.float32
            width: int = 0

            def check_input(self, input_shape):
                pass

        Tiny.default_width = width
        return Tiny

    models = own_registry(monkeypatch)
    vivit = os.path.join(REPO, "vjax", "models", "vivit.py")
    with pytest.raises(ValueError, match=rf"'vivit' is taken by {re.escape(vivit)}:ViViT; "):
        register("vivit")(define(1))
    register("tiny_test_model")(define(1))
    register("tiny_test_model")(define(2))  # a re-run of the same definition
    assert build_model({"name": "tiny_test_model"}, 3).default_width == 2
    # One file, however it runs: as a config by any path, or imported.
    (tmp_path / "mine_model.py").write_text(own_config())
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for spec in ("mine_model.py", "./mine_model.py", str(tmp_path / "mine_model.py")):
        load_config(spec)
    mine = importlib.import_module("mine_model")
    assert models["mean_mlp"] is mine.MeanMLP
