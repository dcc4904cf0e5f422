"""A researcher's own model and objective (the README's snippets): registered in their config
file, they train and evaluate through the commands like vjax's own; what a model class lacks
is named at registration (before: a TypeError, then an AttributeError traceback from the
trainer), and objectives could not be added without editing vjax."""

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
from vjax import objectives
from vjax.cli import main as vjax_command
from vjax.config_utils import ConfigError, load_config
from vjax.data.video_io import encode_video
from vjax.errors import UserError
from vjax.main import main
from vjax.models import available_models, build_model, register


def readme_snippet(title: str) -> str:
    """The Python block under the README's paragraph ``title``."""
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    return re.search(rf"\*\*{title}\.\*\*.*?```python\n(.*?)```", readme, re.S).group(1)


def own_config() -> str:
    """A config file of one's own: the README's "Your own model" and "Your own objective"
    snippets, and a get_config that names them."""
    return (
        f"{readme_snippet('Your own model')}\n\n{readme_snippet('Your own objective')}\n\n"
        "def get_config():\n"
        "    from vjax.config_utils import load_config\n\n"
        f"    config = load_config({DEMO_CONFIG + ':tiny'!r})\n"
        "    config.model = {'name': 'mean_mlp', 'width': 16}\n"
        "    config.train.objective = 'focal'\n"
        "    return config\n"
    )


def own_registry(monkeypatch) -> dict:
    """The test's own copies of the model and objective registries (what it registers goes
    with them); the models'."""
    from vjax.models import registry

    monkeypatch.setattr(objectives, "OBJECTIVES", objectives.OBJECTIVES.copy())
    monkeypatch.setattr(registry, "_MODELS", registry._MODELS.copy())
    return registry._MODELS


def test_a_model_and_objective_registered_in_a_config_file_train_and_evaluate(
    data_dir, tmp_path, capsys, monkeypatch
):
    models = own_registry(monkeypatch)
    config, run = tmp_path / "mine.py", tmp_path / "run"
    config.write_text(own_config())
    common = [f"--config={config}", f"--workdir={run}", f"--config.dataset.data_dir={data_dir}"]
    assert main(["--mode=train", *common, "--config.train.num_steps=2"]) == 0
    assert "mean_mlp: 132 parameters" in capsys.readouterr().out  # (3 + 1) * 16 + (16 + 1) * 4
    assert objectives.OBJECTIVES["focal"].losses.__name__ == "focal_losses"  # what it trained
    assert vjax.load(str(run)).config.train.objective == "focal"
    # The file runs again (its class registers again, replacing itself) for the evaluation.
    assert main(["--mode=eval", *common]) == 0
    assert "top1" in capsys.readouterr().out
    model = vjax.load(str(run))  # in Python, once the file has run
    assert model(np.zeros((2, *model.clip_shape), np.uint8)).shape == (2, 4)
    # Any command runs the file first with --import, predict among those without --config.
    clip = encode_video(str(tmp_path / "clip.mp4"), np.zeros((8, 16, 16, 3), np.uint8), 10)
    assert vjax_command(["predict", f"--import={config}", f"--model={run}", clip]) == 0
    assert "clip.mp4" in capsys.readouterr().out
    assert vjax_command(["--import", "nothing.py", "predict", f"--model={run}", clip]) == 2
    assert capsys.readouterr().err.strip() == (
        "vjax predict: error: --import=nothing.py does not exist"
    )
    # A student of this teacher whose own config does not register the teacher's objective.
    del objectives.OBJECTIVES["focal"]
    student = [f"--config={DEMO_CONFIG}:tiny", f"--workdir={tmp_path / 'student'}",
               f"--config.dataset.data_dir={data_dir}",
               f"--config.train.distill.teacher={run}"]  # fmt: skip
    assert main(["--mode=train", *student]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(
            f"{str(run)!r} was trained by train.objective='focal', which this run does not know: "
            f"register it in this run's config file too"
        )
    )
    # Without the file the name is unknown, and the one line says how it becomes known.
    del models["mean_mlp"]
    assert main(["--mode=eval", f"--workdir={run}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown model 'mean_mlp'; a model of your own is known once" in err[0]
    assert "--import=FILE (any vjax command)" in err[0]


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


def _focal_losses(monkeypatch):
    """The README's focal loss, its registration run in the test's own registry."""
    own_registry(monkeypatch)
    namespace = {"__name__": "readme"}
    exec(readme_snippet("Your own objective"), namespace)  # noqa: S102
    assert objectives.get("focal").losses is namespace["focal_losses"]
    return namespace["focal_losses"]


def test_the_readme_focal_loss_against_numpy_and_at_gamma_0_the_cross_entropy(monkeypatch):
    focal_losses = _focal_losses(monkeypatch)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 5)).astype(np.float32) * 3
    batch = {"label": rng.integers(0, 5, 6)}
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p_label = (p / p.sum(-1, keepdims=True))[np.arange(6), batch["label"]]
    for gamma in (2.0, 0.5):
        loss, metrics = focal_losses(jnp.asarray(logits), batch, 0.0, gamma=gamma)
        expected = np.mean(-((1 - p_label) ** gamma) * np.log(p_label))
        np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    cross_entropy, _ = objectives.task_losses(jnp.asarray(logits), batch)
    loss, _ = focal_losses(jnp.asarray(logits), batch, 0.0, gamma=0.0)
    np.testing.assert_allclose(float(loss), float(cross_entropy), rtol=1e-6)
    assert float(metrics["top1"]) == np.mean(logits.argmax(-1) == batch["label"])


def test_an_objective_takes_no_name_held_by_another_and_only_the_steps_options(
    monkeypatch, tmp_path
):
    focal_losses = _focal_losses(monkeypatch)
    task_losses = os.path.join(REPO, "vjax", "objectives.py") + ":task_losses"
    with pytest.raises(ValueError, match=rf"'classification' is taken by {re.escape(task_losses)}"):
        objectives.register(objectives.labelled("classification", focal_losses))
    # Another file's "focal" is refused (it silently replaced the first one), naming the first.
    (tmp_path / "other.py").write_text(
        "import vjax.objectives\n\n\ndef focal_losses(logits, batch, label_smoothing):\n"
        "    return logits.sum(), {}\n\n\n"
        "vjax.objectives.register(vjax.objectives.labelled('focal', focal_losses))\n"
        "def get_config():\n    pass\n"
    )
    with pytest.raises(ConfigError, match=r"'focal' is taken by readme:focal_losses; register"):
        load_config(str(tmp_path / "other.py"))
    with pytest.raises(ValueError, match=r"options \['gamma'\] that the train step does not"):
        objectives.register(objectives.Objective("g", focal_losses, focal_losses, ("gamma",)))
    with pytest.raises(TypeError, match="register takes an Objective"):
        objectives.register(focal_losses)
    assert objectives.get("classification").losses is objectives.task_losses
    del objectives.OBJECTIVES["focal"]
    with pytest.raises(ConfigError, match=r"'focal'; valid: .* \(one of your own is known once"):
        objectives.get("focal")


def test_probe_takes_a_registered_single_label_objective(monkeypatch):
    from vjax.probing import encoder_probes

    _focal_losses(monkeypatch)
    config = load_config(f"{DEMO_CONFIG}:tiny")
    config.train.objective = "focal"
    with pytest.raises(UserError, match="fits the training split"):  # past the objective's check
        encoder_probes(config, "unused", split="train")
    config.train.objective = "multi_label"
    with pytest.raises(UserError, match="fits one class per clip; train.objective='multi_label'"):
        encoder_probes(config, "unused", split="train")
