"""``signature.json``: what a consumer of an exported model needs to feed it and read it.

The input clip (shape with ``null`` for the batch, dtype uint8, layout, value range), the
outputs (logits and per-task softmax probabilities, concatenated over the tasks), the class
names per task with each task's columns, the clip sampling the model was trained with
(frames, frame stride, frame rate, short-side resize, centre crop) and the normalisation the
exported function already applies. Reads and writes plain JSON; imports nothing heavy.

>>> sig = read_signature("exported/vivit")
>>> sig["input"]["shape"]          # [None, 16, 32, 32, 3]
>>> sig["tasks"]["label"]["classes"][:2]
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

from vjax.errors import NotFoundError, UserError

SIGNATURE_FILE = "signature.json"
FORMAT_VERSION = 1
# What a consumer of the folder reads (vjax.deploy.runtime, vjax predict).
REQUIRED = ("files", "input", "class_names", "sampling")


def trained_fps(config: Mapping[str, Any]) -> float:
    """The frame rate the model's clips were cut at when its config records one, else 0."""
    for section in ("input", "dataset"):
        value = (config.get(section) or {}).get("fps")
        if value:
            return float(value)
    return 0.0


def sampling(config: Mapping[str, Any], clip_shape: list[int]) -> dict[str, Any]:
    """How the model's evaluation cuts clips from a video: ``num_frames`` frames
    ``frame_stride`` apart (at ``fps`` when set, else the file's own rate; ``sampling``
    ``"tsn"``: one per segment; ``pad_mode`` for a short video), short side resized to
    ``resize_short_side``, centre square of ``test_crop_fraction`` of it resized to ``crop``,
    and the views' logits pooled by ``test_ensemble`` (``config.input``'s test settings, so
    ``vjax predict`` scores a file as ``vjax eval`` does)."""
    from vjax.data.transforms import InputOptions

    frames, height, width, _ = clip_shape
    given, default = config.get("input") or {}, InputOptions()  # evaluation's own defaults
    if "dataset" not in config:  # a vjax convert folder from before it recorded its stride
        default = dataclasses.replace(default, frame_stride=1)

    def test(key: str) -> Any:
        return given.get(key, getattr(default, key))

    fraction = float(test("test_crop_fraction"))
    return {
        "num_frames": int(frames),
        "frame_stride": float(test("frame_stride")),
        "fps": trained_fps(config) or None,
        "sampling": str(test("sampling")),
        "pad_mode": str(test("pad_mode")),
        "resize_short_side": round(int(height) / fraction),
        "test_crop_fraction": fraction,
        "crop": [int(height), int(width)],
        "test_ensemble": str(test("test_ensemble")),
    }


def tasks(class_names: list[str] | Mapping[str, list[str]]) -> dict[str, dict[str, Any]]:
    """``{task: {"classes": names, "columns": [start, stop]}}``: each task's slice of the
    concatenated outputs (one task is called ``label``)."""
    from vjax.tasks import task_class_names

    out, start = {}, 0
    for task, names in task_class_names(class_names).items():
        out[task] = {"classes": list(names), "columns": [start, start + len(names)]}
        start += len(names)
    return out


def make_signature(
    config: Mapping[str, Any], metadata: Mapping[str, Any], files: dict[str, str], **extra: Any
) -> dict[str, Any]:
    """The signature of a checkpoint's inference function (``metadata`` as saved with it)."""
    clip = [int(v) for v in metadata["clip_shape"]]
    names = metadata["class_names"]
    classes = sum(len(t["classes"]) for t in tasks(names).values())
    model_input = config.get("input") or {}
    multi_label = bool(metadata.get("multi_label", False))
    return {
        "format_version": FORMAT_VERSION,
        "model": config["model"]["name"],
        "input": {
            "name": "video",
            "shape": [None, *clip],
            "dtype": "uint8",
            "layout": "batch, time, height, width, RGB channels",
            "value_range": [0, 255],
        },
        "outputs": {
            "logits": [None, classes],
            "probabilities": [None, classes],
            "note": "a sigmoid per class" if multi_label else "softmax within each task's columns",
        },
        "class_names": names,
        "multi_label": multi_label,
        "tasks": tasks(names),
        "sampling": sampling(config, clip),
        "normalization": {
            "mean": list(model_input.get("mean", ())),
            "std": list(model_input.get("std", ())),
            "applied_inside": True,
        },
        "files": files,
        **extra,
    }


def write_signature(folder: str, signature: dict[str, Any]) -> str:
    """Writes ``folder``'s ``signature.json`` (local or in a bucket): written last, it is what
    makes a folder an export (:func:`is_exported`)."""
    from vjax import storage

    path = os.path.join(folder, SIGNATURE_FILE)
    storage.path(path).write_text(json.dumps(signature, indent=1))
    return path


def is_exported(folder: str) -> bool:
    """True for a folder ``vjax export`` wrote (it has a ``signature.json``), local or in a
    bucket."""
    from vjax import storage

    return storage.path(folder, SIGNATURE_FILE).is_file()


def read_signature(folder: str) -> dict[str, Any]:
    """The folder's signature; a missing, unreadable or incomplete file is a UserError
    naming it (re-export the model)."""
    from vjax import storage

    path = os.path.join(folder, SIGNATURE_FILE)
    if not storage.path(path).is_file():
        raise NotFoundError(f"{folder!r} has no {SIGNATURE_FILE}: export it with vjax export")
    try:
        signature = json.loads(storage.path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError included
        raise UserError(f"{path} is not readable JSON ({e}); re-export with vjax export") from e
    missing = [k for k in REQUIRED if k not in signature] if isinstance(signature, dict) else []
    if not isinstance(signature, dict) or missing:
        what = f"lacks {', '.join(missing)}" if missing else "is not a JSON object"
        raise UserError(f"{path} {what}: not a vjax export signature; re-export with vjax export")
    return signature
