"""TimeSformer and VideoMAE sizes next to their papers (single-view GFLOPs, 400 classes).

TimeSformer (Bertasius et al., ICML 2021, Table 5): 121.4M parameters and 0.59 TFLOPs for
its 3 test views of 8x224x224, i.e. 196.7 GFLOPs per view. VideoMAE (Tong et al., NeurIPS
2022, Kinetics-400 table): ViT-S/B/L/H on 16x224x224 with 2x16x16 tubelets, GFLOPs per view
(the paper writes them as "GFLOPs x 5 clips x 3 crops").
"""

from vjax.parity import PublishedSize

SOURCE = (
    "Bertasius et al., Is Space-Time Attention All You Need for Video Understanding? "
    "(ICML 2021), Table 5; Tong et al., VideoMAE (NeurIPS 2022), Kinetics-400 results"
)
NOTE = (
    "GFLOPs are multiply-accumulates per view, from the jaxpr of one forward pass "
    "(vjax.flops); the papers publish parameters to 3 significant figures."
)
PARAMS_TOLERANCE = 0.01
GMACS_TOLERANCE = 0.05


def _row(name: str, model: dict, frames: int, params: float, gmacs: float) -> PublishedSize:
    return PublishedSize(name, model, (frames, 224, 224, 3), params, gmacs)


ROWS = [
    _row("TimeSformer-B/16 divided", {"name": "timesformer", "size": "B/16"}, 8, 121.4e6, 590 / 3),
    _row("VideoMAE ViT-S/16x2", {"name": "videomae", "size": "S/16x2"}, 16, 22e6, 57.0),
    _row("VideoMAE ViT-B/16x2", {"name": "videomae", "size": "B/16x2"}, 16, 87e6, 180.0),
    _row("VideoMAE ViT-L/16x2", {"name": "videomae", "size": "L/16x2"}, 16, 305e6, 597.0),
]
