"""torchvision video ResNets -> vjax: logits equal torchvision's (eval and train-mode BN),
bad checkpoints name the parameter and both shapes, and the convert command round-trips."""

import jax
import numpy as np
import pytest
from conftest import jit_logits

torch = pytest.importorskip("torch", reason="torch is needed to compare with torchvision")
video_models = pytest.importorskip(
    "torchvision.models.video", reason="torchvision is needed for the reference models"
)
resnet = pytest.importorskip("torchvision.models.video.resnet", reason="torchvision VideoResNet")

from vjax.convert import ConversionError  # noqa: E402
from vjax.convert.torchvision import from_torchvision  # noqa: E402
from vjax.models import build_model  # noqa: E402

NUM_CLASSES = 7


def randomized(model: "torch.nn.Module", seed: int = 0) -> "torch.nn.Module":
    """Random weights everywhere and random BatchNorm statistics (torch's defaults are 0/1,
    which would hide a mean/var mix-up), in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            elif name.endswith(("running_mean", ".bias")):
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.2)
            elif tensor.ndim == 1:  # BatchNorm scale
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            else:  # kernels: variance 1 / fan_in, so activations neither vanish nor explode
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * fan_in**-0.5)
    return model.eval()


def torch_video(seed: int = 1, batch: int = 1) -> "torch.Tensor":
    return torch.randn(batch, 3, 4, 32, 32, generator=torch.Generator().manual_seed(seed))


def to_ours(video: "torch.Tensor") -> np.ndarray:
    return video.permute(0, 2, 3, 4, 1).numpy()  # NCTHW -> NTHWC


def custom_video_resnet() -> "torch.nn.Module":
    """A VideoResNet torchvision does not name: bottlenecks and a different conv per stage."""
    makers = [resnet.Conv3DSimple, resnet.Conv3DNoTemporal, resnet.Conv2Plus1D, resnet.Conv3DSimple]
    return resnet.VideoResNet(
        resnet.Bottleneck, makers, [1, 2, 1, 1], resnet.BasicStem, num_classes=NUM_CLASSES
    )


@pytest.mark.parametrize("arch", ["r3d_18", "mc3_18", "r2plus1d_18", None])
def test_logits_match_torchvision(arch):
    if arch is None:
        reference = randomized(custom_video_resnet())
    else:
        reference = randomized(getattr(video_models, arch)(num_classes=NUM_CLASSES))
    config, variables = from_torchvision(reference.state_dict(), arch)
    assert config.model.name == (arch or "video_resnet")
    video = torch_video()
    with torch.no_grad():
        expected = reference(video).numpy()
    ours = jit_logits(build_model(config.model, NUM_CLASSES), variables, to_ours(video))
    assert np.abs(expected).max() > 0.1  # non-trivial logits (1000x the tolerance)
    np.testing.assert_allclose(np.asarray(ours), expected, atol=1e-4, rtol=0)


def test_training_mode_batchnorm_matches_torch():
    """Batch statistics in the forward pass and torch's momentum 0.1 in the running update."""
    reference = randomized(video_models.r3d_18(num_classes=NUM_CLASSES))
    config, variables = from_torchvision(reference.state_dict(), "r3d_18")
    video = torch_video(batch=2)
    reference.train()
    with torch.no_grad():
        expected = reference(video).numpy()
    logits, state = jax.jit(
        lambda v, x: build_model(config.model, NUM_CLASSES).apply(
            v, x, train=True, mutable=["batch_stats"]
        )
    )(variables, to_ours(video))
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4, rtol=0)
    stats = state["batch_stats"]["layer2"]["block0"]["conv_1"]["norm"]
    torch_bn = reference.layer2[0].conv1[1]
    np.testing.assert_allclose(stats["mean"], torch_bn.running_mean.numpy(), atol=1e-5)
    # torch updates running_var with the unbiased batch variance (x n / (n - 1)), flax with
    # the biased one: undo that factor (n = 2 clips x 2 x 8 x 8 positions per channel here).
    n = 2 * 2 * 8 * 8
    before = variables["batch_stats"]["layer2"]["block0"]["conv_1"]["norm"]["var"]
    torch_var = torch_bn.running_var.numpy()
    expected_var = 0.9 * before + (torch_var - 0.9 * before) * (n - 1) / n
    np.testing.assert_allclose(stats["var"], expected_var, rtol=1e-5)


def test_wrong_checkpoints_name_the_parameter_and_shapes():
    state = video_models.r3d_18(num_classes=NUM_CLASSES).state_dict()
    missing = {k: v for k, v in state.items() if k != "layer1.0.conv1.1.running_var"}
    with pytest.raises(ConversionError, match=r"layer1\.0\.conv1\.1\.running_var: missing"):
        from_torchvision(missing, "r3d_18")
    reshaped = dict(state, **{"layer3.1.conv2.0.weight": torch.zeros(256, 128, 3, 3, 3)})
    with pytest.raises(ConversionError) as err:
        from_torchvision(reshaped, "r3d_18")
    assert (
        "layer3/block1/conv_2/conv/kernel: source has shape (3, 3, 3, 128, 256), "
        "model expects (3, 3, 3, 256, 256)" in str(err.value)
    )
    extra = dict(state, **{"head.extra.weight": torch.zeros(3)})
    with pytest.raises(ConversionError, match="head.extra.weight"):
        from_torchvision(extra, "r3d_18")
    with pytest.raises(ConversionError, match="not a mc3_18"):
        from_torchvision(state, "mc3_18")


