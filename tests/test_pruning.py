"""Structured pruning (vjax/pruning): removing units whose output nothing reads leaves the
logits unchanged in every family; Taylor scores equal the squared derivative of the loss
through a gate on the unit; pruned checkpoints load, export, count fewer FLOPs, fine-tune
through train.init_from (which takes their widths) and evaluate; bad requests are one line."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import scored_result, tiny_config, zero_variables

import vjax
from vjax import train
from vjax.config_utils import ConfigError
from vjax.flops import count_macs, count_params
from vjax.models import build_model
from vjax.pruning import PruningError, prunable_groups, prune_variables
from vjax.pruning import main as prune_main
from vjax.pruning.scores import taylor
from vjax.pruning.select import keep_counts
from vjax.pruning.units import UnitGroup, get_path

CLIP = (4, 16, 16, 3)
MODELS = {
    # ViViT model 4: heads in two halves (time, space), pruned alike; MLP units.
    "vivit_split": {"name": "vivit", "variant": "factorised_dot_product", "size": "Ti/8x2",
                    "hidden_size": 32, "num_layers": 2, "num_heads": 4, "mlp_dim": 16},
    # (2+1)D blocks: the channels of conv_1 and the middle widths of both factorised convs.
    "r2plus1d": {"name": "r2plus1d_18", "layers": (1, 1, 1, 1), "width": 8},
    # Per-frame basic blocks and two stacked LSTMs, the top one read by the classifier.
    "lrcn": {"name": "lrcn", "frame_layers": (1, 1, 1, 1), "frame_width": 8, "hidden_size": 8,
             "num_layers": 2},
    # Bottleneck blocks: conv_a and conv_b.
    "slow": {"name": "slow_r50", "depth": 14, "width": 8},
}  # fmt: skip


def _random_variables(model, clip=CLIP, seed=0, noise_std=0.2):
    """Initialised variables plus noise (zero-initialised heads would make every logit 0)."""
    variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, *clip)), train=False))(
        jax.random.key(seed)
    )
    noise = np.random.default_rng(seed)
    return jax.tree.map(
        lambda p: np.asarray(p) + noise_std * noise.standard_normal(p.shape).astype(np.float32),
        jax.device_get(nn.meta.unbox(variables)),
    )


def _silence(variables, group, units):
    """Zeroes what reads ``units`` of ``group``: afterwards nothing depends on them."""
    for s in group.slices:
        if s.role == "consumer":
            array = get_path(variables[s.collection], s.path)
            index = [slice(None)] * array.ndim
            index[s.axis] = units
            array[tuple(index)] = 0.0


@pytest.mark.parametrize("name", list(MODELS))
def test_removing_silent_units_keeps_the_logits(name):
    """Half the units of every group are silenced (nothing reads them); magnitude pruning of
    that share removes exactly those, and the smaller model gives the same logits."""
    clip = (4, 32, 32, 3) if name == "slow" else CLIP
    model = build_model(MODELS[name], 5)
    variables = _random_variables(model, clip)
    rng = np.random.default_rng(1)
    silenced, kinds = {}, {}
    for group in prunable_groups(model, variables):
        part = group.size // group.parts
        units = np.concatenate(
            [p * part + rng.choice(part, part // 2, replace=False) for p in range(group.parts)]
        )
        _silence(variables, group, units)
        silenced[group.key] = group.size - len(units)
        total, zero = kinds.get(group.kind, (0, 0))
        kinds[group.kind] = (total + group.size, zero + len(units))
    ratios = {zero / total for total, zero in kinds.values()}
    assert len(ratios) == 1, kinds  # one ratio silences the same share of every kind
    pruned, widths, units = prune_variables(model, variables, ratios.pop())
    assert widths == silenced
    assert all(after < before for before, after in units.values())
    smaller = build_model({**MODELS[name], "widths": widths}, 5)
    video = np.random.default_rng(2).standard_normal((2, *clip)).astype(np.float32)
    # Jitted: a whole graph compiles faster than eager op-by-op dispatch of a 3D CNN.
    want = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, video)
    got = jax.jit(lambda v, x: smaller.apply(v, x, train=False))(pruned, video)
    assert float(jnp.abs(want).max()) > 0.1  # the logits are not trivially zero
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4)
    assert count_params(smaller, (1, *clip), pruned) < count_params(model, (1, *clip), variables)


def test_kept_widths_round_to_multiples_of_8():
    """Channels, MLP and recurrent units are kept in multiples of 8 (fast kernels), at least 8
    and at most the layer's width; heads, and layers of 8 units or fewer, keep exact counts."""
    sizes = {"channels": [64, 36, 6], "mlp": [384], "heads": [3, 3]}
    groups = [UnitGroup(f"{kind}{i}", kind, n, ()) for kind, ns in sizes.items()
              for i, n in enumerate(ns)]  # fmt: skip
    scores = [np.linspace(1.0, 2.0, g.size) for g in groups]
    exact = keep_counts(groups, scores, 0.5)
    rounded = keep_counts(groups, scores, 0.5, multiple=8)
    assert sum(exact[:3]) == 53 and exact[3] == 192 and sum(exact[4:]) == 3
    for group, a, b in zip(groups, exact, rounded, strict=True):
        if group.kind == "heads" or group.size <= 8:
            assert b == a
        else:
            assert b % 8 == 0 and abs(b - a) <= 4 and 8 <= b <= group.size


