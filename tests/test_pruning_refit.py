"""Refitting the output projections of pruned transformer layers (vjax.pruning.refit)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import jit_logits, tiny_config

from vjax.models import build_model
from vjax.pruning import prunable_groups
from vjax.pruning.refit import COLLECTION, consumer_grams, refit_consumers
from vjax.pruning.select import remove_units
from vjax.pruning.units import get_path

CLIP = (4, 16, 16, 3)
CONFIG = {"name": "vivit", "size": "Ti/8x2", "hidden_size": 32, "num_layers": 2,
          "num_heads": 4, "mlp_dim": 16}  # fmt: skip


def _model_and_variables():
    model = build_model(CONFIG, 5)
    variables = jax.jit(lambda key: model.init(key, jnp.zeros((1, *CLIP)), train=False))(
        jax.random.key(0)
    )
    noise = np.random.default_rng(0)
    variables = jax.tree.map(
        lambda p: np.asarray(p) + 0.2 * noise.standard_normal(p.shape).astype(np.float32),
        jax.device_get(nn.meta.unbox(variables)),
    )
    return model, variables


def _apply(model):
    def apply(variables, video):
        return model.apply(variables, video, train=False, mutable=[COLLECTION])

    return apply


def _videos(count, seed=1, batch=3):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((batch, *CLIP)).astype(np.float32) for _ in range(count)]


def _pruned_logits(model, variables, kept, video):
    widths = {g.key: len(units) for g, units in kept.items()}
    smaller = build_model({**CONFIG, "widths": widths}, 5)
    return jit_logits(smaller, remove_units(variables, kept), video)


def test_removed_copies_of_kept_units_are_folded_back_exactly():
    """Heads 2, 3 are copies of heads 0, 1 and MLP units 8-15 of units 0-7: removing the
    copies and refitting the projections gives the original logits (plain removal does not)."""
    model, variables = _model_and_variables()
    params = variables["params"]
    kept = {}
    for group in prunable_groups(model, variables):
        layer = get_path(params, tuple(group.key.split("/")))
        if group.kind == "heads":
            for name in ("query", "key", "value"):
                layer[f"{name}_kernel"][:, 2:] = layer[f"{name}_kernel"][:, :2]
                layer[f"{name}_bias"][2:] = layer[f"{name}_bias"][:2]
        else:
            layer["fc1"]["kernel"][:, 8:] = layer["fc1"]["kernel"][:, :8]
            layer["fc1"]["bias"][8:] = layer["fc1"]["bias"][:8]
        kept[group] = np.arange(group.size // 2)
    grams = consumer_grams(_apply(model), variables, _videos(2))
    assert sorted(grams) == sorted(g.key for g in kept)
    video = _videos(1, seed=5)[0]
    want = jit_logits(model, variables, video)
    plain = _pruned_logits(model, variables, kept, video)
    refit = _pruned_logits(model, refit_consumers(variables, kept, kept, grams), kept, video)
    assert np.abs(plain - want).max() > 0.1  # the removed units mattered
    np.testing.assert_allclose(refit, want, rtol=1e-3, atol=1e-3)


def test_refit_is_the_least_squares_fit_of_the_layer_output():
    """The MLP's refit fc2 equals numpy's least-squares fit of the original fc2 output from the
    kept units plus a constant, on fc2 inputs captured independently (a method interceptor),
    over several batches; and on other clips the refit model's logits are closer to the
    original's than those of plain removal."""
    model, variables = _model_and_variables()
    videos = _videos(8, batch=8)

    @jax.jit  # one compiled forward pass for the 8 batches, not op by op
    def fc2_inputs(variables, video):
        """{module path: [the inputs of its fc2 calls]}"""
        inputs = {}

        def record(next_fun, args, kwargs, context):
            if context.method_name == "__call__" and context.module.name == "fc2":
                inputs.setdefault("/".join(context.module.path), []).append(args[0])
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(record):
            model.apply(variables, video, train=False)
        return inputs

    captured = [
        (tuple(p.split("/")), np.asarray(a))
        for video in videos
        for p, calls in fc2_inputs(variables, video).items()
        for a in calls
    ]
    groups = prunable_groups(model, variables)
    rng = np.random.default_rng(3)
    kept = {g: np.sort(rng.choice(g.size, g.size // 2, replace=False)) for g in groups}
    grams = consumer_grams(_apply(model), variables, videos)
    refit = refit_consumers(variables, groups, kept, grams)
    for group in (g for g in groups if g.kind == "mlp"):
        path = tuple(group.key.split("/"))
        inputs = np.concatenate(
            [a.reshape(-1, a.shape[-1]) for p, a in captured if tuple(p[:-1]) == path]
        ).astype(np.float64)
        assert len(inputs) == 8 * 8 * 9  # 8 batches of 8 clips of 8 tubelets + 1 class token
        fc2 = get_path(variables["params"], (*path, "fc2"))
        target = inputs @ fc2["kernel"] + fc2["bias"]
        design = np.concatenate([inputs[:, kept[group]], np.ones((len(inputs), 1))], axis=1)
        solution = np.linalg.lstsq(design, target, rcond=None)[0]
        got = get_path(refit["params"], (*path, "fc2"))
        np.testing.assert_allclose(got["kernel"][kept[group]], solution[:-1], atol=2e-3)
        np.testing.assert_allclose(got["bias"], solution[-1], atol=2e-3)
    video = _videos(1, seed=5, batch=16)[0]
    want = jit_logits(model, variables, video)
    plain_error = np.abs(_pruned_logits(model, variables, kept, video) - want).mean()
    refit_error = np.abs(_pruned_logits(model, refit, kept, video) - want).mean()
    assert refit_error < 0.9 * plain_error, (refit_error, plain_error)


def test_models_without_sown_layers_have_no_grams():
    """A 3D conv net has no transformer projections: nothing is sown, nothing is refit."""
    model = build_model({"name": "r2plus1d_18", "layers": (1, 1, 1, 1), "width": 8}, 5)
    variables = jax.jit(lambda key: model.init(key, jnp.zeros((1, *CLIP)), train=False))(
        jax.random.key(0)
    )
    assert consumer_grams(_apply(model), variables, _videos(1)) == {}


@pytest.mark.parametrize("granularity", ["unit", "sublayer"])
def test_a_sublayer_can_be_removed_whole_and_the_folder_reloads(data_dir, tmp_path, granularity):
    """Every head and MLP unit of the second block silenced: `vjax prune` removes both
    sublayers whole (width 0, only their output biases left), unit by unit or as the lowest
    scored sublayers, refits the rest on training batches, and the folder `vjax.load` opens
    gives the original logits."""
    import vjax
    from vjax.convert import save_converted
    from vjax.data.motion import MOTIONS
    from vjax.pruning import prune_checkpoint

    config = tiny_config(data_dir)
    with config.unlocked():
        config.model = dict(CONFIG)
        config.class_names = list(MOTIONS[:5])
        config.input.clip = list(CLIP)
    model, variables = _model_and_variables()
    block = variables["params"]["encoder"]["block01"]
    block["attention"]["out_kernel"][:] = 0.0
    block["mlp"]["fc2"]["kernel"][:] = 0.0
    folder = save_converted(str(tmp_path / "vivit"), config, variables)
    summary = prune_checkpoint(
        folder,
        str(tmp_path / "pruned"),
        0.5,
        "taylor" if granularity == "sublayer" else "magnitude",
        batches=2,
        multiple=1,
        granularity=granularity,
    )
    assert summary["widths"] == {
        "encoder/block00/attention": 4, "encoder/block00/mlp": 16,
        "encoder/block01/attention": 0, "encoder/block01/mlp": 0,
    }  # fmt: skip
    assert summary["refit"] == "2 layers on 2 training batches"  # the first block kept all
    pruned = vjax.load(str(tmp_path / "pruned"))
    removed = pruned.variables["params"]["encoder"]["block01"]
    assert removed["attention"].keys() == {"out_bias"} and removed["mlp"].keys() == {"fc2"}
    video = np.random.default_rng(4).standard_normal((2, *CLIP)).astype(np.float32)
    want = jit_logits(model, variables, video)
    got = jit_logits(
        build_model({**CONFIG, "widths": summary["widths"]}, 5), pruned.variables, video
    )
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-3, atol=1e-3)
