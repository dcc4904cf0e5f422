"""vjax models: pure Flax linen modules over ``(batch, time, height, width, channels)`` clips;
AST over log-mel spectrograms and MBT over both (:func:`model_modalities` says which)."""

# Importing a family registers its models by name (see vjax.models.registry).
from vjax.models import (  # noqa: F401
    ast,
    c3d,
    mbt,
    recurrent,
    resnet3d,
    slowfast,
    timesformer,
    videomae,
    videomae_pretraining,
    vivit,
    x3d,
)
from vjax.models.registry import available_models, build_model, model_modalities, register

__all__ = ["available_models", "build_model", "model_modalities", "register"]
