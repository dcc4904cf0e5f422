"""``vjax bench data``: how fast the training input pipeline makes clips on CPU.

In one run, on the same source videos (H.264 mp4, 360x480 like much of Kinetics, generated
unless ``--src`` names a folder of videos):

* **pipeline**: the trainer's batches (``TrainBatches`` of 8 clips with the training
  transform: random clip of ``--num_frames`` with stride, random resized crop to ``--crop``,
  flip) over a prepared ``video_folder`` dataset (ArrayRecord of 256-short-side JPEG frames,
  read through ``as_data_source``), in one process: frames/s per core. Only the frames a clip
  needs are decoded.
* **plain PyAV**: one random clip per source file decoded with PyAV, one video after another,
  as PyTorch video loaders do (seek to the keyframe before the clip, decode to its end, the
  clip's span to RGB): decoded frames/s and clip frames/s per core, and the pipeline's ratio
  to each.
* **workers**: clips/s of the trainer's loader (``input.num_workers``: ``ProcessMap``)
  with 1 and 2 (``--workers``) processes.

Prints a table and writes it as the ``vjax bench data`` section of ``BENCHMARKS.md`` (other
sections are kept). ``--tiny`` runs a seconds-long version (for tests).

    vjax bench data                     # 8 generated 10 s videos, 16x224x224 clips
    vjax bench data --src=~/videos --clips=400 --workers=1,2,4
    vjax bench data --keyframe_interval=50    # a keyframe every 2 s: PyAV's seek skips more
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from vjax.bench import update_benchmarks
from vjax.errors import (
    ArgumentParser,
    non_negative_int,
    optional_output_file,
    positive_float,
    positive_int,
)

SECTION = "vjax bench data"
BATCH = 8  # clips per batch of the measured loader
# ``--tiny``'s defaults: a seconds-long run (tests).
TINY = dict(videos=2, seconds=1.0, fps=10, clips=BATCH, short_side=32, height=36, width=48,
            num_frames=4, crop=24)  # fmt: skip


def _synthetic_frames(rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
    """A drifting smooth colour pattern with a moving bright square and mild noise: content
    that compresses like real footage (neither flat nor pure noise)."""
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    freq = rng.uniform(1, 4, size=(1, 1, 3)).astype(np.float32)
    frames = np.empty((n, height, width, 3), np.uint8)
    for t in range(n):
        phase = np.float32(0.05 * t)
        img = 110 + 80 * np.sin(2 * np.pi * (freq * x + phase) + 3 * freq * y)
        side = max(2, min(height, width) // 6)
        cy, cx = (t * 3) % (height - side), (t * 5) % (width - side)
        img[cy : cy + side, cx : cx + side] = 240
        img += rng.normal(0, 4, size=(height, width, 1)).astype(np.float32)
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


def make_sources(
    folder: str,
    count: int,
    seconds: float,
    fps: int,
    size: tuple[int, int],
    keyframe_interval: int | None = None,
) -> str:
    """Writes ``count`` H.264 mp4s under ``folder/bench/`` and returns ``folder``; a keyframe
    every ``keyframe_interval`` frames (None: libx264's default, 250)."""
    from vjax.data.video_io import encode_video

    options = {"g": str(keyframe_interval)} if keyframe_interval else None
    os.makedirs(os.path.join(folder, "bench"), exist_ok=True)
    for i in range(count):
        frames = _synthetic_frames(np.random.default_rng(i), round(seconds * fps), *size)
        encode_video(os.path.join(folder, "bench", f"{i}.mp4"), frames, fps, options=options)
    return folder


def pyav_clip(container: Any, first: int, num_frames: int, stride: int) -> tuple[list, int]:
    """The clip of ``num_frames`` frames ``first, first + stride, ...`` of ``container``'s video
    read as PyTorch video loaders read it (torchvision's ``read_video``, PyTorchVideo's
    ``EncodedVideoPyAV``): seek to the keyframe at or before ``first``, decode up to the
    clip's last frame, convert the frames of its span to RGB arrays and keep every
    ``stride``-th. Returns the clip's RGB arrays and how many frames were decoded."""
    stream = container.streams.video[0]
    origin, rate = stream.start_time or 0, stream.average_rate
    last = first + (num_frames - 1) * stride
    container.seek(origin + int(first / rate / stream.time_base), stream=stream)
    clip, decoded = [], 0
    for frame in container.decode(stream):
        decoded += 1
        index = round((frame.pts - origin) * stream.time_base * rate)
        if index < first:  # between the keyframe and the clip: decoded, not kept
            continue
        rgb = frame.to_ndarray(format="rgb24")
        if (index - first) % stride == 0:
            clip.append(rgb)
        if index >= last:
            break
    return clip, decoded


def plain_pyav(paths: Sequence[str], num_frames: int, stride: int) -> tuple[float, float, int]:
    """:func:`pyav_clip` of one random clip per file, one decoder thread (the per-core rate).
    Returns ``(decoded frames, clip frames)`` per CPU-second, and the frames in the files."""
    import av

    decoded = delivered = total = 0
    rng = np.random.default_rng(0)
    span = (num_frames - 1) * stride + 1
    start = cpu_seconds()
    for path in paths:
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            length = stream.frames or 0
            first = int(rng.integers(0, max(length - span, 0) + 1))
            clip, count = pyav_clip(container, first, num_frames, stride)
            decoded, delivered, total = decoded + count, delivered + len(clip), total + length
    seconds = cpu_seconds() - start
    return decoded / seconds, delivered / seconds, total


def bench_batches(
    data_dir: str, src: str, short_side: int, options_kw: dict, batch_size: int
) -> Callable[[int], dict]:
    """The trainer's batch function (:class:`~vjax.data.pipeline.TrainBatches` with the train
    transform) over the prepared benchmark dataset; OpenCV on one thread (the per-core rate)."""
    import cv2

    from vjax.data.pipeline import TrainBatches
    from vjax.data.transforms import InputOptions, make_train_transform
    from vjax.data.video_builder import prepare_video_folder

    cv2.setNumThreads(1)
    builder = prepare_video_folder(data_dir, src=src, short_side=short_side, num_workers=1)
    names = builder.info.features["label"].names
    transform = make_train_transform(InputOptions(**options_kw), names)
    return TrainBatches(builder.as_data_source("train"), batch_size, 0, transform=transform)


def cpu_seconds() -> float:
    """CPU time (user + system, all threads) this process has used: a per-core rate measured
    with it does not depend on what else the machine runs."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pipeline_frames_per_cpu_s(clips: int, batch_args: tuple) -> float:
    """Clip frames per CPU-second of the trainer's batches, in this process (after a warm-up
    batch: first reads and imports)."""
    batches = bench_batches(*batch_args)
    batches(1 << 20)
    steps = range(max(clips // BATCH, 1))
    start = cpu_seconds()
    frames = sum(int(np.prod(batches(step)["video"].shape[:2])) for step in steps)
    return frames / (cpu_seconds() - start)


def pipeline_clips_per_s(workers: int, clips: int, batch_args: tuple) -> float:
    """Wall-clock clips/s of the trainer's loader with ``workers`` processes
    (:class:`~vjax.data.pipeline.ProcessMap`), steps asked for in order, after each
    worker has made its first batch."""
    from vjax.data.pipeline import ProcessMap

    batches = ProcessMap(functools.partial(bench_batches, *batch_args), workers)
    try:
        for step in range(workers):  # start-up: every worker imports and opens the data
            batches(step)
        steps = range(workers, workers + max(clips // BATCH, 1))
        start = time.perf_counter()
        for step in steps:
            batches(step)
        return len(steps) * BATCH / (time.perf_counter() - start)
    finally:
        batches.close()


def format_table(rows: Sequence[tuple[str, str]], setup: str) -> str:
    """A Markdown table of (measurement, value) rows under a one-line set-up description."""
    width = max(len(name) for name, _ in rows)
    lines = [
        setup,
        "",
        f"| {'measurement'.ljust(width)} | value |",
        f"|{'-' * (width + 2)}|-------|",
    ]
    lines += [f"| {name.ljust(width)} | {value} |" for name, value in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> str:
    """Runs the benchmark and returns the Markdown table."""
    from vjax.data.video_builder import prepare_video_folder

    workers = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        src = args.src or make_sources(
            os.path.join(tmp, "src"),
            args.videos,
            args.seconds,
            args.fps,
            (args.height, args.width),
            args.keyframe_interval,
        )
        data_dir = os.path.join(tmp, "tfds")
        start = time.perf_counter()
        builder = prepare_video_folder(
            data_dir, src=src, short_side=args.short_side, num_workers=max(workers)
        )
        prepare_s = time.perf_counter() - start
        from vjax.data.manifests import read_entries

        paths = [e.path for e in read_entries(src)]
        pyav_fps, pyav_clip_fps, num_frames = plain_pyav(paths, args.num_frames, args.stride)
        options = dict(
            num_frames=args.num_frames, frame_stride=args.stride, crop_size=args.crop,
            train_crop="random_resized", flip=True,
        )  # fmt: skip
        batch_args = (data_dir, src, args.short_side, options, BATCH)
        per_core = pipeline_frames_per_cpu_s(args.clips, batch_args)
        results = {w: pipeline_clips_per_s(w, args.clips, batch_args) for w in workers}
        del builder
    rows = [
        (f"pipeline frames/s per core ({args.crop}x{args.crop} train clips)", f"{per_core:.0f}"),
        ("plain PyAV decoded frames/s per core (seek, decode, clip to rgb24)", f"{pyav_fps:.0f}"),
        ("plain PyAV clip frames/s per core (one clip per file)", f"{pyav_clip_fps:.0f}"),
        ("ratio pipeline / PyAV, clip frames", f"{per_core / pyav_clip_fps:.1f}x"),
        ("ratio pipeline / PyAV, decoded frames", f"{per_core / pyav_fps:.1f}x"),
    ]
    rows += [(f"clips/s, {w} worker{'s' * (w > 1)}", f"{results[w]:.1f}") for w in workers]
    if len(workers) > 1:
        scale = results[workers[-1]] / results[workers[0]]
        rows.append((f"scaling {workers[-1]} vs {workers[0]} workers", f"{scale:.2f}x"))
    rows.append(("prepare (decode + JPEG) videos/s, all workers", f"{len(paths) / prepare_s:.2f}"))
    keyframes = f"a keyframe every {args.keyframe_interval or 250} frames"
    source = (
        "user files"
        if args.src
        else f"generated H.264 {args.height}x{args.width} {args.fps} fps, {keyframes}"
    )
    cpu = platform.processor() or platform.machine()
    setup = (
        f"{len(paths)} source videos ({num_frames} frames in all, {source}) stored as "
        f"{f'{args.short_side}-short-side' if args.short_side else 'full-size'} JPEG frames;"
        f" clips of {args.num_frames} frames, stride {args.stride}, random resized crop to "
        f"{args.crop}, flip; {args.clips} clips per measurement; CPU: {cpu}, {os.cpu_count()} "
        f"cores, load average {os.getloadavg()[0]:.1f} at the end (per core = per CPU-second "
        f"of the measuring process; clips/s = wall clock, shared with that load). "
        f"Command: `vjax bench data {' '.join(args.argv)}`"
    )
    return format_table(rows, setup)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``vjax bench data``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = ArgumentParser(prog="vjax bench data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", default=None, help="folder of videos (default: generated)")
    parser.add_argument("--videos", type=positive_int, default=8)
    parser.add_argument("--seconds", type=positive_float, default=10.0)
    parser.add_argument("--fps", type=positive_int, default=25)
    parser.add_argument(
        "--short_side",
        type=non_negative_int,
        default=256,
        help="stored frames' short side (0: as decoded)",
    )
    parser.add_argument("--height", type=positive_int, default=360, help="generated videos' height")
    parser.add_argument("--width", type=positive_int, default=480, help="generated videos' width")
    parser.add_argument("--keyframe_interval", type=positive_int, default=None, help="generated "
                        "videos' frames per keyframe (default: libx264's 250)")  # fmt: skip
    parser.add_argument("--num_frames", type=positive_int, default=16)
    parser.add_argument("--stride", type=positive_int, default=2)
    parser.add_argument("--crop", type=positive_int, default=224)
    parser.add_argument("--clips", type=positive_int, default=200)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--out", type=optional_output_file, default="BENCHMARKS.md",
                        help="'' to write nothing")  # fmt: skip
    parser.add_argument("--tiny", action="store_true", help="seconds-long run (tests): small "
                        "defaults for the size flags")  # fmt: skip
    args = parser.parse_args(argv)
    counts = args.workers.split(",")
    if not all(c.strip().isdigit() and int(c) >= 1 for c in counts):
        parser.error(f"--workers takes loader process counts of 1 or more, got {args.workers!r}")
    if args.tiny:  # tiny sizes become the defaults: a size flag given with --tiny still wins
        parser.set_defaults(**TINY)
        args = parser.parse_args(argv)
    args.argv = argv
    table = run(args)
    print(table)
    if args.out:
        update_benchmarks(args.out, SECTION, table)
        print(f"\nwrote the '{SECTION}' section of {args.out}")
    return 0
