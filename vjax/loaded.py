"""A trained or converted model, ready to use: what :func:`vjax.load` returns.

Calling it on uint8 clips normalises them as training did (``config.input.mean``/``std``), so
its logits are the ones evaluation reports; the Flax module and its variables stay available
for anything else, and it still unpacks as ``config, module, variables``.

>>> model = vjax.load("runs/demo/vivit")     # a workdir, one checkpoint step, a convert folder
>>> logits = model(video)                    # uint8 (B, T, H, W, 3) -> (B, num_classes)
>>> model.class_names[int(logits[0].argmax())]
>>> config, module, variables = model        # the raw pieces
>>> same = module.apply(variables, model.normalize(video), train=False)

A model of several modalities (MBT) takes a dict of them, an audio model (AST) the
spectrogram; audio is the normalised log-mel spectrogram ``(B, frames, mel_bins)`` the data
yields (``config.input.audio``):

>>> logits = mbt({"video": video, "audio": spectrogram, "has_audio": has_audio})
>>> logits = ast(spectrogram)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from vjax.errors import UserError


def batch_apply(config: Any, module: Any, variables: dict) -> Callable[[Mapping[str, Any]], Any]:
    """A jitted ``batch -> logits`` of the model's inputs in ``batch`` (uint8 ``video``,
    ``audio`` spectrograms, optional ``has_audio``), prepared as training prepares them
    (:func:`vjax.step.model_input`). It is called only at top level (``model(video)``,
    ``vjax predict``), so it compiles with vjax's options (:mod:`vjax.compile_options`)."""
    import jax

    from vjax.compile_options import compiler_options
    from vjax.step import model_input

    mean, std = tuple(config.input.mean), tuple(config.input.std)

    def apply(batch):
        return module.apply(variables, model_input(module, batch, mean, std), train=False)

    return jax.jit(apply, compiler_options=compiler_options())


def normalized_apply(config: Any, module: Any, variables: dict) -> Callable[[Any], Any]:
    """A jitted ``uint8 (B, T, H, W, 3) -> logits`` with the model's normalisation (the model's
    output: ``(B, K)``, or ``{task: (B, K_task)}`` for a multi-task model)."""
    import jax

    from vjax.step import normalize_video

    mean, std = tuple(config.input.mean), tuple(config.input.std)

    @jax.jit
    def apply(video):
        return module.apply(variables, normalize_video(video, mean, std, module.dtype), train=False)

    return apply


