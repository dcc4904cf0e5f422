"""Weights in from other codebases, each returning ``(config, variables)`` for a vjax model.

Every converter checks what it reads: a missing key, an unexpected key or a wrong shape is an
error naming the parameter and both shapes (:func:`vjax.convert.common.assign`). Converted
weights are written with :func:`save_converted` to a folder that :func:`vjax.load` opens and
that ``train.init_from`` can start a run from.

>>> from vjax.convert import save_converted
>>> config, variables = from_somewhere(...)   # e.g. vjax.convert.torchvision.from_torchvision
>>> save_converted("weights/r3d_18", config, variables)
>>> config, model, variables = vjax.load("weights/r3d_18")
"""

from __future__ import annotations

from vjax.convert.common import (
    ConversionError,
    assign,
    pretrained_config,
    save_converted,
)
from vjax.convert.hf import from_hf  # noqa: E402  (torch is only imported to read .bin files)
from vjax.convert.pytorchvideo import from_pytorchvideo  # noqa: E402
from vjax.convert.scenic import from_scenic  # noqa: E402
from vjax.convert.torchvision import from_torchvision, from_torchvision_resnet50  # noqa: E402
from vjax.convert.vit import from_vit_npz  # noqa: E402

__all__ = [
    "ConversionError",
    "assign",
    "from_hf",
    "from_pytorchvideo",
    "from_scenic",
    "from_torchvision",
    "from_torchvision_resnet50",
    "from_vit_npz",
    "pretrained_config",
    "save_converted",
]
