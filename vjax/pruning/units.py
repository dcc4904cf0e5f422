"""What structured pruning can remove from a model: its groups of units, found in the variables.

A :class:`UnitGroup` is one layer's removable units (the heads of one attention layer, the
hidden units of one MLP, the output channels of one conv unit, the middle channels of one (2+1)D
conv, the units of one recurrent layer) with every slice of every array that belongs to them:
the weights that compute a unit (``producer``), its BatchNorm scale (``scale``), the weights
that read it (``consumer``) and what is carried along (biases, BatchNorm statistics: ``other``).
Removing unit ``j`` takes index ``j`` out of every slice, which leaves a dense model whose layer
is narrower; ``key`` is the layer's path, the ``model.widths`` entry that rebuilds it.

Residual streams are never narrowed (every block of a stage would have to agree), so a conv
block loses channels inside it only: ``conv_1`` of a basic block, ``conv_a``/``conv_b`` of a
bottleneck, and the middle width of (2+1)D convs; grouped convs keep theirs.

>>> groups = unit_groups(variables, head_groups=1)
>>> [(g.key, g.kind, g.size) for g in groups][:2]
[('encoder/block00/attention', 'heads', 3), ('encoder/block00/mlp', 'mlp', 384)]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

Path = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Slice:
    """Axis ``axis`` of the array at ``path`` in variable collection ``collection``."""

    collection: str
    path: Path
    axis: int
    role: str


@dataclasses.dataclass(frozen=True)
class UnitGroup:
    """One layer's removable units. ``parts`` > 1 keeps the units in ``parts`` equal blocks
    (ViViT model 4's heads: half over time, half over space), pruned alike."""

    key: str
    kind: str
    size: int
    slices: tuple[Slice, ...]
    parts: int = 1


def get_path(tree: Mapping, path: Path) -> Any:
    """The node at ``path`` of a nested mapping, or None."""
    for part in path:
        if not isinstance(tree, Mapping) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _walk(tree: Mapping, path: Path = ()) -> Iterator[tuple[Path, Mapping]]:
    yield path, tree
    for name, child in tree.items():
        if isinstance(child, Mapping):
            yield from _walk(child, (*path, name))


def _norm(path: Path, params: Mapping, batch_stats: Mapping) -> list[Slice]:
    """A BatchNorm's channel slices: its scale, bias and running statistics."""
    found = [Slice("params", (*path, "scale"), 0, "scale")]
    if get_path(params, (*path, "bias")) is not None:
        found.append(Slice("params", (*path, "bias"), 0, "other"))
    for stat in ("mean", "var"):
        if get_path(batch_stats, (*path, stat)) is not None:
            found.append(Slice("batch_stats", (*path, stat), 0, "other"))
    return found


def _conv_unit_ends(params: Mapping, unit: Path) -> tuple[Path, Path] | None:
    """Paths of the first and the last conv kernel of a ConvUnit (one conv, or (2+1)D's two)."""
    conv = get_path(params, (*unit, "conv"))
    if not isinstance(conv, Mapping):
        return None
    if "kernel" in conv:
        return (*unit, "conv", "kernel"), (*unit, "conv", "kernel")
    if "conv_1" in conv and "conv_2" in conv:
        return (*unit, "conv", "conv_1", "kernel"), (*unit, "conv", "conv_2", "kernel")
    return None


def _ungrouped(params: Mapping, kernel: Path, in_channels: int) -> bool:
    return get_path(params, kernel).shape[-2] == in_channels


def _attention(path: Path, node: Mapping, parts: int) -> UnitGroup:
    slices = [Slice("params", (*path, "value_kernel"), 1, "producer")]
    slices += [Slice("params", (*path, f"{p}_kernel"), 1, "other") for p in ("query", "key")]
    slices += [
        Slice("params", (*path, f"{p}_bias"), 0, "other")
        for p in ("query", "key", "value")
        if f"{p}_bias" in node
    ]
    slices.append(Slice("params", (*path, "out_kernel"), 0, "consumer"))
    return UnitGroup("/".join(path), "heads", node["out_kernel"].shape[0], tuple(slices), parts)


def _mlp(path: Path, node: Mapping) -> UnitGroup:
    slices = (
        Slice("params", (*path, "fc1", "kernel"), 1, "producer"),
        Slice("params", (*path, "fc1", "bias"), 0, "other"),
        Slice("params", (*path, "fc2", "kernel"), 0, "consumer"),
    )
    return UnitGroup("/".join(path), "mlp", node["fc2"]["kernel"].shape[0], slices)


def _channels(params: Mapping, stats: Mapping, unit: Path, reader: Path) -> UnitGroup | None:
    """The output channels of ConvUnit ``unit`` (with its BatchNorm), read by ConvUnit
    ``reader``; None where either is grouped or not a plain conv unit."""
    ends, reader_ends = _conv_unit_ends(params, unit), _conv_unit_ends(params, reader)
    if ends is None or reader_ends is None or get_path(params, (*unit, "norm")) is None:
        return None
    width = get_path(params, ends[1]).shape[-1]
    if not _ungrouped(params, reader_ends[0], width):
        return None
    slices = [Slice("params", ends[1], -1, "producer")]
    slices += _norm((*unit, "norm"), params, stats)
    slices.append(Slice("params", reader_ends[0], -2, "consumer"))
    return UnitGroup("/".join(unit), "channels", width, tuple(slices))


def _mid_channels(params: Mapping, stats: Mapping, conv: Path) -> UnitGroup | None:
    """The middle channels of a (2+1)D conv (``conv_1`` -> ``norm_1`` -> ``conv_2``)."""
    first, second = (
        get_path(params, (*conv, "conv_1", "kernel")),
        get_path(params, (*conv, "conv_2", "kernel")),
    )
    if first is None or second is None or get_path(params, (*conv, "norm_1")) is None:
        return None
    width = first.shape[-1]
    if second.shape[-2] != width:  # a grouped second conv (X3D's stem)
        return None
    slices = [Slice("params", (*conv, "conv_1", "kernel"), -1, "producer")]
    slices += _norm((*conv, "norm_1"), params, stats)
    slices.append(Slice("params", (*conv, "conv_2", "kernel"), -2, "consumer"))
    return UnitGroup("/".join(conv), "channels", width, tuple(slices))


def _recurrent(params: Mapping, head: Path, layer: str, reader: list[Slice]) -> UnitGroup:
    cell = get_path(params, (*head, layer, "cell"))
    slices = []
    for gate, dense in sorted(cell.items()):
        base = (*head, layer, "cell", gate)
        slices.append(Slice("params", (*base, "kernel"), -1, "producer"))
        if "bias" in dense:
            slices.append(Slice("params", (*base, "bias"), 0, "other"))
        if gate.startswith("h"):  # the recurrent kernels also read the units
            slices.append(Slice("params", (*base, "kernel"), 0, "consumer"))
    width = next(iter(cell.values()))["kernel"].shape[-1]
    return UnitGroup("/".join((*head, layer)), "recurrent", width, tuple(slices + reader))


def _recurrent_groups(params: Mapping, classifier: Path = ("classifier",)) -> list[UnitGroup]:
    """Units of a unidirectional recurrent head ``head/layer0..`` read by the next layer's input
    kernels or, for the top layer, by every classifier head."""
    head = get_path(params, ("head",))
    if not isinstance(head, Mapping):
        return []
    if any(name.startswith(("forward", "backward")) for name in head):
        raise NotImplementedError("pruning a bidirectional recurrent head")
    layers = sorted(name for name in head if name.startswith("layer"))
    groups = []
    for i, layer in enumerate(layers):
        if i + 1 < len(layers):
            nxt = get_path(params, ("head", layers[i + 1], "cell"))
            reader = [
                Slice("params", ("head", layers[i + 1], "cell", gate, "kernel"), 0, "consumer")
                for gate in sorted(nxt)
                if gate.startswith("i")
            ]
        else:
            heads = get_path(params, classifier)
            reader = [
                Slice("params", (*classifier, task, "kernel"), 0, "consumer")
                for task in sorted(heads)
            ]
        groups.append(_recurrent(params, ("head",), layer, reader))
    return groups


def unit_groups(variables: Mapping, head_groups: int = 1) -> list[UnitGroup]:
    """Every removable group of units of a model's ``variables`` (``params`` and, for
    BatchNorm models, ``batch_stats``). ``head_groups``: how many equal groups the heads of
    each attention layer form (2 for ViViT's factorised dot-product attention)."""
    params, stats = variables["params"], variables.get("batch_stats", {})
    groups: list[UnitGroup] = []
    for path, node in _walk(params):
        if {"query_kernel", "value_kernel", "out_kernel"} <= set(node):
            groups.append(_attention(path, node, head_groups))
        elif "fc1" in node and "fc2" in node and "kernel" in node["fc1"]:
            groups.append(_mlp(path, node))
        elif (
            {"conv_1", "conv_2"} <= set(node)
            and "conv_a" not in node
            and "norm" in node.get("conv_1", {})
        ):
            found = _channels(params, stats, (*path, "conv_1"), (*path, "conv_2"))
            groups += [found] if found else []
        elif {"conv_a", "conv_b", "conv_c"} <= set(node) and "se" not in node:
            # conv_b's channels go only where conv_b is a full conv (not depthwise): then
            # conv_a's are prunable too, as conv_b reads all of them.
            found = _channels(params, stats, (*path, "conv_a"), (*path, "conv_b"))
            if found:
                groups.append(found)
                found = _channels(params, stats, (*path, "conv_b"), (*path, "conv_c"))
                groups += [found] if found else []
        elif {"conv_1", "norm_1", "conv_2"} <= set(node):
            found = _mid_channels(params, stats, path)
            groups += [found] if found else []
    return groups + _recurrent_groups(params)
