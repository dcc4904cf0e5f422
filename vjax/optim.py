"""Optax optimiser from the config: AdamW or SGD+momentum, warmup + cosine, clipping, decay mask."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import optax

# A warmup as long as the run or longer (a short first run of a long recipe) is clipped to
# this fraction of the run.
CLIPPED_WARMUP_FRACTION = 0.1


def warmup_steps(opt: Mapping[str, Any], num_steps: int) -> int:
    """``optimizer.warmup_steps``, or :data:`CLIPPED_WARMUP_FRACTION` of the run when it is
    not shorter than the run (``train.num_steps``); the trainer prints a note when clipped."""
    warmup = int(opt["warmup_steps"])
    return warmup if warmup < num_steps else int(num_steps * CLIPPED_WARMUP_FRACTION)


def learning_rate_schedule(opt: Mapping[str, Any], num_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to ``lr`` over :func:`warmup_steps`, then cosine decay to
    ``end_lr``."""
    warmup = warmup_steps(opt, num_steps)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=float(opt["lr"]),
        warmup_steps=warmup,
        decay_steps=num_steps,
        end_value=float(opt["end_lr"]),
    )


def decay_mask(params: Any) -> Any:
    """True where weight decay applies: weight matrices (``kernel``) only.

    Norm scales, biases, position embeddings and class tokens are left undecayed.
    """

    def applies(path, _) -> bool:
        return any(getattr(p, "key", None) == "kernel" for p in path)

    return jax.tree_util.tree_map_with_path(applies, params)


def make_optimizer(opt: Mapping[str, Any], num_steps: int) -> optax.GradientTransformation:
    """The optimiser the config names; gradient clipping by global norm comes first.

    >>> tx = make_optimizer(config.optimizer, config.train.num_steps)
    """
    schedule = learning_rate_schedule(opt, num_steps)
    name = opt["name"]
    if name == "adamw":
        core = optax.adamw(
            schedule, b1=opt["b1"], b2=opt["b2"], weight_decay=opt["weight_decay"], mask=decay_mask
        )
    elif name == "sgd":
        core = optax.chain(
            optax.add_decayed_weights(opt["weight_decay"], mask=decay_mask),
            optax.sgd(schedule, momentum=opt["momentum"], nesterov=opt["nesterov"]),
        )
    else:
        raise ValueError(f"unknown optimizer.name {name!r}; valid: adamw, sgd")
    clip = opt["grad_clip_norm"]
    return optax.chain(optax.clip_by_global_norm(clip), core) if clip else core
