"""Weight decay reaches every weight of every model family, and nothing else.

The reference is independent of parameter names: a parameter is a weight when the traced
forward pass feeds it (through casts and reshapes only) into a matrix product or a convolution.
Biases and position tables are added, norm scales multiplied element-wise, class tokens
concatenated, so none of them qualifies. Models are traced abstractly (``jax.eval_shape`` /
``jax.make_jaxpr``): nothing is computed or compiled.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import MODEL_FAMILIES as FAMILIES

from vjax.models import build_model
from vjax.optim import decay_mask, make_optimizer

# Primitives that only move, cast or reshape a value: a weight stays a weight through them.
_MOVES = {
    "convert_element_type", "reshape", "transpose", "broadcast_in_dim", "squeeze",
    "expand_dims", "copy", "copy_p", "slice", "dynamic_slice", "rev", "reduce_precision",
}  # fmt: skip
_PRODUCTS = {"dot_general", "conv_general_dilated"}


def _sub_jaxprs(eqn) -> list[tuple[jax.extend.core.Jaxpr, list]]:
    """(inner jaxpr, the outer variables bound to its inputs) of a call-like equation."""
    found = []
    for name, value in eqn.params.items():
        for item in value if isinstance(value, tuple | list) else (value,):
            inner = getattr(item, "jaxpr", item)
            if not isinstance(inner, jax.extend.core.Jaxpr):
                continue
            outer = list(eqn.invars)
            if eqn.primitive.name == "while":  # cond consts, body consts, carry
                n_cond = eqn.params["cond_nconsts"]
                outer = outer[:n_cond] if name == "cond_jaxpr" else outer[n_cond:]
                if name == "cond_jaxpr":
                    outer = outer + list(eqn.invars)[n_cond + eqn.params["body_nconsts"] :]
            elif eqn.primitive.name == "cond":  # the first operand picks the branch
                outer = outer[1:]
            found.append((inner, outer[-len(inner.invars) :] if inner.invars else []))
    return found


def _label(labels: dict, var) -> frozenset:
    """The parameters a jaxpr variable carries (none for a literal constant)."""
    if isinstance(var, jax.extend.core.Literal):
        return frozenset()
    return labels.get(var, frozenset())


def _multiplied(jaxpr, labels: dict) -> set:
    """Labels of the variables that reach a matrix product or convolution as an operand."""
    hits = set()
    for eqn in jaxpr.eqns:
        ins = [_label(labels, v) for v in eqn.invars]
        if eqn.primitive.name in _PRODUCTS:
            hits.update(*ins)
        for inner, outer in _sub_jaxprs(eqn):
            inner_labels = {v: _label(labels, o) for v, o in zip(inner.invars, outer, strict=True)}
            hits |= _multiplied(inner, inner_labels)
            if len(inner.outvars) == len(eqn.outvars):  # e.g. a jitted helper returning a cast
                for out, inner_out in zip(eqn.outvars, inner.outvars, strict=True):
                    if _label(inner_labels, inner_out):
                        labels[out] = _label(inner_labels, inner_out)
        if eqn.primitive.name in _MOVES and ins and ins[0]:
            for out in eqn.outvars:
                labels[out] = ins[0]
    return hits


def weights_by_use(model, clip: tuple[int, int, int]) -> tuple[dict, set[str]]:
    """(the abstract parameters, the names of those a training forward pass multiplies
    activations by)."""
    video = jax.ShapeDtypeStruct((2, *clip, 3), jnp.float32)
    variables = jax.eval_shape(
        lambda v: model.init({"params": jax.random.key(0)}, v, train=False), video
    )
    variables = jax.tree.map(lambda x: getattr(x, "value", x), variables, is_leaf=_boxed)
    params, state = variables["params"], {k: v for k, v in variables.items() if k != "params"}

    def forward(params, state, video):
        return model.apply(
            {"params": params, **state}, video, train=True, mutable=list(state),
            rngs={"dropout": jax.random.key(1)},
        )  # fmt: skip

    closed = jax.make_jaxpr(forward)(params, state, video)
    names = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    labels = {v: frozenset([n]) for v, n in zip(closed.jaxpr.invars, names, strict=False)}
    return params, _multiplied(closed.jaxpr, labels)


def _boxed(x) -> bool:
    return hasattr(x, "unbox")


def _decayed(params) -> set[str]:
    flat = jax.tree_util.tree_flatten_with_path(decay_mask(params))[0]
    return {jax.tree_util.keystr(p) for p, applies in flat if applies}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_weight_is_decayed_and_nothing_else(family):
    config, clip = FAMILIES[family]
    model = build_model(config, num_classes=3)
    params, weights = weights_by_use(model, clip)
    names = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
    decayed = _decayed(params)
    assert decayed == weights, (
        f"decayed but not a weight: {sorted(decayed - weights)}; "
        f"a weight left undecayed: {sorted(weights - decayed)}"
    )
    assert weights and names - weights  # both kinds exist in every family
    if family.startswith(("vivit", "timesformer", "videomae")):
        assert any("query_kernel" in n for n in decayed)
        assert not any(s in n for n in decayed for s in ("pos_embedding", "cls", "bias", "scale"))


def test_adamw_with_zero_gradients_shrinks_every_weight_and_nothing_else():
    """The issue's reproduction: AdamW (weight decay 0.5), zero gradients, one step. The
    attention projections shrink by (1 - lr * wd) like the MLP's; everything else stays."""
    model = build_model(FAMILIES["vivit_model1"][0], num_classes=3)
    params, _ = weights_by_use(model, FAMILIES["vivit_model1"][1])
    params = jax.tree.map(lambda x: jnp.ones(x.shape, x.dtype), params)
    opt = dict(name="adamw", lr=0.1, end_lr=0.1, warmup_steps=0, b1=0.9, b2=0.999)
    tx = make_optimizer({**opt, "weight_decay": 0.5, "grad_clip_norm": 0.0}, num_steps=10)
    zeros = jax.tree.map(jnp.zeros_like, params)
    step = jax.jit(lambda p: optax.apply_updates(p, tx.update(zeros, tx.init(p), p)[0]))
    new = step(params)
    block = new["encoder"]["block00"]
    for kernel in ("query_kernel", "key_kernel", "value_kernel", "out_kernel"):
        np.testing.assert_allclose(block["attention"][kernel], 1 - 0.1 * 0.5, rtol=1e-6)
    np.testing.assert_allclose(block["mlp"]["fc1"]["kernel"], 1 - 0.1 * 0.5, rtol=1e-6)
    decayed = _decayed(params)
    for (path, _), after in zip(
        jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(new), strict=True
    ):
        expected = 1 - 0.05 if jax.tree_util.keystr(path) in decayed else 1.0
        np.testing.assert_allclose(after, expected, rtol=1e-6, err_msg=jax.tree_util.keystr(path))
