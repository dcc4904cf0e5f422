"""vjax models: pure Flax linen modules over ``(batch, time, height, width, channels)`` clips."""

from vjax.models import vivit  # noqa: F401  (registers vivit, single_frame)
from vjax.models.registry import available_models, build_model, register

__all__ = ["available_models", "build_model", "register"]
