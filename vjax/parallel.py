"""Meshes and shardings: logical axis names (from the models) -> mesh axes (from the config).

The same train step runs on one CPU and on many devices; only the mesh and the rules change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

LogicalRules = Sequence[tuple[str, str | Sequence[str] | None]]


def make_mesh(axes: Sequence[tuple[str, int]], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh with named axes; one size may be -1 and is filled with the remaining devices.

    >>> mesh = make_mesh([("data", -1)])   # all devices on the data axis
    """
    devices = list(devices if devices is not None else jax.devices())
    names = [name for name, _ in axes]
    sizes = [int(size) for _, size in axes]
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {dict(axes)}")
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices cannot be split into mesh {dict(axes)}")
        sizes[sizes.index(-1)] = len(devices) // known
    if int(np.prod(sizes)) != len(devices):
        raise ValueError(
            f"mesh {dict(zip(names, sizes, strict=True))} needs {int(np.prod(sizes))} devices, "
            f"but {len(devices)} are available"
        )
    return Mesh(np.asarray(devices).reshape(sizes), tuple(names))


def normalize_rules(rules: Any) -> tuple[tuple[str, Any], ...]:
    """Rules as tuples (configs round-tripped through JSON hold lists)."""
    out = []
    for logical, mesh_axes in rules:
        if isinstance(mesh_axes, list):
            mesh_axes = tuple(mesh_axes)
        out.append((logical, mesh_axes))
    return tuple(out)


def logical_shardings(abstract_tree: Any, mesh: Mesh, rules: LogicalRules) -> Any:
    """NamedShardings for a tree whose leaves carry flax logical partitioning metadata."""
    specs = nn.get_partition_spec(abstract_tree)
    return nn.logical_to_mesh_sharding(specs, mesh, normalize_rules(rules))


def batch_sharding(mesh: Mesh, rules: LogicalRules) -> NamedSharding:
    """Sharding of the leading (batch) axis of input arrays, by the rule for ``batch``."""
    spec = nn.logical_to_mesh_axes(("batch",), normalize_rules(rules))
    return NamedSharding(mesh, PartitionSpec(*spec))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def global_batch(local: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Assembles each process's local rows into global arrays sharded along the batch axis."""
    return {
        key: jax.make_array_from_process_local_data(sharding, value) for key, value in local.items()
    }