def test_heads_in_two_groups_are_removed_in_pairs_to_the_ratio_asked():
    """ViViT model 4's heads come in two parts (time, space) that keep as many heads each:
    the ranking counted single heads, and rounding each layer down to a pair dropped the odd
    ones (kept 2 of 8 at --ratio=0.5). Blocks of each part's k-th best compete by their mean."""
    groups = [UnitGroup(f"block{i}/attention", "heads", 4, (), 2) for i in range(2)]
    scores = [np.array([10.0, 9, 8, 1]), np.array([7.0, 1, 1, 1])]
    # blocks: layer 0 (10, 8) then (9, 1); layer 1 (7, 1) then (1, 1)
    assert keep_counts(groups, scores, 0.5, per_layer=False) == [4, 0]
    assert keep_counts(groups, scores, 0.25, per_layer=False) == [4, 2]
    scores = [np.array([4.0, 3, 2, 1]), np.array([4.0, 1, 1, 1])]  # each over its own mean
    assert keep_counts(groups, scores, 0.5) == [2, 2]
    model = build_model(
        {
            "name": "vivit",
            "variant": "factorised_dot_product",
            "size": "Ti/4x2",
            "hidden_size": 32,
            "num_layers": 3,
            "num_heads": 4,
            "mlp_dim": 16,
        },
        5,
    )
    init = jax.jit(lambda k: model.init(k, jnp.zeros((1, 4, 8, 8, 3)), train=False))(
        jax.random.key(0)
    )
    rng = np.random.default_rng(18)  # a draw whose heads were pruned to 4 of 12, not 6
    noisy = jax.tree.map(lambda p: np.asarray(p) * (1 + rng.standard_normal(p.shape)),
                         nn.meta.unbox(init))  # fmt: skip
    _, _, units = prune_variables(model, noisy, 0.5, "magnitude")
    assert units["heads"] == (12, 6)


