"""MBT, the Multimodal Bottleneck Transformer (Nagrani et al., NeurIPS 2021, "Attention
Bottlenecks for Multimodal Fusion"): audio-visual classification by fusing a video and a
spectrogram transformer through a few shared tokens.

Each modality has its own tokens and its own transformer layers (separate weights, as the
paper's default): video through ViViT's tubelet embedding, audio through AST's spectrogram
patches (:mod:`vjax.models.ast`), each with its position table and class token. Layers
``0 .. fusion_layer - 1`` see one modality only. From ``fusion_layer`` on (``fusion``):

* ``"bottleneck"`` (the paper's MBT): ``num_bottlenecks`` shared tokens join each modality's
  sequence; each modality's layer attends over its own tokens and the bottlenecks, and the
  bottlenecks' updates are averaged over the modalities. Information crosses between
  modalities only through them (with 0 bottlenecks it does not cross at all).
* ``"cross"`` (the paper's vanilla cross-attention fusion): each modality's layer attends over
  the tokens of every modality and keeps its own outputs.

``fusion_layer = num_layers`` is late fusion (no exchange; the logits are averaged). The two
class tokens go through the same linear classifier and the logits are averaged (the paper).
Training scores each modality's logits against the labels and averages those losses, as
scenic's MBT trainer does for this classifier (:func:`vjax.models.layers.sow_modality_logits`;
each branch must classify on its own, not only their mean).
``modalities=("video",)`` or ``("audio",)`` is the same model on one modality (the paper's
single-modality baselines); such a model takes that array, a two-modality one a dict
``{"video": ..., "audio": ..., "has_audio": optional (B,) bool}``.

Missing audio: an example whose ``has_audio`` is False, or whose audio is dropped in training
(``audio_dropout``, per example), gets the video branch's logits alone, and the bottlenecks
it fuses are the video branch's own (cross fusion: the video layer attends over video tokens
only), so its prediction does not depend on its audio input at all.

>>> model = MBT(num_classes=309, size="B/16x2", fusion_layer=10, num_bottlenecks=4)
>>> inputs = {"video": jnp.zeros((1, 32, 224, 224, 3)), "audio": jnp.zeros((1, 800, 128))}
>>> variables = model.init(jax.random.key(0), inputs, train=False)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vjax.models.ast import check_spectrogram, patch_grid, spectrogram_tokens
from vjax.models.layers import (
    ClassifierHead,
    EncoderBlock,
    layer_norm,
    learned_embedding,
    prepend,
    remat_block,
    sow_modality_logits,
)
from vjax.models.registry import register
from vjax.models.video_transformer import VideoTransformer, check_divisible, class_token

__all__ = ["FUSIONS", "MBT", "MODALITIES"]

MODALITIES = ("video", "audio")
FUSIONS = ("bottleneck", "cross")


def _average(outputs: list[Any], present: jax.Array | None) -> Any:
    """The mean of per-modality outputs (video first); where ``present`` (per example) is
    False, the video's alone. Works on logits and multi-task logit dicts alike."""

    def mean(*xs: jax.Array) -> jax.Array:
        return (sum(x.astype(jnp.float32) for x in xs) / len(xs)).astype(xs[0].dtype)

    return _or_first(jax.tree.map(mean, *outputs), outputs[0], present)


def _or_first(output: Any, first: Any, present: jax.Array | None) -> Any:
    """``output`` where ``present`` (per example), else ``first`` (the video's)."""
    if present is None:
        return output

    def pick(x: jax.Array, y: jax.Array) -> jax.Array:
        return jnp.where(present.reshape(-1, *([1] * (x.ndim - 1))), x, y)

    return jax.tree.map(pick, output, first)


