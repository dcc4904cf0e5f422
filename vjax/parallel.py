"""Meshes and shardings: logical axis names (from the models) -> mesh axes (from the config).

The same train step runs on one CPU and on many devices; only the mesh and the rules change.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

LogicalRules = Sequence[tuple[str, str | Sequence[str] | None]]


def _fill(names: Sequence[str], sizes: list[int], num_devices: int, what: str) -> list[int]:
    """Replaces the one -1 in ``sizes`` so that they multiply to ``num_devices``."""
    asked = dict(zip(names, sizes, strict=True))
    if any(s < 1 and s != -1 for s in sizes):
        raise ValueError(f"{what} axis sizes must be >= 1 (or one of them -1), got {asked}")
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one {what} axis may be -1, got {asked}")
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(f"{num_devices} devices cannot be split into {what} {asked}")
        sizes[sizes.index(-1)] = num_devices // known
    if int(np.prod(sizes)) != num_devices:
        raise ValueError(
            f"{what} {dict(zip(names, sizes, strict=True))} needs {int(np.prod(sizes))} devices, "
            f"but {num_devices} are available"
        )
    return sizes


def _axis_pairs(axes: Any, what: str) -> list[tuple[str, int]]:
    """``axes`` as ``(name, size)`` pairs; a ValueError that shows the form otherwise, e.g. for
    ``(("data", -1))``, which Python reads as the pair itself (a one-pair tuple needs a
    comma)."""
    pairs = list(axes)
    if len(pairs) == 2 and isinstance(pairs[0], str):
        raise ValueError(
            f"{what} is a tuple of (name, size) pairs; got the pair {tuple(pairs)!r} alone: "
            f"write ({tuple(pairs)!r},) (a tuple of one pair needs its comma)"
        )
    for pair in pairs:
        if not (
            isinstance(pair, Sequence)
            and len(pair) == 2
            and isinstance(pair[0], str)
            and isinstance(pair[1], numbers.Integral)
            and not isinstance(pair[1], bool)
        ):
            raise ValueError(f"{what} is a tuple of (name, size) pairs, e.g. (('data', -1),); "
                             f"got {tuple(pairs)!r}")  # fmt: skip
    return [(pair[0], int(pair[1])) for pair in pairs]


def make_mesh(
    axes: Sequence[tuple[str, int]],
    devices: Sequence[jax.Device] | None = None,
    dcn_axes: Sequence[tuple[str, int]] = (),
) -> Mesh:
    """A mesh with named axes; one size may be -1 and is filled with the remaining devices.

    ``dcn_axes`` makes a multi-slice mesh (fast ICI links inside a slice, slower DCN between
    slices, built by ``mesh_utils.create_hybrid_device_mesh``): ``axes`` then give the sizes
    within one slice and ``dcn_axes`` how many slices each axis spans; each axis of the result
    has size ici x dcn. Slices are the devices' ``slice_index`` where they have several (TPU
    multi-slice), else groups of consecutive processes (a GPU node's one process, or its 8
    processes of one GPU each: SLURM numbers a node's tasks consecutively).

    >>> mesh = make_mesh([("data", -1)])   # all devices on the data axis
    >>> pod = make_mesh([("data", 1), ("fsdp", -1)], dcn_axes=[("data", 2)])  # 2 slices
    """
    devices = list(devices if devices is not None else jax.devices())
    axes, dcn_axes = _axis_pairs(axes, "mesh"), _axis_pairs(dcn_axes, "dcn_mesh")
    names = [name for name, _ in axes]
    sizes = [int(size) for _, size in axes]
    dcn = {name: int(size) for name, size in dcn_axes}
    if not dcn:
        sizes = _fill(names, sizes, len(devices), "mesh")
        return Mesh(np.asarray(devices).reshape(sizes), tuple(names))
    unknown = set(dcn) - set(names)
    if unknown:
        raise ValueError(f"dcn axes {sorted(unknown)} are not mesh axes {names}")
    dcn_sizes = [dcn.get(name, 1) for name in names]
    num_slices = int(np.prod(dcn_sizes))
    if len(devices) % num_slices:
        raise ValueError(f"{len(devices)} devices cannot form {num_slices} equal slices")
    sizes = _fill(names, sizes, len(devices) // num_slices, "per-slice mesh")
    by_slice = len({getattr(d, "slice_index", None) for d in devices}) > 1
    processes = len({d.process_index for d in devices})
    if by_slice or processes == num_slices:
        grid = mesh_utils.create_hybrid_device_mesh(
            sizes, dcn_sizes, devices, process_is_granule=not by_slice
        )
    else:  # e.g. one process per GPU, 8 to a node: consecutive processes make a slice
        grid = hybrid_by_process_groups(sizes, dcn_sizes, devices)
    return Mesh(grid, tuple(names))


def hybrid_by_process_groups(
    sizes: Sequence[int], dcn_sizes: Sequence[int], devices: Sequence[Any]
) -> np.ndarray:
    """The device grid of a multi-slice mesh whose slices are groups of consecutive processes
    (SLURM numbers a node's tasks consecutively): slice ``s`` holds processes ``s * n ..
    (s + 1) * n - 1``, laid out on each axis as ``mesh_utils.create_hybrid_device_mesh``
    lays out its granules (each slice's devices reshaped to ``sizes``, slices tiled by
    ``dcn_sizes``)."""
    num_slices = int(np.prod(dcn_sizes))
    processes = sorted({d.process_index for d in devices})
    if len(processes) % num_slices:
        raise ValueError(
            f"{len(processes)} processes cannot form {num_slices} slices of as many processes "
            f"each (sharding.dcn_mesh)"
        )
    per_slice = len(processes) // num_slices
    slice_of = {p: i // per_slice for i, p in enumerate(processes)}
    ordered = sorted(devices, key=lambda d: (d.process_index, d.id))
    grids = [
        np.asarray([d for d in ordered if slice_of[d.process_index] == s], object).reshape(sizes)
        for s in range(num_slices)
    ]
    tiles = np.empty(num_slices, object)
    tiles[:] = grids
    return np.block(tiles.reshape(tuple(dcn_sizes)).tolist())


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


@functools.cache
def data_shard(sharding: NamedSharding) -> tuple[int, int]:
    """``(index, count)``: which of the batch's ``count`` distinct row blocks this process's
    devices hold, the share of the data it loads. Processes whose devices hold the same rows
    (a mesh axis outside the batch's, e.g. ``tensor``, spanning processes) load the same
    examples; by process index they loaded different ones into rows meant to be replicas (a
    tensor-parallel layer then summed parts of two examples)."""
    spec = sharding.spec[0] if len(sharding.spec) else None
    axes = () if spec is None else (spec if isinstance(spec, tuple) else (spec,))
    shards = math.prod(sharding.mesh.shape[axis] for axis in axes)
    rows: dict[int, set[int]] = {}
    for device, index in sharding.devices_indices_map((shards,)).items():
        rows.setdefault(device.process_index, set()).update(range(*index[0].indices(shards)))
    blocks = sorted({tuple(sorted(held)) for held in rows.values()})
    return blocks.index(tuple(sorted(rows[jax.process_index()]))), len(blocks)


def global_batch(local: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Assembles each process's local rows (its :func:`data_shard` of the batch) into global
    arrays sharded along the batch axis."""
    _, count = data_shard(sharding)
    return {
        key: jax.make_array_from_process_local_data(
            sharding, value, (len(value) * count, *np.shape(value)[1:])
        )
        for key, value in local.items()
    }


def process_rows(array: jax.Array) -> np.ndarray:
    """This process's rows of a batch-sharded global array, in the order of the local rows
    :func:`global_batch` took them from (``make_array_from_process_local_data`` places them
    on the process's global rows in increasing order). A process's rows need not be one block
    of the global batch (e.g. ``fsdp`` spanning processes, or ``fsdp`` listed before ``data``),
    so outputs are paired with local labels this way, never by slicing a gathered array.
    """
    pieces: dict[int, jax.Array] = {}
    for shard in array.addressable_shards:
        pieces.setdefault(shard.index[0].start or 0, shard.data)  # replicas hold equal rows
    return np.concatenate([np.asarray(pieces[start]) for start in sorted(pieces)])


class ReplicationError(ValueError):
    """A large parameter or optimiser tensor is whole on every device of a model-parallel mesh."""


def check_rule_axes(rules: LogicalRules, mesh: Mesh) -> None:
    """Raises a ValueError naming the mesh axes the rules map to that the mesh lacks (a mesh
    written with only the axes it uses, ``(('data', -1),)``, or a misspelt axis name)."""
    named = set(mesh.axis_names)
    missing = sorted(
        {
            axis
            for _, axes in normalize_rules(rules)
            for axis in (axes if isinstance(axes, tuple) else (axes,))
            if axis is not None and axis not in named
        }
    )
    if missing:
        sizes = ", ".join(f"('{axis}', 1)" for axis in missing)
        raise ValueError(
            f"rules map to mesh axes {missing} that the mesh "
            f"{tuple(mesh.axis_names)} lacks; give each a size in sharding.mesh ({sizes}: "
            f"unused) or map the rules to the mesh's axes"
        )


def check_rules_cover(abstract_tree: Any, rules: LogicalRules, where: str = "parameters") -> None:
    """Raises a ValueError naming every logical axis name in ``abstract_tree`` without a rule.

    An unnamed axis would silently be replicated; every name a model uses must be decided.
    """
    known = {name for name, _ in normalize_rules(rules)}
    missing: dict[str, str] = {}
    specs = nn.get_partition_spec(abstract_tree)
    for path, spec in jax.tree_util.tree_flatten_with_path(
        specs, is_leaf=lambda x: isinstance(x, PartitionSpec)
    )[0]:
        for name in spec if isinstance(spec, PartitionSpec) else ():
            names = name if isinstance(name, tuple) else (name,)
            for n in names:
                if n is not None and n not in known:
                    missing.setdefault(n, _path(path))
    if missing:
        listed = ", ".join(f"{n!r} (e.g. {p})" for n, p in sorted(missing.items()))
        raise ValueError(
            f"logical axis names used by the {where} have no rule in config.sharding.rules: "
            f"{listed}. Add e.g. ('{sorted(missing)[0]}', None) to replicate it, or map it to "
            f"a mesh axis."
        )


def check_divisible(abstract_tree: Any, mesh: Mesh, rules: LogicalRules) -> None:
    """Raises a ValueError naming the tensors of ``abstract_tree`` with a dimension that the
    mesh axes its logical name maps to do not divide (X3D's 54 channels on ``fsdp=4``, 12
    heads on ``tensor=8``): jax would fail later, naming neither the tensor nor the rule."""
    rules = normalize_rules(rules)
    leaves = jax.tree_util.tree_flatten_with_path(nn.unbox(abstract_tree))[0]
    specs = jax.tree_util.tree_leaves(
        nn.get_partition_spec(abstract_tree), is_leaf=lambda x: isinstance(x, PartitionSpec)
    )
    bad = []
    for (path, leaf), spec in zip(leaves, specs, strict=True):
        mesh_axes = nn.logical_to_mesh_axes(tuple(spec), rules) if spec else ()
        for size, name, axes in zip(leaf.shape, spec or (), mesh_axes, strict=False):
            axes = (axes,) if isinstance(axes, str) else axes or ()
            parts = int(np.prod([mesh.shape.get(a, 1) for a in axes]))
            if size % parts:
                where = f"{_path(path)} {tuple(leaf.shape)}"
                bad.append(f"{where}: {size} ({name!r}) over {'x'.join(axes)}={parts}")
    if bad:
        shown = "; ".join(bad[:4]) + (f"; and {len(bad) - 4} more" if len(bad) > 4 else "")
        raise ValueError(
            f"{len(bad)} tensor dimension(s) cannot be split evenly on the mesh "
            f"{dict(mesh.shape)}: {shown}. Choose mesh sizes that divide them, or map their "
            f"logical axis to None in config.sharding.rules (it is then replicated)."
        )


def _path(path: tuple) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _size(num_bytes: float) -> str:
    return f"{num_bytes / 2**20:.1f} MiB" if num_bytes >= 2**20 else f"{num_bytes / 2**10:.1f} KiB"


def _shard_bytes(x: jax.Array) -> int:
    shape = x.sharding.shard_shape(x.shape)
    return int(np.prod(shape, dtype=np.int64)) * x.dtype.itemsize


def bytes_per_device(tree: Any) -> dict[jax.Device, int]:
    """Bytes of ``tree``'s arrays held by each addressable device, from the actual shards."""
    held: dict[jax.Device, int] = {}
    for x in jax.tree.leaves(tree):
        for shard in x.addressable_shards:
            held[shard.device] = held.get(shard.device, 0) + shard.data.nbytes
    return held


def memory_report(tree: Any, mesh: Mesh, max_replicated_bytes: int) -> str:
    """One line on how ``tree`` (parameters + optimiser state) is spread over devices.

    The ``data`` mesh axis replicates parameters by design; every other mesh axis (fsdp,
    tensor, ...) exists to split them. So on a mesh where those axes hold more than one device,
    a tensor of at least ``max_replicated_bytes`` that every device holds whole is an
    accident (usually a logical name mapped to ``None``): ReplicationError lists them all.
    """
    model_parallel = int(np.prod([size for name, size in mesh.shape.items() if name != "data"]))
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    total = sum(x.nbytes for _, x in flat)
    whole = [(_path(p), x.nbytes) for p, x in flat if _shard_bytes(x) == x.nbytes]
    if model_parallel > 1:
        large = [(p, b) for p, b in whole if b >= max_replicated_bytes]
        if large:
            listed = "; ".join(f"{p} ({_size(b)})" for p, b in large[:8])
            raise ReplicationError(
                f"{len(large)} tensor(s) of >= {_size(max_replicated_bytes)} are "
                f"replicated on every device, although the mesh {dict(mesh.shape)} has "
                f"{model_parallel} devices outside 'data' to split them: {listed}. Map one of "
                f"their logical axes to a mesh axis "
                f"in config.sharding.rules (or raise sharding.max_replicated_mib)."
            )
    held = bytes_per_device(tree)
    return (
        f"parameters + optimiser state: {total / 2**20:.1f} MiB in all, "
        f"{max(held.values()) / 2**20:.1f} MiB max per device over {len(held)} local devices "
        f"({sum(b for _, b in whole) / 2**20:.1f} MiB replicated)"
    )
