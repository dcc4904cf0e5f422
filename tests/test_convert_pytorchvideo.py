"""pytorchvideo zoo nets -> vjax: logits equal pytorchvideo's on small clips (eval mode, random
weights and BatchNorm statistics), and bad checkpoints name the parameter and both shapes."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is needed to compare with pytorchvideo")
pytest.importorskip("pytorchvideo", reason="pytorchvideo is needed for the reference models")

from conftest import jit_logits  # noqa: E402
from pytorchvideo.models.r2plus1d import create_r2plus1d  # noqa: E402
from pytorchvideo.models.resnet import create_resnet  # noqa: E402
from pytorchvideo.models.slowfast import create_slowfast  # noqa: E402
from pytorchvideo.models.x3d import create_x3d  # noqa: E402
from test_convert_torchvision import randomized, to_ours  # noqa: E402

from vjax.convert import ConversionError  # noqa: E402
from vjax.convert.pytorchvideo import from_pytorchvideo  # noqa: E402
from vjax.models import build_model  # noqa: E402
from vjax.models.slowfast import slow_frame_indices  # noqa: E402

T, S, N = 8, 32, 5  # frames, crop, classes: final feature maps of 1x1 (X3D, ResNets: /32)
COMMON = dict(model_num_class=N, dropout_rate=0.0)
# The zoo builders (pytorchvideo.models.hub) with the head's fixed pooling kernel sized to the
# small clip, and (X3D, R(2+1)D) without the final softmax, so logits are compared.
REFERENCES = {
    "x3d_m": lambda: create_x3d(
        input_clip_length=T, input_crop_size=S, head_activation=None, **COMMON
    ),
    "i3d_r50": lambda: create_resnet(
        stem_conv_kernel_size=(5, 7, 7),
        stage1_pool=torch.nn.MaxPool3d,
        stage_conv_a_kernel_size=(
            (3, 1, 1),
            [(3, 1, 1), (1, 1, 1)],
            [(3, 1, 1), (1, 1, 1)],
            [(1, 1, 1), (3, 1, 1)],
        ),
        head_pool_kernel_size=(T // 2, 1, 1),
        **COMMON,
    ),
    "c2d_r50": lambda: create_resnet(  # hub/resnet.py's c2d_r50: 2D convs, one time pool
        stem_conv_kernel_size=(1, 7, 7),
        stage1_pool=torch.nn.MaxPool3d,
        stage_conv_a_kernel_size=((1, 1, 1),) * 4,
        head_pool_kernel_size=(T // 2, 1, 1),
        **COMMON,
    ),
    "r2plus1d_r50": lambda: create_r2plus1d(
        head_activation=None, head_pool_kernel_size=(T // 4, 1, 1), **COMMON
    ),
    "slowfast_r50": lambda: create_slowfast(
        slowfast_fusion_conv_kernel_size=(7, 1, 1),
        head_pool_kernel_sizes=((T // 4, 1, 1), (T, 1, 1)),
        **COMMON,
    ),
    "slowfast_r50_4x16": lambda: create_slowfast(
        slowfast_fusion_conv_kernel_size=(5, 1, 1),
        slowfast_fusion_conv_stride=(8, 1, 1),
        head_pool_kernel_sizes=((T // 8, 1, 1), (T, 1, 1)),
        **COMMON,
    ),
}


# The zoo's frame length x sample rate (model_zoo.md; the hub's SLOW_8x8_R50, CSN_32x2_R101,
# R2PLUS1D_16x4_R50): vjax predict cut 8 consecutive frames for SLOW 8x8.
ZOO_SAMPLING = {"x3d_m": (16, 5), "i3d_r50": (8, 8), "r2plus1d_r50": (16, 4),
                "slowfast_r50": (32, 2)}  # fmt: skip


def _video_transform_normalisation():
    """pytorchvideo's create_video_transform (transforms/transforms_factory.py) normalises
    with video_mean / video_std defaults, which its zoo nets were trained with. That module
    does not import with the installed torchvision, so its defaults are read from its source."""
    import ast
    import importlib.util

    root = importlib.util.find_spec("pytorchvideo").submodule_search_locations[0]
    tree = ast.parse(open(f"{root}/transforms/transforms_factory.py").read())
    fn = next(
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.FunctionDef) and n.name == "create_video_transform"
    )
    positional = fn.args.args[len(fn.args.args) - len(fn.args.defaults) :]
    defaults = dict(zip([a.arg for a in positional], fn.args.defaults, strict=True))
    defaults.update(zip([a.arg for a in fn.args.kwonlyargs], fn.args.kw_defaults, strict=True))
    return tuple(ast.literal_eval(defaults[k]) for k in ("video_mean", "video_std"))


@pytest.mark.parametrize("arch", sorted(REFERENCES))
def test_logits_match_pytorchvideo(arch):
    """Logits equal the zoo net's; the converted config also normalises as pytorchvideo's
    video transform (:func:`_video_transform_normalisation`) and, for the archs of
    :data:`ZOO_SAMPLING`, samples frames as the zoo trained them."""
    from vjax.deploy.signature import sampling

    reference = randomized(REFERENCES[arch]())
    config, variables = from_pytorchvideo(reference.state_dict(), arch)
    mean, std = _video_transform_normalisation()
    np.testing.assert_allclose(config.input.mean, mean)
    np.testing.assert_allclose(config.input.std, std)
    if arch in ZOO_SAMPLING:
        cut = sampling(config, list(config.input.clip))
        assert (cut["num_frames"], cut["frame_stride"]) == ZOO_SAMPLING[arch], arch
    video = torch.randn(1, 3, T, S, S, generator=torch.Generator().manual_seed(1))
    model_config = dict(config.model)
    inputs = video
    if arch.startswith("slowfast"):
        assert model_config.pop("slow_sampling") == "linspace"  # the zoo's PackPathway
        model = build_model(model_config, N)
        slow = slow_frame_indices(T, model.alpha, "stride")
        inputs = [video[:, :, slow], video]
    model = build_model(model_config, N)
    with torch.no_grad():
        expected = reference(inputs).numpy()
    ours = jit_logits(model, variables, to_ours(video))
    assert np.abs(expected).max() > 0.1  # non-trivial logits (1000x the tolerance)
    np.testing.assert_allclose(np.asarray(ours), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("frames, alpha", [(32, 4), (32, 8), (16, 4), (12, 4), (8, 2)])
def test_linspace_slow_frames_are_pytorchvideos_uniform_temporal_subsample(frames, alpha):
    """The zoo's PackPathway picks the slow frames by ``uniform_temporal_subsample``:
    ``linspace(0, T - 1, T // alpha)`` truncated to integers (ending on the last frame); the
    logits test above feeds its own slow frames, so it cannot see this choice."""
    # pytorchvideo/transforms/functional.py's uniform_temporal_subsample, spelt out (that
    # module does not import with this torchvision).
    expected = torch.clamp(torch.linspace(0, frames - 1, frames // alpha), 0, frames - 1).long()
    np.testing.assert_array_equal(slow_frame_indices(frames, alpha, "linspace"), expected.numpy())


def test_checkpoints_fit_only_their_own_net():
    """Conversion alone (no forward pass; i3d_r50 and x3d_m cover those code paths): X3D-L's
    deeper stages and Slow R50's kernels fill their trees and not their neighbours'."""
    state = create_x3d(input_clip_length=4, input_crop_size=64, depth_factor=5.0).state_dict()
    _, variables = from_pytorchvideo(state, "x3d_l")
    assert len(variables["params"]["stage3"]) == 25  # ceil(5 x 5.0) blocks
    with pytest.raises(ConversionError, match="not in the model"):
        from_pytorchvideo(state, "x3d_m")
    slow = create_resnet(stem_conv_kernel_size=(1, 7, 7)).state_dict()
    _, variables = from_pytorchvideo(slow, "slow_r50")
    assert variables["params"]["stage3"]["block0"]["conv_a"]["conv"]["kernel"].shape[0] == 3
    with pytest.raises(ConversionError) as err:
        from_pytorchvideo(slow, "i3d_r50")
    assert (
        "stage1/block0/conv_a/conv/kernel: source has shape (1, 1, 1, 64, 64), "
        "model expects (3, 1, 1, 64, 64)" in str(err.value)
    )


def test_wrong_checkpoint_names_the_parameter_and_shapes():
    state = REFERENCES["x3d_m"]().state_dict()
    state["blocks.2.res_blocks.1.branch2.conv_b.weight"] = torch.zeros(108, 1, 3, 3, 5)
    with pytest.raises(ConversionError) as err:
        from_pytorchvideo(state, "x3d_m")
    assert (
        "stage2/block1/conv_b/conv/kernel: source has shape (3, 3, 5, 1, 108), "
        "model expects (3, 3, 3, 1, 108)" in str(err.value)
    )
    del state["blocks.5.proj.bias"]
    with pytest.raises(ConversionError, match=r"blocks\.5\.proj\.bias: missing"):
        from_pytorchvideo(state, "x3d_m")
    with pytest.raises(ConversionError, match="unknown pytorchvideo arch 'x3d_q'"):
        from_pytorchvideo(state, "x3d_q")


def test_x3d_zoo_clips_and_depths_are_the_hubs(monkeypatch):
    """pytorchvideo's hub builders (models/hub/x3d.py) name each X3D's clip length, crop and
    depth factor: the converter's clips are theirs, and X3D-L's state dict (depth factor 5.0)
    fits the vjax x3d_l net."""
    pytest.importorskip("pytorchvideo")
    from pytorchvideo.models.hub import x3d as hub

    from vjax.convert.pytorchvideo import CLIPS, from_pytorchvideo

    seen = {}
    with monkeypatch.context() as m:
        m.setattr(hub, "_x3d", lambda **kw: seen.update(kw))
        for arch in ("x3d_xs", "x3d_s", "x3d_m", "x3d_l"):
            seen.clear()
            getattr(hub, arch)()
            crop = seen["input_crop_size"]
            assert tuple(CLIPS[arch]) == (seen["input_clip_length"], crop, crop, 3), arch
    config, _ = from_pytorchvideo(hub.x3d_l(model_num_class=5).state_dict(), "x3d_l")
    assert list(config.input.clip) == [16, 312, 312, 3]


def test_a_checkpoint_of_another_library_is_one_clear_error():
    """A torchvision video ResNet's state dict (no blocks.N.* layers) was a ValueError from
    unpacking, a traceback at the command line."""
    from torchvision.models.video import r3d_18

    from vjax.convert.pytorchvideo import from_pytorchvideo

    with pytest.raises(ConversionError, match="not a pytorchvideo zoo checkpoint.*--from=torch"):
        from_pytorchvideo(r3d_18(num_classes=4).state_dict(), "x3d_m")


def test_x3d_width_and_depth_rounding_are_pytorchvideos():
    """vjax's round_width / round_repeats equal pytorchvideo.models.x3d's on a grid of widths
    and multipliers (X3D-M's own widths are all exact multiples of 8, so its logits test
    cannot tell nearest-multiple rounding from flooring)."""
    pytest.importorskip("pytorchvideo")
    from pytorchvideo.models import x3d as ref

    from vjax.models.x3d import round_repeats, round_width

    for multiplier in (0.5, 0.75, 1.3, 2.0, 2.2, 2.25, 2.5, 3.7):
        for width in range(1, 200):
            assert round_width(width, multiplier) == ref.round_width(width, multiplier), (
                width,
                multiplier,
            )
        for repeats in range(1, 8):
            assert round_repeats(repeats, multiplier) == ref.round_repeats(repeats, multiplier)
