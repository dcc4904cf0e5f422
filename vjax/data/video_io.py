"""Reading and writing real video files with PyAV (ffmpeg): any container/codec ffmpeg reads.

``decode_video`` is what dataset preparation and ``vjax predict`` use: it decodes one file (or
a ``[start, end)`` segment of it, seeking near ``start``), turns frames upright when the file
carries a display rotation (phone videos), resamples to a target frame rate by picking, for
each output time ``t0 + k / fps``, the last decoded frame shown at that time, and scales each
kept frame so its short side is ``short_side`` pixels. Frames stream through (``iter_video``):
only the output frames are ever converted to RGB, and nothing else is held in memory.

``VideoDecodeError`` carries a short ``reason`` category (``unreadable``, ``no_video_stream``,
``unknown_codec``, ``corrupt``, ``truncated``, ``too_short``) so a dataset build can count and
list the files it skips.

This module must stay free of tensorflow imports.

>>> clip = decode_video("walk.mp4", fps=10, short_side=256)
>>> clip.frames.shape, clip.fps            # ((T, 256, W, 3), 10.0)
"""

from __future__ import annotations

import dataclasses
import numbers
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

REASONS = ("unreadable", "no_video_stream", "unknown_codec", "corrupt", "truncated", "too_short")
"""Why a file is skipped, in the order the checks run."""

TRUNCATION_TOLERANCE = 0.2
"""A file whose decoded frames end more than this fraction (and more than 0.5 s) before the
duration its container declares is reported as ``truncated``."""


class VideoDecodeError(ValueError):
    """A file that cannot be used: ``reason`` is one of :data:`REASONS`."""

    def __init__(self, path: str, reason: str, detail: str):
        if reason not in REASONS:
            raise AssertionError(reason)
        self.path, self.reason, self.detail = path, reason, detail
        super().__init__(f"{path}: {reason} ({detail})")


@dataclasses.dataclass(frozen=True)
class DecodedVideo:
    """Decoded frames ``uint8 (T, H, W, 3)`` at ``fps`` frames per second; ``source_fps`` is
    the file's own average rate."""

    frames: np.ndarray
    fps: float
    source_fps: float


def scaled_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """``(height, width)`` with the short side scaled to ``short_side`` (aspect kept, rounded).

    >>> scaled_size(480, 640, 256)
    (256, 341)
    """
    if not short_side:
        return height, width
    scale = short_side / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def iter_video(
    path: str,
    fps: float | None = None,
    short_side: int | None = None,
    start: float | None = None,
    end: float | None = None,
    min_frames: int = 1,
    check_truncation: bool = True,
    info: dict | None = None,
) -> Iterator[np.ndarray]:
    """Yields the RGB frames :func:`decode_video` returns, one at a time, so an hour-long file
    never sits decoded in memory. ``info`` (a dict) receives ``fps`` and ``source_fps``, and
    once the first frame is out ``start``: the time (seconds, the file's clock) output frame 0
    stands for. A bad file raises :class:`VideoDecodeError`; ``too_short`` and ``truncated``
    are only known, and raised, after the last frame.
    """
    import av

    if fps is not None and not (isinstance(fps, numbers.Real) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if short_side and not (short_side >= 1 and int(short_side) == short_side):  # 0: as stored
        raise ValueError(f"short_side must be a whole number of pixels >= 1, got {short_side!r}")
    if start is not None and end is not None and end <= start:  # not the file's fault
        raise ValueError(f"the segment is empty: end ({end}) <= start ({start})")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise VideoDecodeError(path, "unreadable", "zero-length file")
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise VideoDecodeError(path, "unreadable", f"{type(e).__name__}: {e}") from e
    with container:
        if not container.streams.video:
            raise VideoDecodeError(path, "no_video_stream", "the file has no video stream")
        stream = container.streams.video[0]
        if stream.codec_context is None:
            raise VideoDecodeError(path, "unknown_codec", "ffmpeg has no decoder for its codec")
        stream.thread_type = "AUTO"
        source_fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
        declared = _declared_duration(container, stream)
        out_fps = float(fps) if fps else source_fps
        if info is not None:
            info.update(fps=out_fps, source_fps=source_fps)
        if start and start > 1.0 and stream.time_base:
            try:  # to the key frame before start; decoding from the file's start is the fallback
                container.seek(int(start / stream.time_base), stream=stream, backward=True)
            except av.FFmpegError:
                container.seek(0, stream=stream)
        rgb = _Converter(short_side)
        count = 0
        prev, prev_t, first_t, last_t, shown_t = None, None, None, None, None
        try:
            for index, frame in enumerate(container.decode(stream)):
                t = frame.time if frame.time is not None else index / source_fps
                if end is not None and t >= end:
                    break
                if start is not None and t < start:
                    prev, prev_t = frame, t  # the frame showing at ``start``
                    continue
                last_t = t
                shown_t = t if shown_t is None else shown_t
                if fps is None:
                    if info is not None:  # known now, so a stream's reader can align sound
                        info.setdefault("start", float(shown_t))
                    count += 1
                    yield rgb(frame)
                    continue
                if first_t is None:
                    first_t = start if (start is not None and prev is not None) else t
                    if info is not None:
                        info.setdefault("start", float(first_t))
                # Output time first_t + k / fps shows the last frame at or before it (1 ms of
                # slack absorbs timestamps rounded to milliseconds, as in webm/mkv).
                while prev is not None and first_t + count / fps + 1e-3 < t:
                    count += 1
                    yield rgb(prev)
                prev, prev_t = frame, t
        except av.error.DecoderNotFoundError as e:
            raise VideoDecodeError(path, "unknown_codec", str(e)) from e
        except (av.FFmpegError, OSError) as e:
            if prev is None and last_t is None:
                raise VideoDecodeError(path, "corrupt", f"{type(e).__name__}: {e}") from e
            # Decoding broke off mid-stream: keep what decoded; the truncation check decides.
    if prev is None and last_t is None:
        raise VideoDecodeError(path, "corrupt", "no frame could be decoded")
    if last_t is None:  # every frame lies before ``start``
        first_t, last_t = start, prev_t
    if info is not None:  # the time of output frame 0 (where a stored sound track starts)
        info["start"] = float(first_t if first_t is not None else shown_t)
    last_end = last_t + 1.0 / source_fps
    segment_end = last_end if end is None else min(end, last_end)
    if fps is not None:
        total = max(0, int(np.ceil((segment_end - first_t - 1e-3) * fps)))
        while count < total:
            count += 1
            yield rgb(prev)
    if check_truncation and declared is not None:
        wanted_end = declared if end is None else min(end, declared)
        if wanted_end - last_end > max(0.5, TRUNCATION_TOLERANCE * wanted_end):
            raise VideoDecodeError(
                path, "truncated", f"frames end at {last_end:.2f}s of a declared {declared:.2f}s"
            )
    if count < min_frames:
        raise VideoDecodeError(
            path, "too_short", f"{count} frames at {out_fps:g} fps, need {min_frames}"
        )


class _Converter:
    """``av.VideoFrame`` -> RGB array scaled to a short side and turned upright (phones store
    portrait video turned; the display matrix turns counterclockwise, as players show it); a
    frame repeated by upsampling is converted once."""

    def __init__(self, short_side: int | None):
        self.short_side = short_side
        self.last: tuple[object, np.ndarray] | None = None

    def __call__(self, frame) -> np.ndarray:
        if self.last is not None and self.last[0] is frame:
            return self.last[1]
        height, width = scaled_size(frame.height, frame.width, self.short_side)
        image = frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="AREA")
        turns = round((frame.rotation or 0) / 90) % 4
        if turns:
            image = np.ascontiguousarray(np.rot90(image, turns))
        self.last = (frame, image)
        return image


