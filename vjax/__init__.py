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
    from vjax.checkpoint import read_checkpoint
    from vjax.config_utils import config_from_json
    from vjax.models import build_model
    from vjax.tasks import head_sizes

    metadata, variables, _ = read_checkpoint(path)
    config = config_from_json(metadata["config"])
    model = build_model(config.model, head_sizes(metadata["class_names"]), config.train.dtype)
    return config, model, variables
