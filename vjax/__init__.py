"""vjax: video models in JAX/Flax, trained sharded from one CPU to a TPU pod.

>>> import vjax
>>> config, model, variables = vjax.load("runs/demo/vivit")
>>> logits = model.apply(variables, video, train=False)   # video: (B, T, H, W, 3) floats
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def load(path: str) -> tuple[Any, Any, dict]:
    """``(config, model, variables)`` from a workdir, its ``checkpoints`` folder or one step.

    The newest checkpoint that restores is used. ``variables`` holds host arrays and is ready
    for ``model.apply(variables, video, train=False)``; the video is normalised as in training
    (``vjax.step.normalize_video`` with ``config.input.mean``/``std``).
    """
    from vjax.predict import load_model

    config, model, variables, _ = load_model(path)
    return config, model, variables