@register("mbt")
class MBT(VideoTransformer):
    """Audio-visual fusion through attention bottlenecks (see the module docstring).

    ``size``: both encoders' width and depth and the video tubelet (the spectrogram patches are
    ``patch x patch`` every ``audio_patch_stride`` bins, None: no overlap).
    """

    size: str = "B/16x2"
    modalities: tuple[str, ...] = MODALITIES
    fusion: str = "bottleneck"
    fusion_layer: int = 10
    num_bottlenecks: int = 4
    audio_patch_stride: int | None = None
    audio_dropout: float = 0.0  # training: probability of dropping an example's audio

    @property
    def audio_stride(self) -> int:
        return self.audio_patch_stride or self.resolved_size().patch

    def check_input(self, input_shapes: Any) -> None:
        """Validates the input shapes (a dict by modality, or one modality's shape) and the
        fusion settings before any compilation."""
        mods = tuple(self.modalities)
        if not mods or len(set(mods)) != len(mods) or not set(mods) <= set(MODALITIES):
            raise ValueError(
                f"model.modalities {mods} must name each of {MODALITIES} at most once (at "
                f"least one)"
            )
        if self.fusion not in FUSIONS:
            raise ValueError(f"model.fusion must be one of {FUSIONS}, got {self.fusion!r}")
        layers = self.resolved_size().num_layers
        if not 0 <= self.fusion_layer <= layers:
            raise ValueError(
                f"model.fusion_layer ({self.fusion_layer}) must be in 0..num_layers ({layers}); "
                f"{layers} is late fusion"
            )
        if self.num_bottlenecks < 0:
            raise ValueError(f"model.num_bottlenecks must be >= 0, got {self.num_bottlenecks}")
        if not 0.0 <= self.audio_dropout < 1.0:
            raise ValueError(f"model.audio_dropout must be in [0, 1), got {self.audio_dropout}")
        if self.audio_dropout and mods != MODALITIES:
            raise ValueError("model.audio_dropout needs modalities ('video', 'audio')")
        shapes = input_shapes if isinstance(input_shapes, Mapping) else {mods[0]: input_shapes}
        missing = [m for m in mods if m not in shapes]
        if missing:
            raise ValueError(f"MBT takes {mods}, but its input has no {missing}")
        if "video" in mods:
            check_divisible(tuple(shapes["video"]), self.tubelet)
        if "audio" in mods:
            check_spectrogram(tuple(shapes["audio"]), self.resolved_size().patch, self.audio_stride)
        self.check_options()

    def vit_view(self, params: Mapping[str, Any], modality: str) -> dict[str, Any]:
        """One modality's parameters under an image ViT's names (``embedding``,
        ``pos_embedding``, ``cls``, ``encoder/blockNN``, ``encoder/encoder_norm``,
        ``classifier``), so :func:`vjax.convert.surgery.adapt_params` moves a ViT onto each
        encoder (scenic initialises MBT so); :meth:`from_vit_view` puts them back."""
        layers = self.resolved_size().num_layers
        encoder = {f"block{i:02d}": params[f"{modality}_block{i:02d}"] for i in range(layers)}
        return {
            "embedding": params[f"{modality}_embedding"],
            "pos_embedding": params[f"{modality}_pos_embedding"],
            "cls": params[f"{modality}_cls"],
            "encoder": {**encoder, "encoder_norm": params[f"{modality}_encoder_norm"]},
            "classifier": params["classifier"],
        }

    def from_vit_view(
        self, params: Mapping[str, Any], modality: str, view: Mapping[str, Any]
    ) -> dict[str, Any]:
        """``params`` with ``modality``'s parameters taken from a :meth:`vit_view` tree."""
        out = dict(params)
        for name in ("embedding", "pos_embedding", "cls"):
            out[f"{modality}_{name}"] = view[name]
        for name, value in view["encoder"].items():  # blockNN and encoder_norm
            out[f"{modality}_{name}"] = value
        out["classifier"] = view["classifier"]
        return out

    def patch_grid(self, modality: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """The ``(time, height, width)`` token grid of one modality's input (with the batch)."""
        if modality == "audio":
            return patch_grid(input_shape, self.resolved_size().patch, self.audio_stride)
        t, h, w = (n // k for n, k in zip(input_shape[1:4], self.tubelet, strict=True))
        return (t, h, w)

    def _block(self, modality: str, layer: int) -> nn.Module:
        """Layer ``layer`` of ``modality``'s transformer (stochastic depth grows linearly),
        rematerialised as ``remat`` says; called as ``block(x, train)``."""
        size = self.resolved_size()
        rate = self.drop_path_rate * layer / max(size.num_layers - 1, 1)
        return remat_block(EncoderBlock, self.remat)(
            size.num_heads,
            size.mlp_dim,
            self.dropout_rate,
            rate,
            dtype=self.dtype,
            options=self.options,
            name=f"{modality}_block{layer:02d}",
        )

    def _tokens(self, modality: str, x: jax.Array, train: bool) -> jax.Array:
        """Embedded tokens of one modality with its position table and class token in front."""
        if modality == "video":
            x, _ = self.embed(x, name="video_embedding")
        else:
            x = spectrogram_tokens(self, x, self.audio_stride, "audio_embedding")
        pos = learned_embedding(
            self, f"{modality}_pos_embedding", (1, *x.shape[1:]), (None, "tokens", "embed")
        )
        x = prepend(class_token(self, f"{modality}_cls", x.shape[-1]), x + pos.astype(self.dtype))
        return nn.Dropout(self.dropout_rate)(x, deterministic=not train)

    def _present(self, inputs: Mapping[str, Any], batch: int, train: bool) -> jax.Array | None:
        """Per example, whether its audio takes part (None: every example's does)."""
        if tuple(self.modalities) != MODALITIES:
            return None
        present = inputs.get("has_audio")
        if train and self.audio_dropout:
            kept = jax.random.bernoulli(
                self.make_rng("dropout"), 1.0 - self.audio_dropout, (batch,)
            )
            present = kept if present is None else kept & present
        return None if present is None else jnp.asarray(present, bool)

    def _fuse(
        self, tokens: dict[str, jax.Array], bottleneck: jax.Array | None, layer: int, present, train
    ) -> tuple[dict[str, jax.Array], jax.Array | None]:
        """One fusion layer over every modality (see the module docstring)."""
        mods = tuple(tokens)
        out = {}
        if self.fusion == "bottleneck":
            updates = []
            for m in mods:
                length = tokens[m].shape[1]
                y = self._block(m, layer)(jnp.concatenate([tokens[m], bottleneck], 1), train)
                out[m], update = y[:, :length], y[:, length:]
                updates.append(update)
            return out, _average(updates, present)
        for m in mods:
            length = tokens[m].shape[1]
            block = self._block(m, layer)
            context = [tokens[o] for o in mods if o != m]
            y = block(jnp.concatenate([*context, tokens[m]], 1), train)[:, -length:]
            if present is not None and m == "video":  # no audio: attend over the video alone
                alone = block(tokens[m], train)
                y = jnp.where(present[:, None, None], y, alone)
            out[m] = y
        return out, bottleneck

    @nn.compact
    def __call__(self, inputs: Any, *, train: bool) -> Any:
        mods = tuple(self.modalities)
        inputs = inputs if isinstance(inputs, Mapping) else {mods[0]: inputs}
        self.check_input({m: inputs[m].shape for m in mods if m in inputs})
        size = self.resolved_size()
        tokens = {m: self._tokens(m, inputs[m], train) for m in mods}
        batch = tokens[mods[0]].shape[0]
        present = self._present(inputs, batch, train)
        bottleneck = None
        if self.fusion == "bottleneck" and len(mods) > 1 and self.fusion_layer < size.num_layers:
            init = nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, None, "embed"))
            shape = (1, self.num_bottlenecks, size.hidden_size)
            bottleneck = jnp.broadcast_to(
                self.param("bottleneck", init, shape).astype(self.dtype), (batch, *shape[1:])
            )
        for layer in range(size.num_layers):
            if layer < self.fusion_layer or len(mods) == 1:
                tokens = {m: self._block(m, layer)(x, train) for m, x in tokens.items()}
            else:
                tokens, bottleneck = self._fuse(tokens, bottleneck, layer, present, train)
        head = ClassifierHead(self.num_classes, name="classifier")
        eps = self.options.layer_norm_eps
        logits = [
            head(layer_norm(f"{m}_encoder_norm", self.dtype, eps)(tokens[m])[:, 0]) for m in mods
        ]
        if train and len(mods) > 1:  # each trained against the labels (scenic's MBT loss)
            sow_modality_logits(self, [_or_first(x, logits[0], present) for x in logits])
        return _average(logits, present)
