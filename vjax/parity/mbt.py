"""MBT sizes (Nagrani et al., NeurIPS 2021): MBT-B/16x2 on 32x224x224 clips and 8 s of
audio (800 x 128 log-mel frames, 16x16 patches), fusion layer 8, 4 bottlenecks.

MBT keeps separate ViT-B weights for each modality, so the audio-visual model is two ViT-B
encoders (86M each, ViT paper Table 1) plus the bottleneck tokens and one classifier; we
quote no parameter count from the MBT paper (none was at hand), so that row checks the design
against 2 x 86M. Its
video-only baseline is ViViT-B/16x2 model 1 on the same clip, whose size ViViT's Table 2
publishes (88.9M, 455.2 GFLOPs at 400 classes).
"""

from vjax.parity import PublishedSize

SOURCE = (
    "Nagrani et al., Attention Bottlenecks for Multimodal Fusion (NeurIPS 2021): ViT-B per "
    "modality; Dosovitskiy et al., ViT (ICLR 2021), Table 1; Arnab et al., ViViT (ICCV 2021), "
    "Table 2"
)
NOTE = (
    "The audio-visual row's 'published' is 2 x ViT-B's 86M (the paper's design, not a number "
    "it prints); ours also holds the tubelet and spectrogram embeddings and position tables "
    "of 1,568 video and 400 audio tokens. GFLOPs: multiply-accumulates per view (vjax.flops)."
)
PARAMS_TOLERANCE = 0.03
GMACS_TOLERANCE = 0.05
_CLIP = (32, 224, 224, 3)
_AUDIO = (800, 128)
_MBT = {"name": "mbt", "size": "B/16x2", "fusion_layer": 8, "num_bottlenecks": 4}

ROWS = [
    PublishedSize("MBT-B/16x2 audio-visual", _MBT, _CLIP, 2 * 86e6, None, 527, _AUDIO),
    PublishedSize(
        "MBT-B/16x2 video only", {**_MBT, "modalities": ("video",)}, _CLIP, 88.9e6, 455.2
    ),
]