def test_sublayer_granularity_removes_whole_sublayers_lowest_summed_score_first():
    """--granularity=sublayer: attention and MLP sublayers keep all their units or none, the
    lowest summed scores go first while that brings the share removed closer to the ratio;
    channels are still pruned unit by unit."""
    sizes = {"heads": [3, 3, 3, 3], "mlp": [384, 384, 192, 384], "channels": [16]}
    sums = {"heads": [4.0, 3.0, 1.0, 2.0], "mlp": [1.0, 3.0, 0.5, 2.0], "channels": [1.0]}
    groups, scores = [], []
    for kind, ns in sizes.items():
        for i, n in enumerate(ns):
            groups.append(UnitGroup(f"{kind}{i}", kind, n, ()))
            scores.append(np.linspace(0.5, 1.5, n) * sums[kind][i] / n)  # sums to sums[kind][i]
    counts = keep_counts(groups, scores, 0.5, multiple=8, per_layer=False, granularity="sublayer")
    assert counts[:4] == [3, 3, 0, 0]  # the two lowest of four equal sublayers
    # MLP: the 192-unit sublayer (0.5) goes, then the 384 (1.0): 576 of 1344 removed, closer to
    # 672 than 384 is; a third (960) would be further.
    assert counts[4:8] == [0, 384, 0, 384]
    assert counts[8] == 8  # channels: half, unit by unit
    assert keep_counts(groups, scores, 0.5, per_layer=False)[4:8] != [0, 384, 0, 384]
    # A sublayer kept whole stays whole: no rounding to multiples of 8 narrows it afterwards.
    odd = [UnitGroup("mlp0", "mlp", 20, ()), UnitGroup("mlp1", "mlp", 20, ())]
    kept = keep_counts(odd, [np.ones(20), np.full(20, 2.0)], 0.5, 8, False, "sublayer")
    assert kept == [0, 20]
    model = build_model(MODELS["vivit_split"], 3)
    with pytest.raises(PruningError, match="--granularity must be one of unit, sublayer"):
        prune_variables(
            model, zero_variables(model, np.zeros((1, *CLIP))), 0.5, granularity="layer"
        )
    with pytest.raises(PruningError, match="use --by=taylor, not --by=magnitude"):
        prune_variables(
            model, zero_variables(model, np.zeros((1, *CLIP))), 0.5, granularity="sublayer"
        )
    model = build_model(MODELS["r2plus1d"], 3)
    with pytest.raises(PruningError, match="VideoResNet_r2plus1d_18 has none; use --granularity"):
        prune_variables(
            model, zero_variables(model, np.zeros((1, *CLIP))), 0.5, granularity="sublayer"
        )


def _gated_loss(model, variables, module: tuple[str, ...]):
    """The loss as a function of gates (one per channel) on the input of the sub-module at
    path ``module``, and the batch (flax interception, independent of vjax.pruning's slices)."""

    def loss(gates, batch):
        def scale_input(next_fun, args, kwargs, context):
            if context.module.path == module and context.method_name == "__call__":
                args = (args[0] * gates, *args[1:])
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(scale_input):
            logits, _ = model.apply(
                variables, batch["video"], train=True, mutable=["batch_stats"],
                rngs={"dropout": jax.random.key(0)},
            )  # fmt: skip
        one_hot = jax.nn.one_hot(batch["label"], logits.shape[-1])
        return -(one_hot * jax.nn.log_softmax(logits)).sum(-1).mean()

    return loss


@pytest.mark.parametrize("name,group_key,module", [
    ("vivit_split", "encoder/block01/mlp", "encoder/block01/mlp/fc2"),
    ("r3d", "layer2/block0/conv_1", "layer2/block0/conv_2"),
])  # fmt: skip
def test_taylor_scores_are_gate_derivatives(name, group_key, module):
    """Taylor importance = mean over batches of (dL/dm)^2 for a gate m on the unit's output,
    computed here by scaling the reading layer's input channel. In float64: through train-mode
    BatchNorm on a batch of 2, float32 rounding alone moves them apart by ~0.5%."""
    with jax.enable_x64(True):
        _check_taylor(name, group_key, tuple(module.split("/")))


def _check_taylor(name, group_key, module):
    config = (
        {"name": "r3d_18", "layers": (1, 1, 1, 1), "width": 8} if name == "r3d" else MODELS[name]
    )
    model = build_model(config, 5).clone(dtype=jnp.float64)
    variables = jax.tree.map(
        lambda a: np.asarray(a, np.float64), _random_variables(model, noise_std=0.02)
    )
    rng = np.random.default_rng(3)
    batches = [
        {"video": jnp.asarray(rng.standard_normal((2, *CLIP))),
         "label": jnp.asarray(rng.integers(0, 5, 2))}
        for _ in range(2)
    ]  # fmt: skip

    def loss(params, batch):
        state = {k: v for k, v in variables.items() if k != "params"}
        logits, _ = model.apply(
            {"params": params, **state}, batch["video"], train=True, mutable=list(state),
            rngs={"dropout": jax.random.key(0)},
        )  # fmt: skip
        one_hot = jax.nn.one_hot(batch["label"], logits.shape[-1])
        return -(one_hot * jax.nn.log_softmax(logits)).sum(-1).mean()

    group = next(g for g in prunable_groups(model, variables) if g.key == group_key)
    (scores,) = taylor(variables, [group], loss, batches)
    want = np.zeros(group.size)
    gates = jax.jit(jax.grad(_gated_loss(model, variables, module)))
    for batch in batches:  # at gates = 1, d/d gate_j is unit j's own gate derivative
        want += np.asarray(gates(jnp.ones(group.size), batch)) ** 2 / len(batches)
    assert want.min() > 0
    np.testing.assert_allclose(scores, want, rtol=1e-8)