def test_inflated_2d_resnet50_sees_a_static_video_as_the_image():
    """C2D (all temporal kernels 1) inflated from torchvision's 2D ResNet-50 answers a video of
    one repeated frame with the 2D net's logits for that frame; I3D's tree fills too."""
    from torchvision.models import resnet50

    from vjax.convert.torchvision import from_torchvision_resnet50

    reference = randomized(resnet50(num_classes=NUM_CLASSES))
    config, variables = from_torchvision_resnet50(reference.state_dict(), "c2d_r50")
    image = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = reference(image).numpy()
    video = np.repeat(image.permute(0, 2, 3, 1).numpy()[:, None], 2, axis=1)
    ours = jit_logits(build_model(config.model, NUM_CLASSES), variables, video)
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)
    _, i3d = from_torchvision_resnet50(reference.state_dict(), "i3d_r50")
    assert i3d["params"]["stem"]["conv"]["kernel"].shape == (5, 7, 7, 3, 64)


def reference_script_checkpoint(model: "torch.nn.Module") -> dict:
    """What torchvision's references/video_classification/train.py saves each epoch: the
    weights under "model" beside the optimiser, the schedule, the epoch and its argparse
    ``args`` (a Namespace, which ``weights_only`` loading refuses unless allowed)."""
    import argparse

    optimizer = torch.optim.SGD(model.parameters(), lr=0.64, momentum=0.9, weight_decay=1e-4)
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.001, total_iters=10)
    steps = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[20, 30], gamma=0.1)
    schedule = torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, steps], milestones=[10])
    args = argparse.Namespace(model="r3d_18", lr=0.64, epochs=45, clip_len=16, amp=False)
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "lr_scheduler": schedule.state_dict(), "epoch": 3, "args": args}  # fmt: skip


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", "reference_script.pth"])
def test_convert_command_round_trip(tmp_path, suffix):
    """A state dict, a safetensors file and a torchvision reference-script checkpoint each
    convert to a folder whose logits equal torchvision's."""
    import vjax
    from vjax.cli import main

    reference = randomized(video_models.r3d_18(num_classes=NUM_CLASSES), seed=3)
    src = str(tmp_path / f"r3d{suffix}")
    if suffix == "reference_script.pth":
        torch.save(reference_script_checkpoint(reference), src)
    elif suffix == ".pth":
        torch.save(reference.state_dict(), src)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, src)
    out = str(tmp_path / "out")
    code = main(["convert", "--from=torchvision", "--arch=r3d_18", f"--src={src}", f"--out={out}"])
    assert code == 0
    config, model, variables = vjax.load(out)
    assert config.model.name == "r3d_18" and len(config.class_names) == NUM_CLASSES
    video = torch_video(seed=4)
    with torch.no_grad():
        expected = reference(video).numpy()
    ours = jit_logits(model, variables, to_ours(video))
    np.testing.assert_allclose(np.asarray(ours), expected, atol=1e-4, rtol=0)


def test_convert_command_reports_a_missing_file(tmp_path, capsys):
    from vjax.cli import main

    code = main(["convert", "--from=torchvision", f"--src={tmp_path}/nope.pth", "--out=x"])
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_converted_config_normalises_as_torchvisions_weights_transforms():
    """The converted config's mean, std and crop are torchvision's own for its video weights."""
    from torchvision.models.video import R3D_18_Weights, r3d_18

    transforms = R3D_18_Weights.DEFAULT.transforms()
    config, _ = from_torchvision(r3d_18(num_classes=4).state_dict(), "r3d_18")
    np.testing.assert_allclose(config.input.mean, transforms.mean)
    np.testing.assert_allclose(config.input.std, transforms.std)
    assert list(config.input.clip[1:3]) == list(transforms.crop_size)
    # vjax predict cuts clips as the weights' meta says: 16 frames at 15 fps, one apart,
    # short side resized to 128 (transforms' resize_size 128 x 171), 112 cropped
    from vjax.deploy.signature import sampling

    meta, cut = R3D_18_Weights.DEFAULT.meta, sampling(config, list(config.input.clip))
    assert (cut["fps"], cut["frame_stride"], cut["num_frames"]) == (15.0, 1.0, 16)
    assert "`frame_rate=15`" in meta["_docs"] and "`clip_len=16`" in meta["_docs"]
    assert cut["resize_short_side"] == transforms.resize_size[0] == 128
