"""Transformer sizes from config strings such as ``"B/16x2"`` (size / patch x tubelet-time)."""

from __future__ import annotations

import dataclasses
import re

# (hidden_size, num_layers, num_heads, mlp_dim), as in the ViT and ViViT papers.
_SIZES = {
    "Ti": (192, 12, 3, 768),
    "S": (384, 12, 6, 1536),
    "B": (768, 12, 12, 3072),
    "L": (1024, 24, 16, 4096),
    "H": (1280, 32, 16, 5120),
}
_PATTERN = re.compile(r"^(?P<size>[A-Za-z]+)/(?P<patch>\d+)(?:x(?P<time>\d+))?$")


@dataclasses.dataclass(frozen=True)
class TransformerSize:
    """Width, depth and patching of a ViT-style encoder."""

    hidden_size: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    patch: int
    tubelet_time: int


def parse_size(spec: str) -> TransformerSize:
    """Parses ``"Ti/16x2"`` into a :class:`TransformerSize` (``"B/16"`` means tubelet time 1).

    >>> parse_size("B/16x2").hidden_size
    768
    """
    match = _PATTERN.match(spec)
    if not match or match["size"] not in _SIZES:
        raise ValueError(
            f"model size {spec!r} is not of the form SIZE/PATCH[xTIME] with SIZE in "
            f"{sorted(_SIZES)}, e.g. 'B/16x2'"
        )
    hidden, layers, heads, mlp = _SIZES[match["size"]]
    return TransformerSize(hidden, layers, heads, mlp, int(match["patch"]), int(match["time"] or 1))