@dataclasses.dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model with its config, variables and checkpoint metadata (``class_names``,
    ``clip_shape``); unpacks (and indexes) as ``(config, module, variables)``. ``step`` is the
    checkpoint step it was read from (an older one than the newest when that did not read)."""

    config: Any
    module: Any
    variables: dict
    metadata: dict
    step: int | None = None

    @property
    def source_step(self) -> int | None:
        """The training step the weights come from: the checkpoint's ``step``, or for a
        ``vjax quantize`` / ``vjax prune`` folder (whose own step is 0) that of the model it
        was made from (None when it did not record it)."""
        for derived in ("quantization", "pruning"):
            if derived in self.metadata:
                return self.metadata[derived].get("source_step")
        return self.step

    @property
    def class_names(self) -> list[str] | dict[str, list[str]]:
        """The classes, in logit order (``{task: names}`` for a multi-task model)."""
        return self.metadata["class_names"]

    @property
    def clip_shape(self) -> tuple[int, ...]:
        """``(T, H, W, C)`` of the clips the model was trained (or converted) on."""
        return tuple(self.metadata["clip_shape"])

    @property
    def modalities(self) -> tuple[str, ...]:
        """The inputs the model takes (:func:`vjax.models.model_modalities`)."""
        from vjax.models import model_modalities

        return model_modalities(self.module)

    @property
    def input_shapes(self) -> Any:
        """The model input's shape without the batch axis: the clip's for a video model, the
        spectrogram's for AST, ``{modality: shape}`` for a model of several."""
        return self.metadata.get("input_shapes", list(self.clip_shape))

    def _check(self, video: Any) -> None:
        shape, channels = tuple(np.shape(video)), self.clip_shape[-1]
        if np.ndim(video) != 5 or np.dtype(video.dtype) != np.uint8:
            raise UserError(
                f"a loaded model takes uint8 frames (0..255) of shape (B, T, H, W, C), got "
                f"{np.dtype(video.dtype)} of shape {shape}; for input already "
                f"normalised use model.module.apply(model.variables, video, train=False)"
            )
        if shape[-1] != channels:  # (B, C, T, H, W) or (B, T, C, H, W): PyTorch's layouts
            axis = shape.index(channels, 1) if channels in shape[1:4] else None
            order = {1: "0, 2, 3, 4, 1", 2: "0, 1, 3, 4, 2"}.get(axis)
            raise UserError(
                f"a loaded model takes clips (B, T, H, W, C) with C = {channels} last (it was "
                f"trained on {self.clip_shape}), got shape {shape}"
                + (f": channels-first? video.transpose({order})" if order else "")
            )

    def normalize(self, video: Any) -> Any:
        """uint8 frames -> the float input the module was trained on."""
        from vjax.step import normalize_video

        self._check(video)
        input_config = self.config.input
        return normalize_video(video, input_config.mean, input_config.std, self.module.dtype)

    @functools.cached_property
    def _apply(self) -> Callable[[Any], Any]:
        return batch_apply(self.config, self.module, self.variables)

    def __call__(self, inputs: Any) -> np.ndarray | dict[str, np.ndarray]:
        """Logits of uint8 clips ``(B, T, H, W, 3)`` (or, for an audio model, spectrograms;
        for a model of several modalities a dict of them), prepared as in training (jitted;
        host arrays)."""
        import jax
        from flax.errors import ScopeParamShapeError

        modalities = self.modalities
        batch = dict(inputs) if isinstance(inputs, Mapping) else {modalities[0]: inputs}
        missing = [name for name in modalities if name not in batch]
        if missing:
            raise UserError(
                f"this model takes {modalities}; give a dict with {missing} too (audio: the "
                f"normalised log-mel spectrogram (B, frames, mel_bins) of config.input.audio)"
            )
        if "video" in modalities:
            if isinstance(batch["video"], list | tuple):  # nested lists of frames
                batch["video"] = np.asarray(batch["video"])
            self._check(batch["video"])
        keep = (*modalities, "has_audio") if len(modalities) > 1 else modalities
        inputs = {k: v for k, v in batch.items() if k in keep}
        try:
            return jax.device_get(self._apply(inputs))
        except ScopeParamShapeError as e:  # a clip size its position table does not fit
            given = {k: tuple(np.shape(v))[1:] for k, v in inputs.items()}
            raise UserError(
                f"this model takes inputs of {self.input_shapes} (without the batch axis), got "
                f"{given if len(given) > 1 else next(iter(given.values()))}: "
                f"{str(e).split(' (https')[0]}"
            ) from None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.config, self.module, self.variables))

    def __getitem__(self, index: int) -> Any:
        return (self.config, self.module, self.variables)[index]

    def __len__(self) -> int:
        return 3


def plain_module(config: Any, metadata: dict) -> Any:
    """The checkpoint's Flax module as its config builds it (no quantization wrapper)."""
    from vjax.models import build_model
    from vjax.tasks import head_sizes

    return build_model(config.model, head_sizes(metadata["class_names"]), config.train.dtype)


def abstract_params(config: Any, metadata: dict, shapes: Any) -> dict:
    """The parameter shapes (``jax.ShapeDtypeStruct``) of :func:`plain_module` on inputs of
    ``shapes`` (without the batch axis; ``{modality: shape}`` for several), from an abstract
    initialisation: what a checkpoint of that model holds."""
    import flax.linen as nn
    import jax
    import optax

    from vjax.step import make_init_state

    init = make_init_state(plain_module(config, metadata), optax.identity(), shapes)
    return nn.meta.unbox(jax.eval_shape(init, jax.random.key(0)).params)


def load(path: str, float_model: bool = False) -> LoadedModel:
    """The newest checkpoint under ``path`` that restores (host arrays), with its model and
    step (a newer step that does not restore is logged as a warning naming it and why). A
    ``vjax quantize`` folder gives the int8 model; a run trained with ``train.quantization``
    its fake-quantized model (the plain one with ``float_model``)."""
    from vjax.checkpoint_paths import locate

    locate(path)  # a wrong path fails at once, before Orbax and JAX load
    from vjax.checkpoint import read_checkpoint
    from vjax.config_utils import config_from_json

    metadata, variables, step = read_checkpoint(path)
    config = config_from_json(metadata["config"])
    module = plain_module(config, metadata)
    quantized = metadata.get("quantization")
    if quantized:
        from vjax.deploy.quantize import from_saved

        module, variables = from_saved(module, quantized["mode"], variables, metadata["clip_shape"])
    elif config.train.get("quantization") and not float_model:
        import jax
        import jax.numpy as jnp

        from vjax.deploy.quantize import qat_model

        module = qat_model(module, config.train.quantization)
        # qwix finds each kernel by identity: a host array copied on the way in is not found
        variables = jax.tree.map(jnp.asarray, variables)
    return LoadedModel(config, module, variables, metadata, step)