def test_prune_finetune_export_and_evaluate(data_dir, tmp_path, capsys):
    """The user's path: a trained run -> `vjax prune --by=taylor` (on its own training batches)
    -> a smaller model that vjax.load, vjax export and the FLOP counter take -> fine-tuned with
    train.init_from (the widths come along) -> evaluated, as is the pruned folder itself."""
    steps = {"train.num_steps": "2", "train.eval_every": "2", "train.checkpoint_every": "2"}
    config = tiny_config(data_dir, **steps)
    source, pruned_dir = str(tmp_path / "run"), str(tmp_path / "pruned")
    train.train(config, source)
    args = [f"--model={source}", f"--out={pruned_dir}", "--ratio=0.5", "--by=taylor"]
    assert prune_main([*args, "--batches=2"]) == 0
    assert "heads 2->1, mlp 64->32" in capsys.readouterr().out
    # A typical mistake: whole sublayers by magnitude. One line, exit 2, nothing written.
    wrong = [f"--model={source}", f"--out={tmp_path / 'wrong'}", "--granularity=sublayer"]
    assert prune_main([*wrong, "--batches=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "use --by=taylor, not --by=magnitude" in err, err
    assert not (tmp_path / "wrong").exists()

    from vjax.bench_prune import reusable_units

    assert reusable_units(pruned_dir, 0.5, "taylor")["heads"] == [2, 1]
    import vjax.checkpoint

    older = vjax.checkpoint.read_metadata(pruned_dir)  # a folder pruned before --granularity
    del older["pruning"]["granularity"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vjax.checkpoint, "read_metadata", lambda path: older)
        assert reusable_units(pruned_dir, 0.5, "taylor", "unit")["heads"] == [2, 1]
        with pytest.raises(ValueError, match="--granularity=unit, not"):
            reusable_units(pruned_dir, 0.5, "taylor", "sublayer")
    with pytest.raises(ValueError, match="--by=taylor --granularity=unit, not --ratio=0.25"):
        reusable_units(pruned_dir, 0.25, "taylor")
    with pytest.raises(ValueError, match="not --ratio=0.5 --by=taylor --granularity=sublayer"):
        reusable_units(pruned_dir, 0.5, "taylor", "sublayer")
    original, pruned = vjax.load(source), vjax.load(pruned_dir)
    widths = dict(pruned.config.model.widths)
    assert widths == {"encoder/block00/attention": 1, "encoder/block00/mlp": 32}
    clip = (1, *original.clip_shape)
    assert count_macs(pruned.module, clip) < 0.8 * count_macs(original.module, clip)
    video = np.random.default_rng(0).integers(0, 256, (3, *original.clip_shape), np.uint8)
    logits = pruned(video)
    assert logits.shape == (3, 4) and np.isfinite(logits).all()

    from vjax.deploy.export import export_model
    from vjax.deploy.runtime import load_exported

    export_model(pruned_dir, str(tmp_path / "exported"), ["stablehlo"])
    exported = load_exported(str(tmp_path / "exported"))
    np.testing.assert_allclose(exported(video)[0], logits, rtol=1e-4, atol=1e-4)

    # `vjax bench prune` times each folder's model as `vjax bench infer` times its float32
    # form: the same compiled runner, whose logits are the loaded model's.
    import vjax.bench_infer
    from vjax.bench_prune import _speeds

    runners = []

    def spy(fn, clip):
        run, memory = real_runner(fn, clip)
        runners.append(run)
        return run, memory

    real_runner = vjax.bench_infer.compiled_runner
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vjax.bench_infer, "compiled_runner", spy)
        speeds = _speeds({"original": source, "pruned": pruned_dir}, batch=2, repeats=3)
    np.testing.assert_allclose(runners[1](video), logits, rtol=1e-4, atol=1e-4)
    assert speeds["pruned"]["params"] == count_params(pruned.module, clip, pruned.variables)
    assert speeds["pruned"]["gmacs"] < speeds["original"]["gmacs"]
    assert all(s["calls"] == 3 and s["latency_ms"] > 0 for s in speeds.values())

    assert train.evaluate_checkpoint(config, pruned_dir, "test")["step"] == 0
    finetuned = str(tmp_path / "finetuned")
    train.train(tiny_config(data_dir, **steps, **{"train.init_from": pruned_dir}), finetuned)
    assert dict(vjax.load(finetuned).config.model.widths) == widths
    # Evaluating the fine-tuned run needs no widths on the command line: its checkpoint has them.
    assert train.evaluate_checkpoint(config, finetuned, "test")["step"] == 2
    conflicting = tiny_config(data_dir, **{"train.init_from": pruned_dir})
    with conflicting.unlocked():
        conflicting.model.widths = {"encoder/block00/mlp": 16}
    with pytest.raises(ConfigError, match="differ from those of the pruned model"):
        train.train(conflicting, str(tmp_path / "conflicting"))  # before any data or model


def test_prune_refuses_bad_requests(data_dir, tmp_path, capsys):
    """A bad ratio, a model family without per-layer widths and a taken --out are one line each
    and exit 2."""
    from vjax.convert import pretrained_config, save_converted

    model = {"name": "conv_lstm", "stem_features": 4, "hidden_features": (4,)}
    clip = (2, 8, 8, 3)
    init = zero_variables(
        build_model(model, 3), np.zeros((1, *clip))
    )  # refused before any value is read
    config = pretrained_config(model, clip, ["a", "b", "c"])
    folder = save_converted(str(tmp_path / "conv_lstm"), config, init)
    cases = [
        (["--ratio=1.0"], "--ratio must be in [0, 1)"),
        ([], "cannot be pruned: it has no per-layer widths"),
        ([f"--out={folder}"], "already holds a checkpoint"),
    ]
    for extra, message in cases:
        argv = [f"--model={folder}", f"--out={tmp_path / 'out'}", *extra]
        assert prune_main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    # --batches of 0 was a traceback from the Taylor scores (and skipped the refit silently).
    from vjax.cli import main as vjax_main

    argv = ["prune", f"--model={folder}", f"--out={tmp_path / 'out'}", "--batches=0"]
    assert vjax_main(argv) == 2
    err = capsys.readouterr().err
    assert "argument --batches: takes a whole number of 1 or more, got '0'" in err
    assert len(err.strip().splitlines()) == 1, err


def test_bench_prune_refuses_sublayers_where_vjax_prune_would_at_once(capsys):
    """Before any training: a conv net, or magnitude scores, with --granularity=sublayer."""
    from vjax.cli import main as vjax_main

    cases = [
        (["--granularity=sublayer"], "not r2plus1d --by=magnitude"),
        (["--models=vivit", "--by=magnitude"], "not vivit --by=magnitude"),
    ]
    for argv, bad in cases:
        assert vjax_main(["bench", "prune", *argv, "--out=", "--workdir=/nonexistent"]) == 2
        assert bad in capsys.readouterr().err


def test_bench_prune_table(tmp_path, monkeypatch):
    """``vjax bench prune``'s section: three rows per model, the speed-up, FLOPs and parameter
    ratios and the points lost against the target, beside the other sections; the setting
    names the cores the process may use (here pinned to one of two)."""
    import os

    from scipy.stats import binomtest

    from vjax.bench import publish
    from vjax.bench_prune import table

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {1}, raising=False)

    def row(params, gmacs, top1, steps, ms):  # right on the first top1 * 100 test clips
        return scored_result(top1, 100, params=params, gmacs=gmacs, steps=steps, latency_ms=ms,
                             p90_ms=ms * 1.2, clips_per_s=1000 / ms)  # fmt: skip

    result = {
        "models": {"vivit": {
            "rows": {"original": row(528102, 0.0362, 0.99, 800, 4.0),
                     "pruned": row(300000, 0.0181, 0.60, 0, 2.0),
                     "fine-tuned": row(300000, 0.0181, 0.98, 80, 2.0)},
            "units": {"heads": (12, 6), "mlp": (1536, 768)}, "num_classes": 6,
            "finetune_lr": 3e-4, "by": "taylor", "granularity": "sublayer"}},
        "ratio": 0.5, "batch": 8, "repeats": 20,
    }  # fmt: skip
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\n## vjax bench distill\n\nkept\n")
    assert publish("prune", ["--models=vivit"], lambda c: table(result, 60.0, c), str(out)) == 0
    text = out.read_text()
    assert "## vjax bench distill\n\nkept" in text and "`vjax bench prune --models=vivit`" in text
    assert ", 1 of 2 cores, float32," in text
    ci = binomtest(98, 100).proportion_ci(method="wilson")
    assert (
        "| vivit | fine-tuned | heads 6/12, mlp 768/1536 | 300,000 | 0.0181 | 80 | "
        f"0.980 ({ci.low:.3f}-{ci.high:.3f}) |" in text
    )
    assert (
        "vivit (pruned --by=taylor --granularity=sublayer, fine-tuned at peak learning rate "
        "0.0003): 2.00x lower batch-1 latency, "
        "2.00x fewer GFLOPs, 1.76x fewer parameters, "
        "+1.0 points of top-1 lost after fine-tuning (only the fine-tuned one right on 0 of the "
        "100 test clips, only the original on 1; McNemar exact p = 1; target: >= 1.6x at <= 2 "
        "points: met)" in text
    )


