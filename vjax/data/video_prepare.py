"""Turning listed videos into stored examples, in parallel over local cores (no TensorFlow).

``encode_entries`` decodes each :class:`~vjax.data.manifests.VideoEntry` with
:func:`~vjax.data.video_io.iter_video` (target fps, short side), JPEG-encodes its frames (and,
when asked, decodes the sound of the same time span: :func:`~vjax.data.audio.decode_audio`) and
yields results in input order, so a dataset build is deterministic whatever the number of
worker processes. A bad file yields a :class:`Skipped` record instead of raising; any other
error (a bug, a full disk) propagates and aborts the build.

>>> for i, result in encode_entries(entries, VideoSettings(fps=10, short_side=256)):
...     print(i, type(result).__name__)
"""

from __future__ import annotations

import collections
import dataclasses
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np

from vjax.data.audio import AudioDecodeError, decode_audio, to_int16
from vjax.data.manifests import VideoEntry
from vjax.data.pipeline import exit_with_parent
from vjax.data.video_io import VideoDecodeError, encode_jpeg, iter_video
from vjax.errors import UserError


@dataclasses.dataclass(frozen=True)
class VideoSettings:
    """How videos are stored: frame rate (0 = each file's own), short side in pixels
    (0 = native), the fewest frames a kept video has, the JPEG quality, and the rate of the
    stored mono sound track (0: no sound stored)."""

    fps: float = 0.0
    short_side: int = 256
    min_frames: int = 1
    jpeg_quality: int = 90
    audio_sample_rate: int = 0


@dataclasses.dataclass(frozen=True)
class Encoded:
    """A kept video: JPEG frames, their rate and size; with sound asked for, its int16 mono
    samples from frame 0's time on (None: no sound track, or ``audio_error`` says why not)."""

    frames: list[bytes]
    fps: float
    height: int
    width: int
    audio: np.ndarray | None = None
    audio_error: str = ""


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A video left out, with the reason category and ffmpeg's detail."""

    path: str
    reason: str
    detail: str


def encode_entry(entry: VideoEntry, settings: VideoSettings) -> Encoded | Skipped:
    """Decodes and JPEG-encodes one video, or says why it was skipped (``missing``: listed
    but not on disk, or a :data:`~vjax.data.video_io.REASONS` category)."""
    if not os.path.isfile(entry.path):
        return Skipped(entry.path, "missing", "no such file")
    info: dict = {}
    frames = iter_video(
        entry.path,
        fps=settings.fps or None,
        short_side=settings.short_side or None,
        start=entry.start,
        end=entry.end,
        min_frames=settings.min_frames,
        info=info,
    )
    jpegs, shape = [], (0, 0)
    try:
        for frame in frames:  # JPEG-encoded as decoded: a long video never sits in memory
            jpegs.append(encode_jpeg(frame, settings.jpeg_quality))
            shape = frame.shape[:2]
    except VideoDecodeError as e:
        return Skipped(entry.path, e.reason, e.detail)
    audio, audio_error = None, ""
    if settings.audio_sample_rate:  # the sound of exactly the stored frames' time span
        end = info["start"] + len(jpegs) / info["fps"]
        try:
            samples = decode_audio(entry.path, settings.audio_sample_rate, info["start"], end)
        except AudioDecodeError as e:  # the frames are kept, marked without sound
            samples, audio_error = None, e.detail
        audio = None if samples is None else to_int16(samples)
    return Encoded(jpegs, info["fps"], *shape, audio, audio_error)


def _encode_star(args: tuple[VideoEntry, VideoSettings]) -> Encoded | Skipped:
    return encode_entry(*args)


def _next_result(pending: collections.deque, entries: Sequence[VideoEntry]) -> tuple[int, Any]:
    """The oldest pending ``(position, result)``; a worker that died (the out-of-memory killer,
    a crash in a decoder) is an error naming the videos it may have been decoding."""
    i, future = pending[0]
    try:
        result = future.result()
    except BrokenProcessPool:
        paths = [entries[j].path for j, _ in pending]
        shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
        raise UserError(
            f"a decoding process died (out of memory, or a crash in a decoder) on one of: "
            f"{shown}; try fewer --num_workers, or leave those files out"
        ) from None
    pending.popleft()
    return i, result


def encode_entries(
    entries: Sequence[VideoEntry],
    settings: VideoSettings,
    num_workers: int | None = None,
    progress: str | None = None,
) -> Iterator[tuple[int, Encoded | Skipped]]:
    """``(position, result)`` for each entry, in order; ``num_workers`` processes (default: all
    cores; 1 runs in this process). ``progress`` is a progress-bar title (None: no bar)."""
    from tqdm import tqdm

    workers = num_workers or os.cpu_count() or 1
    jobs = [(e, settings) for e in entries]
    bar = tqdm(total=len(jobs), desc=progress, unit="video", disable=progress is None)
    try:
        if workers <= 1 or len(jobs) <= 1:
            for i, job in enumerate(jobs):
                yield i, _encode_star(job)
                bar.update()
            return
        # "spawn": workers start clean, never a fork of a process running TF/JAX threads (as with
        # any spawn pool, a calling script needs an ``if __name__ == "__main__":`` guard). At
        # most ``4 * workers`` videos are in flight, so memory stays bounded on any dataset.
        context = multiprocessing.get_context("spawn")
        workers = min(workers, len(jobs))
        with ProcessPoolExecutor(workers, mp_context=context, initializer=exit_with_parent) as pool:
            pending: collections.deque = collections.deque()  # (position, future), in order
            for i, job in enumerate(jobs):
                pending.append((i, pool.submit(_encode_star, job)))
                if len(pending) >= 4 * workers:
                    yield _next_result(pending, entries)
                    bar.update()
            while pending:
                yield _next_result(pending, entries)
                bar.update()
    finally:
        bar.close()
