"""`vcam bench landmarks`: landmark cost per 640x480 frame, detected vs tracked, and
preprocessing throughput."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from vcam.data.preprocess import PreprocessSettings, run_preprocess
from vcam.data.sources import find_clips
from vcam.data.synthetic import moving_face_frames, write_video
from vcam.landmarks.detector import create_detector
from vcam.landmarks.tracker import FaceTracker


def timed_per_frame(frames: list[np.ndarray], step) -> tuple[list[float], int]:
    """Milliseconds ``step(frame, index)`` takes on each frame, and how many found a face."""
    times, found = [], 0
    for index, frame in enumerate(frames):
        started = time.perf_counter()
        found += step(frame, index) is not None
        times.append((time.perf_counter() - started) * 1000)
    return times, found


def describe(times: list[float]) -> dict:
    ordered = sorted(times)
    return {"mean_ms": statistics.fmean(times), "median_ms": statistics.median(times),
            "p95_ms": ordered[int(0.95 * (len(ordered) - 1))]}


def bench_frames(backend: str, count: int) -> dict:
    frames = list(moving_face_frames(count))
    detector = create_detector(backend)
    detector.detect(frames[0])  # warm up
    detect_times, detect_found = timed_per_frame(
        frames, lambda frame, _: (detector.detect(frame) or [None])[0])
    tracker = FaceTracker(detector)
    track_times, track_found = timed_per_frame(
        frames, lambda frame, index: tracker.update(frame, index / 30))
    return {"frames": count, "frame_size": "640x480", "backend": backend,
            "detect_every_frame": describe(detect_times) | {"faces_found": detect_found},
            "tracked": describe(track_times) | {"faces_found": track_found,
                                                "detections": tracker.detections}}


def bench_preprocess(data: Path | None, clips: int, workers: int) -> dict:
    """Preprocess up to ``clips`` clips (the shared corpus when given, else synthetic ones)
    into a temporary folder and report frames per second."""
    with tempfile.TemporaryDirectory() as scratch:
        if data is not None and data.exists():
            found = [source.path for source in find_clips([data])]
            sources = found[::max(1, len(found) // clips)][:clips]  # spread over the corpus
            origin = str(data)
        else:
            sources = synthetic_clips(Path(scratch) / "clips", clips)
            origin = "synthetic astronaut clips"
        summary = run_preprocess(sources, Path(scratch) / "out", PreprocessSettings(),
                                 workers=workers)
    return {"source": origin, "clips": len(sources), "workers": workers,
            "frames_kept": summary.frames_kept, "frames_dropped": summary.frames_dropped,
            "seconds": summary.seconds, "frames_per_second": summary.frames_per_second}


def synthetic_clips(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for index in range(count):
        path = folder / f"clip{index}.mp4"
        write_video(str(path), moving_face_frames(100, 320, 240, face_size=90))
        paths.append(path)
    return paths


def run_landmark_bench(backend: str = "dlib", frames: int = 150, data: Path | None = None,
                       clips: int = 12, workers: int | None = None) -> dict:
    workers = workers or os.cpu_count() or 1
    return {"per_frame": bench_frames(backend, frames),
            "preprocess": bench_preprocess(data, clips, workers)}
