"""ViViT paper, Table 2: ViViT-B/16x2 variants on 32x224x224 clips (Arnab et al., ICCV 2021).

Model 2 has 4 temporal layers, as in the table. Models 3 and 4 pool by global average (they
have no class token, as in scenic); the others use a class token.
"""

from vjax.parity import PublishedSize

SOURCE = "Arnab et al., ViViT: A Video Vision Transformer (ICCV 2021), Table 2"
NOTE = (
    "GFLOPs are multiply-accumulates of matmuls and convolutions per view (as the paper "
    "counts), from the jaxpr of one forward pass (vjax.flops)."
)
PARAMS_TOLERANCE = 0.01
GMACS_TOLERANCE = 0.05
_CLIP = (32, 224, 224, 3)


def _row(name: str, variant: str, params: float, gmacs: float) -> PublishedSize:
    return PublishedSize(
        f"ViViT-B/16x2 {name}",
        {"name": "vivit", "size": "B/16x2", "variant": variant},
        _CLIP,
        params,
        gmacs,
    )


ROWS = [
    _row("model 1", "spacetime", 88.9e6, 455.2),
    _row("model 2", "factorised_encoder", 115.1e6, 284.4),
    _row("model 3", "factorised_self_attention", 117.3e6, 372.3),
    _row("model 4", "factorised_dot_product", 88.9e6, 277.1),
    _row("avg-pool", "average_pool", 86.7e6, 283.9),
]