def test_batchnorm_statistics_are_measured_again_after_pruning(data_dir, tmp_path):
    """A BatchNorm layer whose input lost channels sees other activations than its running
    averages describe: `vjax prune` measures them again (precise BN) on training batches."""
    from vjax.convert import save_converted
    from vjax.data.loaders import training_batches
    from vjax.data.motion import MOTIONS
    from vjax.models.precise_bn import precise_batch_stats
    from vjax.pruning import prune_checkpoint
    from vjax.step import normalize_video

    model_config = {"name": "r3d_18", "layers": (1, 1, 1, 1), "width": 8}
    config = tiny_config(data_dir)
    with config.unlocked():
        config.model = model_config
        config.class_names = list(MOTIONS[:4])
        config.input.clip = list(CLIP)
    model = build_model(model_config, 4)
    variables = _random_variables(model, noise_std=0.05)
    folder = save_converted(str(tmp_path / "r3d"), config, variables)
    summary = prune_checkpoint(folder, str(tmp_path / "pruned"), 0.5, batches=2)
    assert summary["batch_stats"] == "recomputed on 2 training batches"

    sliced, widths, _ = prune_variables(model, variables, 0.5, multiple=8)
    assert widths == summary["widths"]
    smaller = build_model({**model_config, "widths": widths}, 4)
    videos = [normalize_video(b["video"], config.input.mean, config.input.std, jnp.float32)
              for b in training_batches(config, 2)]  # fmt: skip
    want = precise_batch_stats(smaller, sliced, videos)["batch_stats"]
    got = vjax.load(str(tmp_path / "pruned")).variables["batch_stats"]
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    stale = jax.tree.leaves(sliced["batch_stats"])
    assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(got), stale, strict=True))


