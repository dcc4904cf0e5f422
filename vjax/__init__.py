"""vjax: video models in JAX/Flax, trained sharded from one CPU to a TPU pod.

>>> import vjax
>>> model = vjax.load("runs/demo/vivit")   # a workdir, one checkpoint step, a convert folder
>>> logits = model(video)                  # uint8 (B, T, H, W, 3), normalised as in training
>>> config, module, variables = model      # the config, the Flax module and its variables
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vjax.loaded import LoadedModel

__version__ = "0.1.0"


def load(path: str) -> LoadedModel:
    """The newest checkpoint that restores from a workdir, its ``checkpoints`` folder, one
    step, or a ``vjax convert`` folder, as a :class:`vjax.loaded.LoadedModel`: call it on uint8
    clips ``(B, T, H, W, 3)`` for logits (normalised as in training), read ``class_names`` and
    ``clip_shape``, or unpack it as ``config, module, variables`` (host arrays) for
    ``module.apply(variables, model.normalize(video), train=False)``.
    """
    from vjax.loaded import load as load_checkpoint

    return load_checkpoint(path)
