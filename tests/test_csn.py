"""CSN (ir-CSN, Tran et al. 2019) as a ResNet3D preset: its logits equal pytorchvideo's
``create_csn`` on a small net, the full ``csn_r101`` tree maps 1:1 onto pytorchvideo's hub net,
and checkpoints of another shape are refused with the parameter named."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from vjax.models import build_model

torch = pytest.importorskip("torch", reason="torch is needed to compare with pytorchvideo")
pytest.importorskip("pytorchvideo", reason="pytorchvideo is needed for the reference models")

from conftest import jit_logits  # noqa: E402
from pytorchvideo.models.csn import create_csn  # noqa: E402
from pytorchvideo.models.hub.csn import csn_r101  # noqa: E402
from test_convert_torchvision import randomized, to_ours  # noqa: E402

from vjax.convert import ConversionError  # noqa: E402
from vjax.convert.pytorchvideo import from_pytorchvideo  # noqa: E402

T, S, N = 8, 64, 5  # final feature map 1x2x2: time /8, space /32 (stem stride and max-pool)
WIDTH = 8  # stem channels (pytorchvideo's 64): stages are 8..64 wide inside, 32..256 outside


def small_csn() -> "torch.nn.Module":
    """pytorchvideo's hub ``csn_r101`` built as a reduced-width CSN-50 for a small clip: the
    head's fixed pooling kernel is sized to the 1x2x2 final map (the hub's is (4, 7, 7))."""
    return create_csn(
        model_depth=50,
        stem_dim_out=WIDTH,
        stem_pool=torch.nn.MaxPool3d,
        head_pool_kernel_size=(1, 2, 2),
        model_num_class=N,
        dropout_rate=0.0,
    )


def test_logits_match_pytorchvideo_create_csn():
    reference = randomized(small_csn())
    config, variables = from_pytorchvideo(reference.state_dict(), "csn_r101")
    assert dict(config.model) == {"name": "csn_r101", "depth": 50, "width": WIDTH}
    video = torch.randn(2, 3, T, S, S, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(video).numpy()
    ours = jit_logits(build_model(dict(config.model), N), variables, to_ours(video))
    assert np.abs(expected).max() > 0.1  # non-trivial logits (1000x the tolerance)
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)


def test_full_csn_r101_maps_one_to_one_onto_pytorchvideos_hub_net():
    """Names and shapes only, no forward pass: the converter uses every tensor of the hub net
    once and fills every leaf of our tree (checking each shape); the counts agree."""
    state = csn_r101().state_dict()
    config, variables = from_pytorchvideo(state, "csn_r101")
    assert dict(config.model) == {"name": "csn_r101"}
    assert list(config.input.clip) == [32, 224, 224, 3]  # the zoo's 32x2 training clip
    tensors = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert len(jax.tree.leaves(variables)) == len(tensors)
    params = sum(v.numel() for k, v in tensors.items() if not k.endswith(("_mean", "_var")))
    assert sum(x.size for x in jax.tree.leaves(variables["params"])) == params == 22_213_776
    block = variables["params"]["stage3"]["block22"]  # R101: 23 blocks in stage 3
    assert block["conv_b"]["conv"]["kernel"].shape == (3, 3, 3, 1, 256)  # depthwise


def test_depthwise_kernel_is_named_for_its_output_channels_only():
    model = build_model({"name": "csn_r101", "depth": 50, "width": WIDTH}, N)
    video = jax.ShapeDtypeStruct((1, T, S, S, 3), jnp.float32)
    shapes = jax.eval_shape(lambda v: model.init(jax.random.key(0), v, train=False), video)
    spec = nn.get_partition_spec(shapes)["params"]["stage2"]["block0"]
    assert spec["conv_b"]["conv"]["kernel"] == PartitionSpec(None, None, None, None, "conv_out")
    assert spec["conv_a"]["conv"]["kernel"] == PartitionSpec(
        None, None, None, "conv_in", "conv_out"
    )
    kernel = nn.meta.unbox(shapes)["params"]["stage2"]["block0"]["conv_b"]["conv"]["kernel"]
    assert kernel.shape == (3, 3, 3, 1, 2 * WIDTH)


def test_checkpoints_of_another_shape_are_refused():
    state = small_csn().state_dict()
    with pytest.raises(ConversionError) as err:  # CSN's depthwise 3x3x3 is not Slow's 1x3x3
        from_pytorchvideo(state, "slow_r50")
    assert (
        "stage1/block0/conv_b/conv/kernel: source has shape (3, 3, 3, 1, 8), "
        "model expects (1, 3, 3, 8, 8)" in str(err.value)
    )
    stage3_block5 = "blocks.3.res_blocks.5."
    cut = {k: v for k, v in state.items() if not k.startswith(stage3_block5)}
    with pytest.raises(ConversionError, match=r"blocks per stage \(3, 4, 5, 3\) match no"):
        from_pytorchvideo(cut, "csn_r101")
