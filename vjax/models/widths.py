"""Per-layer widths of a pruned model (``model.widths``), looked up by a layer's module path.

A structurally pruned model keeps its architecture's fields (size, depth, stage widths) and adds
one mapping, ``model.widths``, from a layer's path in the parameter tree to its width:
``{"encoder/block01/attention": 2, "encoder/block01/mlp": 192, "layer2/block0/conv_1": 16}``.
The layers that can be narrowed (attention heads, MLP units, conv units and the middle width of
(2+1)D convs, recurrent units) read their width here, so a pruned model rebuilds from its config
alone and a layer may be narrower than its neighbours. ``vjax prune`` writes the mapping.

>>> heads = layer_width(self, self.num_heads)   # inside a compact __call__
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn

Widths = Mapping[str, int] | None


def _root(module: nn.Module) -> nn.Module:
    while isinstance(module.parent, nn.Module):
        module = module.parent
    return module


def layer_width(module: nn.Module, default: int, child: str = "") -> int:
    """The width ``model.widths`` gives the bound ``module`` (or its ``child``), else ``default``.

    The mapping is read from the outermost model, so no layer in between needs a field for it.
    """
    widths = getattr(_root(module), "widths", None)
    if not widths:
        return default
    path = "/".join((*module.path, child) if child else module.path)
    return int(dict(widths).get(path, default))


def check_widths(widths: Any, params: Mapping[str, Any]) -> None:
    """Raises a ValueError naming every ``model.widths`` key that is not a layer of ``params``
    (a typo would otherwise be silently ignored) or whose width is not a positive integer
    (0 is allowed for an attention or MLP sublayer: a pruned model may remove it whole)."""
    if not widths:
        return
    for path, width in dict(widths).items():
        node: Any = params
        for part in path.split("/"):
            node = node.get(part) if isinstance(node, Mapping) else None
        if node is None:
            raise ValueError(
                f"model.widths names {path!r}, which is not a layer of this model; keys are "
                f"module paths of the parameter tree, e.g. 'encoder/block00/mlp'"
            )
        # An attention or MLP sublayer (output bias beside its kernels) may be removed whole.
        least = 0 if "out_bias" in node or "fc2" in node else 1
        if not isinstance(width, int) or isinstance(width, bool) or width < least:
            kind = "a non-negative" if least == 0 else "a positive"
            raise ValueError(f"model.widths[{path!r}] must be {kind} integer, got {width!r}")