# (vjax/pruning/scores.py, select.py)


# kills ps01, ps02, ps03
def test_magnitude_is_the_norm_of_the_scale_or_producer_times_the_norm_of_the_reader():
    """magnitude = ||BN scale (else producing weights)||_2 x ||consuming weights||_2, per unit."""
    from vjax.pruning.scores import magnitude
    from vjax.pruning.units import Slice, UnitGroup

    rng = np.random.default_rng(0)
    prod, scale, cons = rng.normal(size=(6, 4)), rng.normal(size=4), rng.normal(size=(4, 5))
    variables = {"params": {"a": {"kernel": prod, "scale": scale}, "b": {"kernel": cons}}}
    slices = (Slice("params", ("a", "kernel"), 1, "producer"),
              Slice("params", ("a", "scale"), 0, "scale"),
              Slice("params", ("b", "kernel"), 0, "consumer"))  # fmt: skip
    with_scale = magnitude(variables, UnitGroup("g", "channels", 4, slices))
    np.testing.assert_allclose(with_scale, np.abs(scale) * np.linalg.norm(cons, axis=1))
    plain = magnitude(variables, UnitGroup("g", "channels", 4, (slices[0], slices[2])))
    np.testing.assert_allclose(plain, np.linalg.norm(prod, axis=0) * np.linalg.norm(cons, axis=1))


