"""Clip RandAugment: ops checked by hand on uint8 frames; one draw for the whole clip."""

import numpy as np
import pytest

pytest.importorskip("torchvision", reason="RandAugment uses torchvision's functional ops")

from vjax.data.randaugment import OPS, SIGNED_OPS, apply_op, op_value, rand_augment  # noqa: E402


def _clip(t=3, h=12, w=16):
    return np.random.default_rng(0).integers(0, 256, (t, h, w, 3), np.uint8)


def test_magnitude_table_matches_torchvision_bins():
    assert op_value("rotate", 30, 31, 10, 10) == pytest.approx(30.0)
    assert op_value("shear_x", 9, 31, 10, 10) == pytest.approx(0.3 * 9 / 30)
    assert op_value("translate_x", 30, 31, 100, 331) == pytest.approx(150.0)
    assert [op_value("posterize", m, 31, 1, 1) for m in (0, 9, 30)] == [8.0, 7.0, 4.0]
    assert op_value("solarize", 0, 31, 1, 1) == 255.0 and op_value("identity", 5, 31, 1, 1) is None
    with pytest.raises(ValueError, match="magnitude"):
        op_value("rotate", 31, 31, 1, 1)


def test_ops_by_hand():
    x = _clip()
    np.testing.assert_array_equal(apply_op(x, "identity", None), x)
    shifted = apply_op(x, "translate_x", 3.7)  # whole pixels, zeros come in on the left
    np.testing.assert_array_equal(shifted[:, :, 3:], x[:, :, :-3])
    assert (shifted[:, :, :3] == 0).all()
    down = apply_op(x, "translate_y", -2.0)
    np.testing.assert_array_equal(down[:, :-2], x[:, 2:])
    np.testing.assert_array_equal(apply_op(x, "posterize", 3.0), x & 0b11100000)
    np.testing.assert_array_equal(apply_op(x, "solarize", 100.0), np.where(x >= 100, 255 - x, x))
    bright = np.minimum(x.astype(np.float32) * 1.5, 255).astype(np.uint8)
    np.testing.assert_array_equal(apply_op(x, "brightness", 0.5), bright)
    # Autocontrast stretches each channel of each frame from [min, max] to [0, 255].
    auto = apply_op(np.clip(x, 50, 150), "autocontrast", None).astype(int)
    expected = (np.clip(x, 50, 150).astype(float) - 50) * 255 / 100
    np.testing.assert_allclose(auto, expected, atol=1.0)


def test_one_draw_for_every_frame_and_determinism():
    frame = _clip(1)
    clip = np.repeat(frame, 4, axis=0)
    for seed in range(20):
        out = rand_augment(clip, np.random.default_rng(seed), num_ops=2, magnitude=9)
        assert out.shape == clip.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(out, np.repeat(out[:1], 4, axis=0))
        again = rand_augment(clip, np.random.default_rng(seed), num_ops=2, magnitude=9)
        np.testing.assert_array_equal(out, again)
    # One op: uniform over the 14, then a sign for signed ops (torchvision's scheme).
    drawn = set()
    for seed in range(30):
        rng = np.random.default_rng(seed)
        op = OPS[int(rng.integers(14))]
        value = op_value(op, 15, 31, 12, 16)
        if op in SIGNED_OPS and rng.integers(2):
            value = -value
        drawn.add(op)
        out = rand_augment(clip, np.random.default_rng(seed), num_ops=1, magnitude=15)
        np.testing.assert_array_equal(out, apply_op(clip, op, value))
    assert len(drawn) >= 10


def test_randaugment_runs_in_a_process_that_loaded_tensorflow_first():
    """A trainer that prepares its dataset first loads TensorFlow (TFDS encodes the frames with
    it) before the first clip; importing torchvision after it used to kill the process in
    Triton's library (vjax/torch_imports.py). A fresh process, without the test session's own
    guard."""
    import subprocess
    import sys

    code = (
        "import numpy as np, tensorflow\n"
        "from vjax.data.randaugment import rand_augment\n"
        "clip = np.zeros((2, 8, 8, 3), np.uint8)\n"
        "print(rand_augment(clip, np.random.default_rng(0), 2, 9).shape)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("(2, 8, 8, 3)")


# (vjax/data/randaugment.py)


# kills ra04, ra06
@pytest.mark.parametrize("op, name", [("shear_x", "ShearX"), ("shear_y", "ShearY"),
                                      ("color", "Color"), ("sharpness", "Sharpness")])  # fmt: skip
def test_ops_equal_torchvision_randaugment_at_the_same_strength(op, name):
    """Each op equals torchvision's RandAugment op at the same signed magnitude."""
    import collections

    torch = pytest.importorskip("torch")
    from torchvision.transforms import v2

    from vjax.data.randaugment import apply_op, op_value

    clip = np.random.default_rng(0).integers(0, 256, (2, 12, 16, 3), np.uint8)
    value = -op_value(op, 20, 31, 12, 16)
    video = torch.from_numpy(clip).permute(0, 3, 1, 2)
    fill = collections.defaultdict(lambda: None)
    ref = v2.RandAugment()._apply_image_or_video_transform(
        video, name, value, v2.InterpolationMode.NEAREST, fill
    )
    np.testing.assert_array_equal(apply_op(clip, op, value), ref.permute(0, 2, 3, 1).numpy())
