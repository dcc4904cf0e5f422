"""Knowledge distillation (vjax/distill.py): the loss against NumPy, the start-up checks, and a
tiny distilled run whose teacher takes more frames and a larger frame than the student."""

import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO, scored_result, tiny_config

from vjax import objectives, train
from vjax.config_utils import ConfigError, load_config
from vjax.convert import pretrained_config, save_converted
from vjax.data.motion import MOTIONS
from vjax.distill import Teacher, distilled, resample_clip
from vjax.metric_writers import read_metrics
from vjax.models import build_model

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
CLIP = (2, 4, 4, 3)
TEACHER_CLIP = (8, 24, 24, 3)  # the tiny data's clips are (4, 16, 16, 3)
TEACHER_MODEL = {"name": "vivit", "size": "Ti/8x2", "num_layers": 1, "hidden_size": 32,
                 "num_heads": 2, "mlp_dim": 64}  # fmt: skip


class Heads(nn.Module):
    """Linear heads on the flattened clip: one ``(B, K)`` output, or ``{task: (B, K)}``."""

    sizes: int | dict[str, int]
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, video, train: bool = False):
        x = video.reshape(video.shape[0], -1)
        if isinstance(self.sizes, int):
            return nn.Dense(self.sizes, name="head")(x)
        return {task: nn.Dense(k, name=task)(x) for task, k in self.sizes.items()}


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def _numpy_logits(params, x):
    """``x @ W + b`` per head, in float64 (the reference's own forward pass)."""
    flat = np.asarray(x, np.float64).reshape(x.shape[0], -1)
    return {k: flat @ np.asarray(p["kernel"]) + np.asarray(p["bias"]) for k, p in params.items()}