def _groups(kind, sizes, parts=1):
    from vjax.pruning.units import UnitGroup

    return [UnitGroup(f"{kind}{i}", kind, n, (), parts) for i, n in enumerate(sizes)]


# kills sl01, sl02, sl03, sl04, sl07
def test_keep_counts_by_hand():
    """Counts of kept units: nearest-integer removal, per-layer normalisation, nearest multiple
    of 8, heads never rounded, and whole heads per part."""
    from vjax.pruning.select import keep_counts

    (one,) = _groups("channels", [10])
    assert keep_counts([one], [np.arange(1.0, 11)], 0.37) == [6]  # 3.7 -> 4 of 10 removed
    pair = _groups("channels", [4, 4])
    scores = [np.array([10.0, 20, 30, 40]), np.array([1.0, 2, 3, 4])]
    assert keep_counts(pair, scores, 0.5) == [2, 2]  # normalised per layer: equal
    assert keep_counts(pair, scores, 0.5, per_layer=False) == [3, 1]
    wide = _groups("channels", [64])
    assert keep_counts(wide, [np.arange(64.0)], 43 / 64, multiple=8) == [24]  # 21 -> 24
    heads = _groups("heads", [12])
    assert keep_counts(heads, [np.arange(12.0)], 0.5, multiple=8) == [6]
    split = _groups("heads", [8], parts=2)
    assert keep_counts(split, [np.arange(8.0)], 0.375) == [4]  # 5 kept -> 2 per part


# kills sl05, sl09
def test_whole_sublayers_go_by_summed_score_and_a_tie_keeps_both():
    """Sublayer granularity: ranked by summed score; one that only ties the target stays."""
    from vjax.pruning.select import keep_counts

    equal = _groups("mlp", [10, 10])
    assert keep_counts(equal, [np.ones(10), np.ones(10)], 0.25, 1, False, "sublayer") == [10, 10]
    mixed = _groups("mlp", [20, 4])  # sums 20 and 16; means 1 and 4
    got = keep_counts(mixed, [np.ones(20), np.full(4, 4.0)], 0.5, 1, False, "sublayer")
    assert got == [20, 0]  # the lower sum (16) goes; the 20 would overshoot


def test_widths_that_no_layer_can_have_are_refused_by_name():
    """``model.widths`` is checked against the parameter tree before training: a path that is
    not a layer (a typo would be silently ignored), or a width a layer cannot have. Only an
    attention or MLP sublayer may be removed whole (width 0); a conv keeps at least a unit."""
    from vjax.models.widths import check_widths

    def params(name):
        model = build_model(MODELS[name], 3)
        shapes = jax.eval_shape(
            lambda: model.init(jax.random.key(0), jnp.zeros((1, *CLIP)), train=False)
        )
        return nn.meta.unbox(shapes)["params"]

    vivit, r2plus1d = params("vivit_split"), params("r2plus1d")
    check_widths({"encoder/block00/attention": 0, "encoder/block01/mlp": 0}, vivit)
    check_widths({"layer2/block0/conv_1": 1}, r2plus1d)
    refused = [
        ({"encoder/block00/atention": 2}, vivit, "'encoder/block00/atention', which is not a"),
        ({"layer2/block0/conv_1": 0}, r2plus1d, "must be a positive integer, got 0"),
        ({"encoder/block00/mlp": -1}, vivit, "must be a non-negative integer, got -1"),
        ({"encoder/block00/mlp": 8.0}, vivit, "got 8.0"),
        ({"encoder/block00/mlp": True}, vivit, "got True"),
    ]
    for widths, tree, message in refused:
        with pytest.raises(ValueError, match=re.escape(message)):
            check_widths(widths, tree)
