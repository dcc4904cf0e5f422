"""ViViT paper, Table 2: ViViT-B/16x2 variants on 32x224x224 clips (Arnab et al., ICCV 2021)."""

from vjax.parity import PublishedSize

SOURCE = "Arnab et al., ViViT: A Video Vision Transformer (ICCV 2021), Table 2"
NOTE = (
    "GFLOPs are multiply-accumulates of matmuls and convolutions per view (as the paper "
    "counts), from the jaxpr of one forward pass (vjax.flops)."
)
PARAMS_TOLERANCE = 0.01
GMACS_TOLERANCE = 0.05
_CLIP = (32, 224, 224, 3)

ROWS = [
    PublishedSize(
        "ViViT-B/16x2 model 1", {"name": "vivit", "size": "B/16x2"}, _CLIP, 88.9e6, 455.2
    ),
]
