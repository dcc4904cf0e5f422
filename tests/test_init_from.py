"""``train.init_from``: a run starts from a pretrained image model through checkpoint surgery."""

import os
import shutil

import flax.linen as nn
import jax
import numpy as np
from conftest import tiny_config

from vjax import train
from vjax.convert import pretrained_config, save_converted
from vjax.models import build_model

FIELDS = {"size": "Ti/8", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "mlp_dim": 64,
          "pooling": "gap"}  # fmt: skip


def _image_model(tmp_path) -> tuple[str, dict]:
    """A 'pretrained' image ViT (single_frame, 3 classes) saved as a vjax convert folder."""
    model = build_model({"name": "single_frame", **FIELDS}, num_classes=3)
    variables = model.init(jax.random.key(7), np.zeros((1, 1, 16, 16, 3)), train=False)
    variables = jax.tree.map(lambda x: x + 0.5, jax.device_get(variables))  # not an init value
    config = pretrained_config({"name": "single_frame", **FIELDS}, (1, 16, 16, 3), list("abc"))
    path = str(tmp_path / "image_vit")
    save_converted(path, config, variables)
    return path, jax.tree.map(np.asarray, nn.meta.unbox(variables))


def test_video_model_starts_from_an_inflated_image_model(data_dir, tmp_path, capsys):
    path, source = _image_model(tmp_path)
    config = tiny_config(data_dir, **{"train.init_from": path, "train.init_inflation": "average",
                                      "model.pooling": "gap"})  # fmt: skip
    exp = train.setup(config)  # ViViT Ti/8x2 on 4x16x16 clips, 4 classes
    state = train.init_from_pretrained(exp, train.create_state(exp, seed=0), path)
    params = jax.device_get(state.params)
    src = source["params"]

    kernel = params["embedding"]["conv"]["kernel"]  # (2, 8, 8, 3, 32): averaged over 2 frames
    np.testing.assert_allclose(kernel, np.repeat(src["embedding"]["conv"]["kernel"] / 2, 2, 0))
    block = params["encoder"]["block00"]["mlp"]["fc1"]["kernel"]
    np.testing.assert_array_equal(block, src["encoder"]["block00"]["mlp"]["fc1"]["kernel"])
    pos = params["pos_embedding"].reshape(2, 4, 32)  # the 2x2 image grid tiled over 2 steps
    np.testing.assert_allclose(pos, np.tile(src["pos_embedding"].reshape(1, 4, 32), (2, 1, 1)))
    head = params["classifier"]["head"]["kernel"]  # 3 classes -> 4: a fresh (zero) head
    assert head.shape == (32, 4) and not head.any()
    assert "Initialised from" in capsys.readouterr().out

    config.train.update(num_steps=4, eval_every=4, checkpoint_every=3)  # checkpoints 3 and 4
    run = str(tmp_path / "run")
    assert np.isfinite(train.train(config, run)["loss"])
    # The pretrained folder deleted (a temporary vjax convert output): the run resumes and
    # evaluates from its own checkpoint, which never reads train.init_from (it stopped with
    # "'.../image_vit' does not exist" before). Step 4's checkpoint deleted too, so that the
    # same command (the same compiled train step) has a step to train after resuming.
    shutil.rmtree(path)
    shutil.rmtree(os.path.join(run, "checkpoints", "4"))
    capsys.readouterr()
    assert np.isfinite(train.train(config, run)["loss"])
    assert f"Restored checkpoint at step 3 from {run}" in capsys.readouterr().out
    assert train.evaluate_checkpoint(config, run, "validation")["step"] == 4


def test_batchnorm_statistics_are_copied_where_the_source_has_them(data_dir, tmp_path):
    """A BatchNorm model onto one with another block in its first stage: the statistics of the
    blocks both have are the source's, the new block keeps its initial ones (as its
    parameters do). Before, copying the statistics stopped with a pytree-structure error."""
    source_config = tiny_config(data_dir, "r2plus1d")
    source_model = build_model(source_config.model, num_classes=4)
    variables = jax.jit(lambda k: source_model.init(k, np.zeros((1, 4, 16, 16, 3)), train=False))(
        jax.random.key(3)
    )
    variables = jax.tree.map(lambda x: x + 0.5, jax.device_get(nn.meta.unbox(variables)))
    path = str(tmp_path / "r2plus1d")
    save_converted(path, pretrained_config(dict(source_config.model), (4, 16, 16, 3), list("abcd")),
                   variables)  # fmt: skip
    config = tiny_config(data_dir, "r2plus1d", **{"model.layers": "(2, 1, 1, 1)",
                                                  "train.init_from": path})  # fmt: skip
    exp = train.setup(config)
    initial = train.create_state(exp, seed=0)
    state = train.init_from_pretrained(exp, initial, path)
    stats = jax.device_get(state.model_state["batch_stats"])
    first, added = stats["layer1"]["block0"], stats["layer1"]["block1"]
    source_first = variables["batch_stats"]["layer1"]["block0"]
    for got, want in zip(jax.tree.leaves(first), jax.tree.leaves(source_first), strict=True):
        np.testing.assert_array_equal(got, want)
    kept = jax.device_get(initial.model_state["batch_stats"])["layer1"]["block1"]
    for got, want in zip(jax.tree.leaves(added), jax.tree.leaves(kept), strict=True):
        np.testing.assert_array_equal(got, want)
