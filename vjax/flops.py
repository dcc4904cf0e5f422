"""Parameter and multiply-accumulate (MAC) counts of a model, for comparing with papers.

MACs are counted analytically from the jaxpr of one forward pass: every ``dot_general``
(dense layers, einsums, attention's ``QK^T`` and ``AV``) and every ``conv_general_dilated``
contributes ``output elements x reduction size``; element-wise ops, norms and softmax count
zero. This is the convention of fvcore and of the papers' tables ("FLOPs" that are really
multiply-accumulates), so ``gmacs`` compares directly with ViViT's, torchvision's and
pytorchvideo's GFLOPs columns.

>>> model = ViViT(num_classes=400, size="B/16x2")
>>> params, macs = params_and_macs(model, (1, 32, 224, 224, 3))  # 88.9e6, ~451.5e9
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.extend import core as jex_core

log = logging.getLogger(__name__)


def _dot_general_macs(eqn) -> int:
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    lhs_shape = eqn.invars[0].aval.shape
    out_elements = math.prod(eqn.outvars[0].aval.shape)
    return out_elements * math.prod(lhs_shape[d] for d in lhs_contract)


def _conv_macs(eqn) -> int:
    rhs_shape = eqn.invars[1].aval.shape
    out_features = rhs_shape[eqn.params["dimension_numbers"].rhs_spec[0]]
    out_elements = math.prod(eqn.outvars[0].aval.shape)
    # The kernel's in-feature dim already holds channels / feature_group_count.
    return out_elements * math.prod(rhs_shape) // out_features


def _sub_jaxprs(value: Any):
    if isinstance(value, jex_core.ClosedJaxpr):
        yield value.jaxpr
    elif isinstance(value, jex_core.Jaxpr):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _sub_jaxprs(item)


def jaxpr_macs(jaxpr: Any) -> int:
    """MACs of the matmuls and convolutions in a jaxpr, recursing into nested calls.

    ``scan`` bodies count ``length`` times; of ``cond`` branches the largest counts; a
    ``while`` body counts once (its trip count is unknown), with a warning.
    """
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            total += _dot_general_macs(eqn)
        elif name == "conv_general_dilated":
            total += _conv_macs(eqn)
        elif name == "cond":
            total += max(jaxpr_macs(b.jaxpr) for b in eqn.params["branches"])
        else:
            inner = sum(jaxpr_macs(j) for v in eqn.params.values() for j in _sub_jaxprs(v))
            if name == "scan":
                inner *= eqn.params["length"]
            elif name == "while" and inner:
                log.warning("counting a while-loop body once; its trip count is unknown")
            total += inner
    return total


def abstract_input(input_shape: Any) -> Any:
    """float32 abstract values of an input shape: one array's, or ``{modality: shape}``."""
    if isinstance(input_shape, Mapping):
        return {name: abstract_input(shape) for name, shape in input_shape.items()}
    return jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)


def abstract_variables(model: nn.Module, input_shape: Any) -> Any:
    """``model.init``'s variables as shapes only (nothing allocated); ``input_shape`` with
    the batch axis, a dict of them for a model of several modalities."""
    inputs = abstract_input(input_shape)
    return jax.eval_shape(lambda v: model.init(jax.random.key(0), v, train=False), inputs)


def count_macs(model: nn.Module, input_shape: Any, variables: Any = None) -> int:
    """MACs of one inference forward pass of ``model`` on a float32 input of ``input_shape``.

    Nothing is run or allocated: the forward pass is traced on abstract values only, with
    XLA's attention (:func:`~vjax.models.attention.force_implementation`), so attention counts
    the same whichever kernel the model runs on (cuDNN's or Pallas's is one opaque call).
    Counted on ``variables`` where given (a loaded model's), else on ``init``'s trace
    (:func:`params_and_macs`).
    """
    from vjax.models.attention import force_implementation

    if variables is None:
        return params_and_macs(model, input_shape)[1]
    video = abstract_input(input_shape)
    with force_implementation("xla"):
        jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, video)
    return jaxpr_macs(jaxpr.jaxpr)


def params_and_macs(model: nn.Module, input_shape: Any) -> tuple[int, int]:
    """``(trainable parameters, MACs of one inference forward pass)`` from a single trace of
    ``model.init``, which runs the forward pass (its initialisers add no matmul or
    convolution): half the tracing of :func:`count_params` then :func:`count_macs`."""
    from vjax.models.attention import force_implementation

    def init(inputs):
        return model.init(jax.random.key(0), inputs, train=False)

    with force_implementation("xla"):
        jaxpr, shapes = jax.make_jaxpr(init, return_shape=True)(abstract_input(input_shape))
    return _count_params(shapes), jaxpr_macs(jaxpr.jaxpr)


def count_params(model: nn.Module, input_shape: Any, variables: Any = None) -> int:
    """Number of trainable parameters (the ``params`` collection) of ``variables`` where
    given, else of ``init``'s trace (:func:`params_and_macs`); from shapes only."""
    if variables is None:
        return params_and_macs(model, input_shape)[0]
    return _count_params(variables)


def _count_params(variables: Any) -> int:
    """Elements of the ``params`` collection of ``variables`` (arrays or shapes)."""
    return sum(math.prod(x.shape) for x in jax.tree.leaves(variables["params"]))