@pytest.mark.parametrize("kind", ["single", "multitask", "multi_label", "multi_label_sum"])
def test_distilled_loss_matches_numpy(kind):
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * task loss, per head, and the
    logged parts, against an independent float64 NumPy computation."""
    temperature, alpha, batch_size = 3.0, 0.3, 5
    rng = np.random.default_rng(0)
    sizes = {"verb": 4, "noun": 3} if kind == "multitask" else 5
    video = rng.integers(0, 256, (batch_size, *CLIP), np.uint8)
    if kind == "multitask":
        labels = np.stack([rng.integers(0, 4, batch_size), rng.integers(0, 3, batch_size)], -1)
    elif kind.startswith("multi_label"):
        labels = (rng.random((batch_size, 5)) < 0.4).astype(np.int32)
    else:
        labels = rng.integers(0, 5, batch_size)
    student, teacher_module = Heads(sizes), Heads(sizes)
    dummy = jnp.zeros((1, *CLIP))
    # One compiled init for both (the same module); * 40: logits of a few units.
    init = jax.jit(lambda key: jax.tree.map(lambda p: p * 40.0, student.init(key, dummy)))
    student_vars = init(jax.random.key(1))
    teacher_vars = init(jax.random.key(2))
    teacher = Teacher("t", teacher_module, teacher_vars, MEAN, STD, CLIP)
    base = objectives.get(kind if kind.startswith("multi_label") else "classification")
    objective = distilled(base, teacher, temperature, alpha)

    x_student = (video / 255.0 - 0.5) / 0.25
    x_teacher = (video / 255.0 - np.asarray(MEAN)) / np.asarray(STD)
    batch = {"video": jnp.asarray(video), "label": jnp.asarray(labels)}

    def loss_of(params, frozen, batch, x):
        return objective.loss(
            student, {"params": params}, batch, x, jax.random.key(0), frozen=frozen,
            label_smoothing=0.0,
        )  # fmt: skip

    # The loss and its gradients in one compiled program (as the train step runs them).
    @jax.jit
    def loss_and_grads(params, frozen, batch, x):
        return loss_of(params, frozen, batch, x), jax.grad(
            lambda p: loss_of(p, frozen, batch, x)[0]
        )(params)

    (loss, metrics, _), grads = loss_and_grads(
        student_vars["params"], teacher_vars, batch, jnp.asarray(x_student, jnp.float32)
    )

    s = _numpy_logits(student_vars["params"], x_student)
    t = _numpy_logits(teacher_vars["params"], x_teacher)
    columns = {"verb": labels[:, 0], "noun": labels[:, 1]} if kind == "multitask" else None
    task, distill = {}, {}
    for head in s:
        zs, zt = s[head] / temperature, t[head] / temperature
        if kind.startswith("multi_label"):  # _sum: both terms summed over the classes
            per_example = (lambda a: a.sum(-1).mean()) if kind.endswith("sum") else np.mean
            p = 1.0 / (1.0 + np.exp(-zt))
            kl = p * (_log_sigmoid(zt) - _log_sigmoid(zs))
            kl += (1 - p) * (_log_sigmoid(-zt) - _log_sigmoid(-zs))
            distill[head] = temperature**2 * per_example(kl)
            y = labels.astype(np.float64)
            task[head] = -per_example(y * _log_sigmoid(s[head]) + (1 - y) * _log_sigmoid(-s[head]))
        else:
            pt = np.exp(_log_softmax(zt))
            kl = (pt * (_log_softmax(zt) - _log_softmax(zs))).sum(-1)
            distill[head] = temperature**2 * kl.mean()
            y = columns[head] if columns else labels
            task[head] = -_log_softmax(s[head])[np.arange(batch_size), y].mean()
    want_task, want_distill = sum(task.values()), sum(distill.values())
    want = alpha * want_distill + (1 - alpha) * want_task
    assert want_distill > 0.05 and want_task > 0.05  # both parts matter in the mix
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["loss"]), want, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["loss_task"]), want_task, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["loss_distill"]), want_distill, rtol=1e-5)
    if kind == "single":  # the teacher's own accuracy on the batch, logged beside
        top1 = (t["head"].argmax(-1) == labels).mean()
        np.testing.assert_allclose(float(metrics["top1_teacher"]), top1, rtol=1e-6)
    if kind == "multitask":
        for head in s:
            np.testing.assert_allclose(
                float(metrics[f"loss_distill_{head}"]), distill[head], rtol=1e-5
            )
    # Gradients reach the student only; the teacher is an input, not a parameter.
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))


def test_an_objective_without_top1_distils_without_the_teachers_top1():
    """A user's objective need not log top-1 (the distilled loss read the teacher's from it:
    a KeyError); the other parts are still logged."""

    def plain_losses(logits, batch, label_smoothing):
        loss = objectives.cross_entropy(logits, batch["label"], label_smoothing).mean()
        return loss, {"loss": loss}

    student = Heads(5)
    variables = jax.jit(student.init)(jax.random.key(0), jnp.zeros((1, *CLIP)))
    teacher = Teacher("t", student, variables, MEAN, STD, CLIP)
    objective = distilled(objectives.labelled("plain", plain_losses), teacher, 2.0, 0.5)
    batch = {"video": jnp.zeros((2, *CLIP), jnp.uint8), "label": jnp.array([0, 3])}
    _, metrics, _ = jax.jit(
        lambda v: objective.loss(
            student,
            v,
            batch,
            jnp.zeros((2, *CLIP)),
            jax.random.key(1),
            frozen=variables,
            label_smoothing=0.0,
        )  # fmt: skip
    )(variables)
    assert set(metrics) == {"loss", "loss_task", "loss_distill"}


def test_resample_clip():
    """More frames repeat the nearest ones (evenly spaced), fewer stride; space is resized."""
    video = np.arange(2 * 4 * 2 * 2 * 1, dtype=np.uint8).reshape(2, 4, 2, 2, 1)
    more = np.asarray(resample_clip(video, (8, 2, 2, 1)))
    np.testing.assert_array_equal(more, video[:, [0, 0, 1, 1, 2, 2, 3, 3]].astype(np.float32))
    fewer = np.asarray(resample_clip(video, (2, 2, 2, 1)))
    np.testing.assert_array_equal(fewer, video[:, [1, 3]].astype(np.float32))
    flat = np.full((1, 2, 4, 4, 3), 77, np.uint8)
    larger = np.asarray(resample_clip(flat, (2, 6, 6, 3)))
    assert larger.shape == (1, 2, 6, 6, 3) and np.allclose(larger, 77.0)


@functools.partial(jax.jit, static_argnums=0)
def _init_teacher(model, key):
    """``model.init`` on the teacher's clip, compiled once per model (modules compare by
    their fields): eagerly, XLA compiles every op on its own."""
    return model.init(key, jnp.zeros((1, *TEACHER_CLIP)), train=False)


def _save_teacher(root, name: str, class_names, model_config=TEACHER_MODEL, **inputs) -> str:
    """A random-weight ViViT teacher on 8 frames of 24x24 saved as a `vjax convert` folder
    (``inputs``: its config's input fields, as training would record them)."""
    variables = _init_teacher(build_model(model_config, len(class_names)), jax.random.key(3))
    noise = np.random.default_rng(0)  # a zero-initialised head would teach only uniform odds
    variables = jax.tree.map(lambda p: p + 0.3 * noise.standard_normal(p.shape), variables)
    config = pretrained_config(model_config, TEACHER_CLIP, class_names, mean=MEAN, std=STD)
    config.input.update(inputs)
    return save_converted(str(root / name), config, jax.device_get(variables))


def test_a_teacher_trained_on_clips_of_another_span_is_warned_about(tmp_path, caplog):
    """Its frames are resampled by count: 8 frames of 1.28 s given 0.32 s of the student's
    show it motion at a quarter of the speed it was trained on (nothing said so)."""
    from vjax.distill import clip_seconds, load_teacher

    names = list(MOTIONS[:4])
    teacher = _save_teacher(tmp_path, "t", names, num_frames=8, frame_stride=4, fps=25.0)
    with caplog.at_level("WARNING"):
        load_teacher(teacher, names, TEACHER_CLIP, seconds=0.32)
    assert "trained on clips of 1.28 s, the student's span 0.32 s" in caplog.text
    assert "motion 0.25x as fast" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        load_teacher(teacher, names, TEACHER_CLIP, seconds=1.28)
    assert not caplog.text
    config = load_config(f"{REPO}/configs/videos.py:/videos,tiny")  # stored at 10 fps
    assert clip_seconds(config) == pytest.approx(4 * 2 / 10)  # 4 frames, every 2nd
    with config.unlocked():
        config.input.sampling = "tsn"  # frames spread over each whole video: no one span
    assert clip_seconds(config) is None
    tsn_teacher = _save_teacher(tmp_path, "tsn", names, num_frames=8, fps=25.0, sampling="tsn")
    caplog.clear()
    with caplog.at_level("WARNING"):
        load_teacher(tsn_teacher, names, TEACHER_CLIP, seconds=0.32)
    assert "trained on clips" not in caplog.text


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    root = tmp_path_factory.mktemp("teachers")
    names = list(MOTIONS[:4])  # the tiny demo data's classes
    return {
        "good": _save_teacher(root, "good", names),
        "reordered": _save_teacher(root, "reordered", [names[1], names[0], *names[2:]]),
    }


def test_startup_checks(data_dir, teachers, tmp_path):
    """Wrong classes name both lists; a missing teacher is one clear error; a teacher needs a
    labelled objective."""
    with pytest.raises(ConfigError, match=r"classes \['left', 'right'.*has \['right', 'left'"):
        train.setup(tiny_config(data_dir, **{"train.distill.teacher": teachers["reordered"]}))
    missing = str(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=r"train.distill.teacher: .*nowhere.* does not exist"):
        train.setup(tiny_config(data_dir, **{"train.distill.teacher": missing}))
    # A pre-training run on labelled data keeps its class names, but predicts pixels.
    masked = {
        **TEACHER_MODEL,
        "name": "videomae_pretraining",
        "decoder_hidden_size": 16,
        "decoder_num_layers": 1,
        "decoder_num_heads": 2,
        "decoder_mlp_dim": 32,
    }
    pretrained = _save_teacher(tmp_path, "mae", list(MOTIONS[:4]), masked)
    with pytest.raises(ConfigError, match=r"mae' was trained by .*reconstruction.* fine-tune"):
        train.setup(tiny_config(data_dir, **{"train.distill.teacher": pretrained}))
    with pytest.raises(ConfigError, match=r"alpha must be in \[0, 1\]"):
        train.setup(
            tiny_config(
                data_dir,
                **{"train.distill.teacher": teachers["good"], "train.distill.alpha": "1.5"},
            )
        )


def test_distilled_training_run(data_dir, teachers, tmp_path):
    """A few steps of a tiny student distilled from a ViViT teacher on a larger clip (more
    frames, larger frames), on an fsdp=2 mesh and mixup-mixed batches: the teacher's variables
    are sharded by the same rules, both loss parts are logged and mix as configured, the
    checkpoint holds the student only, and evaluation does not need the teacher."""
    overrides = {
        "train.distill.teacher": teachers["good"],
        "input.mixup_alpha": "1.0",
        "train.distill.alpha": "0.7",
        "train.distill.temperature": "1.0",
        "train.num_steps": "2",
        "train.log_every": "1",
        "train.eval_every": "2",
        "train.checkpoint_every": "2",
        "sharding.mesh": "(('data', 4), ('fsdp', 2), ('tensor', 1))",
    }
    config = tiny_config(data_dir, **overrides)
    exp = train.setup(config)
    specs = [s.spec for s in jax.tree.leaves(exp.teacher.shardings(exp.mesh, exp.rules))]
    assert any("fsdp" in str(spec) for spec in specs)  # sharded, not gathered on one device
    workdir = str(tmp_path / "student")
    result = train.train(config, workdir)
    assert 0.0 <= result["top1"] <= 1.0
    logged = [m for m in read_metrics(workdir) if m["split"] == "train"]
    assert len(logged) == 2
    for m in logged:
        assert m["loss_distill"] > 0 and m["loss_task"] > 0 and 0 <= m["top1_teacher"] <= 1
        np.testing.assert_allclose(
            m["loss"], 0.7 * m["loss_distill"] + 0.3 * m["loss_task"], rtol=1e-5
        )
    import vjax

    student = vjax.load(workdir)
    assert student.clip_shape == (4, 16, 16, 3)
    plain = jax.eval_shape(lambda k: nn.meta.unbox(exp.init_state(k)), jax.random.key(0))
    assert jax.tree.structure(student.variables["params"]) == jax.tree.structure(plain.params)
    os.rename(teachers["good"], teachers["good"] + ".moved")  # evaluation needs no teacher
    try:
        evaluated = train.evaluate_checkpoint(config, workdir, "test")
    finally:
        os.rename(teachers["good"] + ".moved", teachers["good"])
    assert evaluated["step"] == 2


def test_bench_distill_table(tmp_path):
    """``vjax bench distill``'s section: the sizes and the FLOPs ratio, per seed the two
    students compared clip by clip (McNemar), the gain over the seeds and the gap to the
    teacher, written beside the other sections."""
    from scipy.stats import binomtest

    from vjax.bench import publish
    from vjax.bench_distill import table

    runs = [
        {
            "seed": 0,
            "alone": scored_result(0.70, 800, seconds=60.0),
            "distilled": scored_result(0.80, 800, seconds=70.0),
        }
    ]  # right on the first clips
    result = {
        "teacher": scored_result(0.90, 800, params=528102, gmacs=0.0362, steps=800),
        "student": {"params": 96918, "gmacs": 0.0067, "steps": 1600, "hidden_size": 48,
                    "num_layers": 2},
        "runs": runs, "num_classes": 6, "temperature": 4.0, "alpha": 0.5,
        "num_train": (400, 4000), "mixup_alpha": 1.0,
    }  # fmt: skip
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\n## vjax bench ssl\n\nkept\n")
    write = lambda command: table(result, 90.0, command)  # noqa: E731
    assert publish("distill", ["--tiny"], write, str(out)) == 0
    text = out.read_text()
    assert "## vjax bench ssl\n\nkept" in text and "## vjax bench distill" in text
    assert "5.4x fewer GFLOPs" in text and "`vjax bench distill --tiny`" in text
    assert "400 of the 4000 training clips" in text and "mixup alpha 1.0 on every batch" in text
    assert "(the teacher scores the same mixed clips), trained once per seed" in text
    p = binomtest(80, 80, 0.5).pvalue  # distilled right on 80 clips alone missed, none back
    alone = binomtest(560, 800).proportion_ci(method="wilson")
    distilled = binomtest(640, 800).proportion_ci(method="wilson")
    assert (f"| 0 | 0.800 ({distilled.low:.3f}-{distilled.high:.3f}) | 0.700 ({alone.low:.3f}-"
            f"{alone.high:.3f}) | +10.0 | only distilled right on 80 of the 800 test clips, only "
            f"alone on 0; McNemar exact p = {p:.2g} | 70 / 60 |") in text  # fmt: skip
    assert "| student | 96,918 | 0.0067 | 1600 | by seed below |" in text
    assert (
        "Distilled vs alone: +10.0 points on average over 1 seed (one seed: the spread over "
        "seeds is unknown); the distilled students 10.0 points below the teacher"
    ) in text


def test_resample_clip_is_bilinear_like_torch():
    torch = pytest.importorskip("torch")
    from vjax.distill import resample_clip

    video = np.random.default_rng(0).integers(0, 256, (1, 2, 4, 6, 3), np.uint8)
    got = np.asarray(resample_clip(video, (2, 8, 9, 3)))
    x = torch.from_numpy(video[0].astype(np.float32)).permute(0, 3, 1, 2)
    want = torch.nn.functional.interpolate(x, size=(8, 9), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(got[0], want.permute(0, 2, 3, 1).numpy(), rtol=1e-5, atol=1e-3)


def test_from_config_passes_temperature_and_alpha(monkeypatch):
    import ml_collections

    from vjax import distill, objectives

    seen = {}
    monkeypatch.setattr(distill, "load_teacher", lambda *a, **k: "teacher")
    monkeypatch.setattr(
        distill, "distilled", lambda obj, t, temperature, alpha: seen.update(T=temperature, a=alpha)
    )
    config = ml_collections.ConfigDict(
        {"train": {"distill": {"teacher": "x", "temperature": 2.5, "alpha": 0.3}}, "input": {}}
    )
    distill.from_config(config, objectives.get("classification"), ["a"], (4, 16, 16, 3))
    assert seen == {"T": 2.5, "a": 0.3}