def decode_video(
    path: str,
    fps: float | None = None,
    short_side: int | None = None,
    start: float | None = None,
    end: float | None = None,
    min_frames: int = 1,
    check_truncation: bool = True,
) -> DecodedVideo:
    """Decodes ``path`` to RGB frames; raises :class:`VideoDecodeError` on a bad file.

    Args:
      fps: output frame rate (``None``: every frame at the file's own rate).
      short_side: output short side in pixels (``None``: native size).
      start, end: the segment in seconds (``None``: from the first / to the last frame).
      min_frames: fewer output frames than this raise with reason ``too_short``.
      check_truncation: raise ``truncated`` when decoding stops well before the declared end.
    """
    info: dict = {}
    frames = list(
        iter_video(path, fps, short_side, start, end, max(min_frames, 1), check_truncation, info)
    )
    return DecodedVideo(frames=np.stack(frames), fps=info["fps"], source_fps=info["source_fps"])


def _declared_duration(container, stream) -> float | None:
    """The duration (seconds) the stream's header declares, else its Matroska ``DURATION``
    tag, else the container's. Matroska and WebM keep no per-stream duration where PyAV
    reads it, and the container's is the longest stream's: a complete file whose sound
    outlasts its pictures would otherwise look truncated. ffmpeg's and mkvmerge's muxers tag
    each track ("HH:MM:SS.nnnnnnnnn"), and a cut file keeps the tag."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    tag = (stream.metadata or {}).get("DURATION")
    if tag:
        try:
            hours, minutes, seconds = tag.split(":")
            return 3600 * int(hours) + 60 * int(minutes) + float(seconds)
        except ValueError:  # not the muxers' format: use the container's
            pass
    if container.duration is not None:
        return container.duration / 1_000_000  # av.time_base
    return None


def require_uint8_frames(frames: Any, what: str = "frames") -> None:
    """Raises a ValueError for floating-point frames: cast to uint8, 0..1 values are black
    (integer arrays, as ``rng.integers`` makes them, pass)."""
    dtype = np.asarray(frames).dtype
    if np.issubdtype(dtype, np.floating):
        raise ValueError(
            f"{what} must be uint8 (0..255), got {dtype}; for 0..1 floats: "
            f"(frames * 255).round().astype(np.uint8)"
        )


def encode_video(
    path: str,
    frames: np.ndarray,
    fps: float,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
) -> str:
    """Writes ``uint8 (T, H, W, 3)`` frames to ``path``; the container follows the extension.

    Used by the tests and the data benchmark to make real files in any ffmpeg codec.

    >>> encode_video("/tmp/a.webm", frames, fps=30, codec="libvpx-vp9")
    """
    import fractions

    import av

    require_uint8_frames(frames)
    frames = np.asarray(frames, np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got shape {frames.shape}")
    rate = fractions.Fraction(fps).limit_denominator(1001)
    with av.open(path, mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = pix_fmt
        if options:
            stream.options = dict(options)
        for image in frames:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    """One ``uint8 (H, W, 3)`` RGB frame as JPEG bytes (OpenCV, libjpeg-turbo)."""
    import cv2

    ok, buffer = cv2.imencode(".jpg", frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"JPEG encoding failed for a frame of shape {frame.shape}")
    return buffer.tobytes()


def decode_jpegs(images: Sequence[bytes]) -> np.ndarray:
    """JPEG bytes -> RGB ``uint8 (N, H, W, 3)`` (all images must share one size)."""
    import cv2

    return np.stack(
        [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR_RGB) for b in images]
    )
