"""torchvision in a process that has loaded TensorFlow (TFDS loads it) without crashing.

``import torchvision`` imports ``torch._dynamo``, which imports Triton when it is installed
(CUDA builds of torch ship it). Loading Triton's library after TensorFlow's kills the process
with a segmentation fault (seen with torch 2.14.1 + triton and tensorflow 2.x; the other order
works). vjax uses torchvision only for CPU tensor ops (RandAugment) and metadata, which never
need Triton, so once TensorFlow is loaded, ``import triton`` is made to fail and torch carries
on without it.

>>> functional = import_torchvision().transforms.v2.functional
"""

from __future__ import annotations

import sys
from types import ModuleType


def disable_triton() -> None:
    """Makes ``import triton`` raise ImportError in this process (torch then runs without it);
    a no-op when Triton is already imported."""
    sys.modules.setdefault("triton", None)  # a None entry is how Python spells "not importable"


def import_torchvision() -> ModuleType:
    """``torchvision``, imported so that it cannot crash a process that has TensorFlow loaded."""
    if "tensorflow" in sys.modules:
        disable_triton()
    import torchvision
    import torchvision.transforms.v2.functional  # noqa: F401  (what callers use)

    return torchvision
