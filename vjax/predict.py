"""``vjax predict --model=DIR video.mp4 [more.mkv ...]``: top-k labels for raw video files.

Each file is decoded with PyAV (short side scaled to the model's crop size, at the frame rate
the model was trained on when its config names one), cut into the test views (``--clips``
uniform clips x ``--crops`` crops, as in the multi-view test of :mod:`vjax.evaluate.scoring`),
and the view logits are averaged before the softmax (a sigmoid per class for a multi-label
model, whose scores need not sum to 1). ``--window=SECONDS`` adds a timeline: the same views
within each window of the video, decoded as a stream (any length fits in memory), and the
file's top-k then averages the windows' logits. A model that hears (MBT, AST) gets each
view's sound too, the file's audio track cut around each clip as in training (with
``--window``, within the window's own seconds); a file without one is said so (MBT then
predicts from the frames). ``--json=FILE`` writes everything printed, plus files that could
not be decoded and why.

    vjax predict --model=runs/vivit clip1.mp4 clip2.webm --top_k=3 --clips=4 --crops=3
    vjax predict --model=converted/videomae long.mp4 --window=2 --json=timeline.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import numbers
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from vjax import storage
from vjax.errors import (
    ArgumentParser,
    input_file,
    json_output_file,
    non_negative_float,
    path_given,
    positive_int,
)
from vjax.evaluate.metrics import log_softmax, sigmoid
from vjax.tasks import ClassNames, concat_classes, head_sizes, is_multitask, split_classes

log = logging.getLogger(__name__)


def make_apply(config: Any, model: Any, variables: dict) -> Callable[[Any], np.ndarray]:
    """A jitted ``uint8 (B, T, H, W, 3) -> logits (B, K)`` with the model's normalisation
    (a multi-task model's logits concatenated over its tasks); a model that hears takes the
    views' dict (``video``, ``audio`` spectrograms, ``has_audio``)."""
    from vjax.loaded import batch_apply

    apply = batch_apply(config, model, variables)

    def run(views: Any) -> np.ndarray:
        batch = dict(views) if isinstance(views, Mapping) else {"video": views}
        return np.asarray(concat_classes(apply(batch), model.num_classes))

    return run


class OpenedModel(NamedTuple):
    """What predicting needs of a model folder: its jitted ``uint8 clips -> logits``, classes,
    clip sampling, whether labels are independent, and the checkpoint step it came from."""

    apply: Callable[[Any], np.ndarray]
    class_names: ClassNames
    sampling: dict
    multi_label: bool
    step: int | None


def open_model(path: str) -> OpenedModel:
    """The model of a checkpoint folder or of a ``vjax export`` folder; the latter runs in its
    own runtime (StableHLO or ONNX), without the training stack. A folder holding both uses
    the export, and says so. ``step``: the checkpoint's (an export's source step; None for an
    export written before exports recorded it)."""
    from vjax.deploy.signature import is_exported, sampling

    if is_exported(path):
        from vjax.deploy.runtime import load_exported

        _say_when_checkpoints_are_beside(path)
        exported = load_exported(path)
        signature = exported.signature
        return OpenedModel(
            lambda video: exported(video)[0],
            signature["class_names"],
            signature["sampling"],
            bool(signature.get("multi_label", False)),
            signature.get("source_step"),
        )
    from vjax.loaded import load

    loaded = load(path)
    clip = sampling(loaded.config, list(loaded.clip_shape))
    if "audio" in loaded.modalities:
        clip["audio"] = dict(loaded.config.input.audio)
    return OpenedModel(
        make_apply(loaded.config, loaded.module, loaded.variables),
        loaded.class_names,
        clip,
        bool(loaded.metadata.get("multi_label", False)),
        loaded.source_step,
    )


def _say_when_checkpoints_are_beside(export_dir: str) -> None:
    """Logs one warning when an export folder also holds training checkpoints (an export
    written into a workdir, which may be older than its newest step): the export is used, and
    the checkpoints are one flag away."""
    from vjax.checkpoint_paths import saved_steps

    checkpoints = os.path.join(export_dir, "checkpoints")
    if steps := saved_steps(checkpoints):
        log.warning(
            "%s holds both an export (signature.json) and checkpoints (newest step %d); using "
            "the export: give --model=%s for the checkpoints",
            export_dir, steps[-1], checkpoints,
        )  # fmt: skip


def _top(
    logits: np.ndarray, names: ClassNames, k: int, multi_label: bool = False
) -> list[dict[str, Any]] | dict:
    """The ``k`` most likely labels with their softmax scores (sigmoid for ``multi_label``);
    ``{task: [...]}`` for a multi-task model (``names`` a mapping, ``logits`` concatenated
    over the tasks)."""
    if is_multitask(names):
        parts = split_classes(logits, head_sizes(names))
        return {task: _top(parts[task], task_names, k) for task, task_names in names.items()}
    probs = sigmoid(logits) if multi_label else np.exp(log_softmax(logits))
    order = np.argsort(-probs, kind="stable")[:k]
    return [{"label": names[i], "score": float(probs[i])} for i in order]


def predict_files(
    model_dir: str,
    paths: Sequence[str] | str,
    top_k: int = 5,
    clips: int = 1,
    crops: int = 1,
    window: float = 0.0,
    chunk_size: int = 8,
) -> dict[str, Any]:
    """``{"files": {path: {"top": [...], "windows": [...]}}, "skipped": {path: reason}}`` of
    the files ``paths`` (or the one file); a file, or a window of several, shorter than a clip
    carries a ``note`` saying how its frames were completed.

    >>> result = predict_files("runs/vivit", ["a.mp4"], top_k=3, clips=4, crops=3)
    >>> result["files"]["a.mp4"]["top"][0]     # {"label": "walking", "score": 0.91}
    """
    from vjax.data.audio import AudioDecodeError, AudioOptions
    from vjax.data.transforms import InputOptions, make_view_iterator
    from vjax.data.video_io import VideoDecodeError, iter_video
    from vjax.evaluate.scoring import video_scores

    if isinstance(paths, str | os.PathLike):  # one file: not a sequence of its characters
        paths = [paths]
    counts = {"top_k": top_k, "clips": clips}
    if not all(isinstance(n, numbers.Integral) and n >= 1 for n in counts.values()) or window < 0:
        given = ", ".join(f"{k}={v!r}" for k, v in {**counts, "window": window}.items())
        raise ValueError(f"top_k and clips take whole numbers >= 1 and window seconds >= 0 "
                         f"(0: the whole file), got {given}")  # fmt: skip
    if crops not in (1, 3) or isinstance(crops, bool):
        raise ValueError(f"crops takes 1 (the centre) or 3 (along the long side), got {crops!r}")
    paths = [os.fspath(p) for p in paths]
    apply, names, clip, multi_label, step = open_model(model_dir)
    height, width = clip["crop"]
    if height != width:
        raise ValueError(f"predict expects square clips, the model's clip is {height}x{width}")
    audio = AudioOptions.from_config(clip["audio"]) if clip.get("audio") else None
    options = InputOptions(
        num_frames=clip["num_frames"],
        frame_stride=clip["frame_stride"],
        sampling=clip.get("sampling", "random"),  # an export written before they were kept
        pad_mode=clip.get("pad_mode", "loop"),
        crop_size=height,
        test_num_clips=clips,
        test_num_crops=crops,
        test_crop_fraction=clip.get("test_crop_fraction", 1.0),
        test_ensemble=clip.get("test_ensemble", "mean"),
        audio=audio,
    )
    views = make_view_iterator(options)
    fps, short_side = clip["fps"], clip.get("resize_short_side", height)
    result: dict[str, Any] = {"model": model_dir, "step": step, "files": {}, "skipped": {}}
    for path in paths:
        info: dict = {}
        heard: dict = {}
        frames = iter_video(path, fps=fps or None, short_side=short_side, info=info)
        bounds: list[tuple[int, int]] = []
        try:
            if window > 0:
                segments = _windows(frames, window, info, bounds)
            else:  # the whole file: its views need all its frames
                decoded = list(frames)
                bounds.append((0, len(decoded)))
                segments = iter([{"frames": decoded, "label": 0}])
            if audio is not None:  # decoded once the frames are (a bad file is named so)
                segments = _with_sound(segments, path, audio.sample_rate, info, bounds, heard)
            scores, _ = video_scores(
                apply, segments, views, chunk_size, ensemble=options.test_ensemble
            )
        except (VideoDecodeError, AudioDecodeError) as e:
            reason = f"{e.reason}: {e.detail}" if isinstance(e, VideoDecodeError) else str(e)
            result["skipped"][path] = reason
            continue
        if window > 0:  # the file's scores: its windows' logits averaged, by length
            lengths = np.asarray([b - a for a, b in bounds], np.float32)[:, None]
            overall = (scores * lengths).sum(0) / lengths.sum()
            windows = [
                {
                    "start": a / info["fps"],
                    "end": b / info["fps"],
                    "top": _top(s, names, top_k, multi_label),
                    **(_fewer_frames_than_a_clip(b - a, options) if len(bounds) > 1 else {}),
                }
                for (a, b), s in zip(bounds, scores, strict=True)
            ]  # one window is the whole file: the file's own note says it once
            entry = {"top": _top(overall, names, top_k, multi_label), "windows": windows}
        else:
            entry = {"top": _top(scores[0], names, top_k, multi_label)}
        if audio is not None:  # the model hears: say whether this file let it
            entry["has_audio"] = heard["sound"] is not None
        short = _fewer_frames_than_a_clip(bounds[-1][1] if bounds else 0, options)
        result["files"][path] = {**entry, "fps": info["fps"], **short}
    return result


def _fewer_frames_than_a_clip(frames: int, options: Any) -> dict[str, str]:
    """``{"note": ...}`` for a file (or a window of one) of fewer frames (at the model's frame
    rate) than one clip spans, which the clip completes by looping them or repeating the last
    (a still image: its one frame throughout); ``{}`` otherwise."""
    from vjax.data.sampling import clip_span

    tsn = options.sampling == "tsn"  # one frame from each of num_frames segments: no stride
    span = math.ceil(clip_span(options.num_frames, 1 if tsn else options.frame_stride))
    if frames >= span:
        return {}
    if frames == 1:
        how = "a still image to the model: its one frame throughout"
    elif tsn:
        how = "frames repeated"
    else:
        how = "looped" if options.pad_mode == "loop" else "the last repeated"
    return {
        "note": f"{frames} frame{'s' * (frames != 1)}, fewer than the {span} a clip spans: {how}"
    }


def _with_sound(
    segments: Iterator[dict[str, Any]],
    path: str,
    sample_rate: int,
    info: dict,
    bounds: list[tuple[int, int]],
    heard: dict,
) -> Iterator[dict[str, Any]]:
    """Each segment with the sound of its own seconds, stored as a prepared video stores it,
    so the views cut each clip's audio window as in training, within the segment's seconds
    (:func:`vjax.data.audio.clip_audio`). The file's sound is decoded once its first frames
    are; ``heard["sound"]`` holds it (None: no sound track)."""
    from vjax.data.audio import audio_record, decode_audio, to_int16, window

    for segment in segments:
        if "sound" not in heard:
            heard["sound"] = decode_audio(path, sample_rate)
        sound = heard["sound"]
        first = bounds[-1][0] if bounds else 0  # the segment's first frame in the file
        samples = None
        if sound is not None:
            start = round((info["start"] + first / info["fps"]) * sample_rate)
            length = round(len(segment["frames"]) / info["fps"] * sample_rate)
            samples = to_int16(window(sound, start, length))
        yield {**segment, "fps": info["fps"], **audio_record(samples, sample_rate)}


def _windows(
    frames: Iterator[np.ndarray], seconds: float, info: dict, bounds: list[tuple[int, int]]
) -> Iterator[dict[str, Any]]:
    """Consecutive windows of ``seconds`` of a frame stream (the last may be shorter), so a
    long video is scored without holding it decoded; appends each window's frame range."""
    buffer: list[np.ndarray] = []
    done = 0
    for frame in frames:
        buffer.append(frame)
        if len(buffer) == max(1, round(seconds * info["fps"])):
            bounds.append((done, done + len(buffer)))
            done += len(buffer)
            yield {"frames": buffer, "label": 0}
            buffer = []
    if buffer:
        bounds.append((done, done + len(buffer)))
        yield {"frames": buffer, "label": 0}


def _by_task(top: list | dict) -> list[tuple[str, list[dict[str, Any]]]]:
    """``(prefix, top-k)`` pairs: one with no prefix, or ``"<task>: "`` per task."""
    if isinstance(top, dict):
        return [(f"{task}: ", entries) for task, entries in top.items()]
    return [("", top)]


def format_result(result: dict[str, Any]) -> str:
    """The printed form: the model (and its checkpoint step), then per file its top-k and one
    line per window (and a window's note, if it is shorter than a clip)."""
    lines = []
    if "model" in result:
        step = result.get("step")
        lines.append(f"model {result['model']}" + ("" if step is None else f" (step {step})"))
    for path, entry in result["files"].items():
        lines.append(path)
        if entry.get("has_audio") is False:
            lines.append("  (no audio track: an audio-visual model predicts from the frames alone)")
        if "note" in entry:
            lines.append(f"  ({entry['note']})")
        for task, top in _by_task(entry["top"]):
            lines += [f"  {t['score']:.3f}  {task}{t['label']}" for t in top]
        for w in entry.get("windows", []):
            best = "; ".join(
                ", ".join(f"{task}{t['label']} {t['score']:.2f}" for t in top[:3])
                for task, top in _by_task(w["top"])
            )
            lines.append(f"  [{w['start']:7.2f}s - {w['end']:7.2f}s]  {best}")
            if "note" in w:
                lines.append(f"    ({w['note']})")
    for path, why in result["skipped"].items():
        lines.append(f"{path}: skipped ({why})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``vjax predict``; returns the exit code (1 when any file was skipped)."""
    parser = ArgumentParser(prog="vjax predict", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        type=path_given,
        required=True,
        help="checkpoint folder (vjax.load opens it) or exported folder",
    )
    parser.add_argument("videos", nargs="+", help="video files (any container ffmpeg reads)")
    parser.add_argument("--top_k", type=positive_int, default=5, help="labels shown per file")
    parser.add_argument("--clips", type=positive_int, default=1, help="uniform clips per file")
    parser.add_argument("--crops", type=int, default=1, choices=(1, 3), help="spatial crops")
    parser.add_argument(
        "--window", type=non_negative_float, default=0.0, help="timeline window, seconds (0: off)"
    )
    parser.add_argument("--chunk_size", type=positive_int, default=8, help="views per model call")
    parser.add_argument(
        "--json", type=json_output_file, default=None, help="also write the result to this file"
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    for video in args.videos:  # a local typo or folder, named before the model loads
        try:
            input_file(video)
        except argparse.ArgumentTypeError as e:
            parser.error(f"argument videos: {e}")
    result = predict_files(
        args.model, args.videos, args.top_k, args.clips, args.crops, args.window, args.chunk_size
    )
    print(format_result(result))
    if args.json:
        storage.path(args.json).write_text(json.dumps(result, indent=1))
    return 1 if result["skipped"] else 0
