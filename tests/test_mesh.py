"""Meshes from config: -1 filling, and multi-slice (ICI x DCN) layouts."""

import dataclasses

import numpy as np
import pytest

from vjax.parallel import make_mesh


@dataclasses.dataclass(frozen=True)
class FakeDevice:
    """Just what mesh building reads: an id, a slice and a process (no accelerator needed)."""

    id: int
    slice_index: int
    process_index: int
    platform: str = "cpu"
    device_kind: str = "fake"


def _ids(mesh) -> np.ndarray:
    return np.vectorize(lambda d: d.id)(mesh.devices)


def test_minus_one_takes_the_remaining_devices():
    devices = [FakeDevice(i, 0, 0) for i in range(8)]
    mesh = make_mesh([("data", 2), ("fsdp", -1), ("tensor", 2)], devices)
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    with pytest.raises(ValueError, match="at most one mesh axis may be -1"):
        make_mesh([("data", -1), ("fsdp", -1)], devices)
    with pytest.raises(ValueError, match=r"needs 6 devices, but 8 are available"):
        make_mesh([("data", 3), ("fsdp", 2)], devices)


def test_two_slices_span_the_data_axis_over_dcn():
    # Two slices of four devices each, listed interleaved to show the mesh groups them.
    devices = [FakeDevice(i, slice_index=i % 2, process_index=i % 2) for i in range(8)]
    mesh = make_mesh([("data", 1), ("fsdp", -1)], devices, dcn_axes=[("data", 2)])
    assert dict(mesh.shape) == {"data": 2, "fsdp": 4}
    ids = _ids(mesh)
    # Each row (one data index) is one whole slice: FSDP collectives stay on fast ICI links.
    assert [{i % 2 for i in row} for row in ids] == [{0}, {1}]
    assert sorted(ids.ravel()) == list(range(8))


def test_dcn_axes_must_be_mesh_axes_and_divide_devices():
    devices = [FakeDevice(i, i // 4, i // 4) for i in range(8)]
    with pytest.raises(ValueError, match=r"dcn axes \['replica'\] are not mesh axes"):
        make_mesh([("data", -1)], devices, dcn_axes=[("replica", 2)])
    with pytest.raises(ValueError, match="8 devices cannot form 3 equal slices"):
        make_mesh([("data", -1)], devices, dcn_axes=[("data", 3)])
