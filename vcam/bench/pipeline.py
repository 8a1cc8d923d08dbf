"""`vcam bench pipeline`: frames/s and capture-to-sink latency of the whole real-time loop.

A 640x480 synthetic clip (the astronaut drifting, zooming and tilting), or the first frames of
the user's own recording (``clip``, scaled down to fit 640x480), drives the astronaut enrolled
feed-forward, with the given model or a freshly initialised one of the chosen config (speed
does not depend on what the weights learned), composed as `vcam run` does (paste-back into the
photo by default) and written by the H.264 file sink. Two runs:

* ``file``: the clip as a file input (lossless: every frame rendered, as fast as possible):
  throughput;
* ``live``: the same frames replayed in real time at the clip's rate as a camera would deliver
  them (latest frame wins; slow stages drop frames): frames/s at the sink, latency, drops.

Latency is from the moment a frame is captured to the moment the sinks have it. On a shared
CPU the figures move with the other load; the load average is reported alongside.

A warp-guided avatar runs its network only on frames whose mouth opens beyond its enrollment
photo's, the others show the warp: the synthetic astronaut never opens its mouth, so its run is
the best case. Each run reports on how many frames the network ran (painted), counted by the
render stage; a recording of someone talking shows the share a call would have.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch

from vcam.avatar import SUFFIX, load_avatar, save_avatar
from vcam.data.synthetic import astronaut, moving_face_frames, write_video
from vcam.enroll import Photo, enroll
from vcam.errors import UserError
from vcam.landmarks.detector import create_detector
from vcam.landmarks.tracker import FaceTracker
from vcam.models.config import get_config
from vcam.models.store import MetaModels, load_models
from vcam.runtime.avatars import AvatarEntry, AvatarLibrary, RendererSettings
from vcam.runtime.capture import Captured, VideoFileSource
from vcam.runtime.compositor import CompositorSettings
from vcam.runtime.file_sink import FileSink
from vcam.runtime.frames import FaceState
from vcam.runtime.pipeline import Pipeline, PipelineSettings, RunSummary
from vcam.train.finetune import FineTuneSettings

CLIP_SIZE = (640, 480)
CLIP_FPS = 30.0
# The live run's goals: frames/s out at a 30 frames/s input, dropped frames per 100 captured,
# median capture-to-sink latency in frame intervals.
GOAL_FPS = 29.5
GOAL_DROPS_PER_100 = 1.0
GOAL_LATENCY_INTERVALS = 2.0


def fit_within(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` scaled down (aspect kept, even sides) to fit ``size`` (width, height); as it
    is when it already fits."""
    height, width = image.shape[:2]
    scale = min(size[0] / width, size[1] / height)
    if scale >= 1:
        return image
    fitted = (max(2, round(width * scale) // 2 * 2), max(2, round(height * scale) // 2 * 2))
    return cv2.resize(image, fitted, interpolation=cv2.INTER_AREA)


def recorded_frames(path: Path, count: int, size: tuple[int, int] = CLIP_SIZE
                    ) -> list[np.ndarray]:
    """The first ``count`` RGB frames (or all, if fewer) of the video at ``path``, each
    scaled down to fit ``size``; a one-line ``UserError`` for a missing file or one with no
    frame that decodes."""
    if not path.is_file():
        raise UserError(f"--clip {path} does not exist: pass a video file, e.g. a recording "
                        "of yourself talking")
    try:
        with VideoFileSource(path) as source:
            frames = [fit_within(item.image, size)
                      for _, item in zip(range(count), source.frames(threading.Event()))]
    except UserError:
        frames = []
    if not frames:
        raise UserError(f"--clip {path} has no frame that can be decoded: pass a video file "
                        "such as an .mp4 that a player opens")
    return frames


class ReplaySource:
    """Frames replayed in real time at ``fps``, like a camera (live: stale frames drop)."""

    live = True

    def __init__(self, images: list[np.ndarray], fps: float) -> None:
        self.images = images
        self.fps = fps

    def __enter__(self) -> ReplaySource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def frames(self, stop: threading.Event) -> Iterator[Captured]:
        started = time.perf_counter()
        for index, image in enumerate(self.images):
            delay = started + index / self.fps - time.perf_counter()
            if delay > 0 and stop.wait(delay):
                return
            yield Captured(image=image)


def bench_models(config_name: str, generator: str, model: Path | None) -> MetaModels:
    """The given model, or a seeded random one of ``config_name`` with ``generator``."""
    if model is not None:
        return load_models(model, discriminator=False)
    torch.manual_seed(0)
    config = dataclasses.replace(get_config(config_name), generator=generator)
    return MetaModels(config, None).eval()


def bench_avatar(models: MetaModels, detector, folder: Path) -> AvatarEntry:
    """The astronaut enrolled feed-forward, saved as a bundle (so the backend sees a real
    avatar file, as `vcam run` would) and loaded back."""
    avatar, _ = enroll([Photo("astronaut", astronaut())], "bench", models, detector,
                       FineTuneSettings())
    path = save_avatar(avatar, folder / f"bench{SUFFIX}")
    return AvatarEntry(load_avatar(path), path)


def run_once(source, library: AvatarLibrary, detector, out: Path,
             output_size: tuple[int, int], layout: str) -> dict:
    """One run's figures, with the CPU time this process used per frame output (all its
    threads: a figure that, unlike frames/s, hardly moves with other load on the machine)."""
    width, height = output_size
    settings = PipelineSettings(fps=CLIP_FPS, log_every=0,
                                compositor=CompositorSettings(width, height, layout=layout))
    sink = FileSink(out, width, height, CLIP_FPS)
    cpu_before = time.process_time()
    summary = Pipeline(source, library, [sink], settings, FaceTracker(detector)).run()
    cpu_ms = (time.process_time() - cpu_before) * 1000 / max(summary.frames_output, 1)
    return figures(summary) | {"cpu_ms_per_frame": cpu_ms}


def figures(summary: RunSummary) -> dict:
    interval_ms = 1000 / CLIP_FPS
    return {"frames_captured": summary.frames_captured, "frames_output": summary.frames_output,
            "dropped": summary.dropped, "frames_per_second": summary.fps,
            "dropped_per_100": 100 * summary.dropped / max(summary.frames_captured, 1),
            "latency_median_ms": summary.latency_median_ms,
            "latency_p95_ms": summary.latency_p95_ms,
            "latency_median_frame_intervals": summary.latency_median_ms / interval_ms,
            "stage_ms": summary.stage_ms, "frames_rendered": summary.frames_rendered,
            "frames_painted": summary.frames_painted, "frames_reused": summary.frames_reused,
            "painted_percent": 100 * summary.frames_painted / max(summary.frames_rendered, 1),
            "frames_tracked": summary.face_states.get(FaceState.TRACKING.value, 0)}


def run_pipeline_bench(config_name: str = "cpu", frames: int = 150, backend: str = "auto",
                       threads: int | None = None,
                       output_size: tuple[int, int] = (1280, 720), generator: str = "direct",
                       model: Path | None = None, layout: str = "paste",
                       precision: str = "fp32", clip: Path | None = None) -> dict:
    """Throughput (file input) and real-time behaviour (live replay) of the pipeline, with
    ``model`` (e.g. the shipped one) or a random model of ``config_name``, in ``layout``,
    rendering in ``precision``, driven by the synthetic clip or by the first ``frames`` frames
    of the recording ``clip``."""
    clip_frames = (list(moving_face_frames(frames, *CLIP_SIZE)) if clip is None
                   else recorded_frames(clip, frames))
    threads = threads or max(1, (os.cpu_count() or 2) - 1)
    detector = create_detector("dlib")
    models = bench_models(config_name, generator, model)
    with tempfile.TemporaryDirectory() as scratch:
        entry = bench_avatar(models, detector, Path(scratch))
        renderer = RendererSettings(backend, threads, precision=precision)
        with AvatarLibrary([entry], renderer) as library:
            return bench_runs(library, detector, clip_frames, Path(scratch), output_size,
                              layout) | {
                "config": str(model) if model else config_name,
                "generator": models.config.generator, "threads": threads,
                "cpu_count": os.cpu_count(),
                "clip": clip_description(clip, clip_frames),
                "output_size": f"{output_size[0]}x{output_size[1]}", "layout": layout,
                "precision": precision}


def clip_description(clip: Path | None, clip_frames: list[np.ndarray]) -> str:
    height, width = clip_frames[0].shape[:2]
    source = "synthetic astronaut" if clip is None else str(clip)
    return (f"{source} ({width}x{height}, {len(clip_frames)} frames at {CLIP_FPS:.0f} "
            "frames/s) driving the astronaut avatar")


def bench_runs(library: AvatarLibrary, detector, clip_frames: list[np.ndarray],
               scratch: Path, output_size: tuple[int, int], layout: str) -> dict:
    """The file run and the live run, and whether the live run meets the goals."""
    clip = scratch / "clip.mp4"
    write_video(str(clip), iter(clip_frames), fps=CLIP_FPS)
    load_before = os.getloadavg()[0]
    file_run = run_once(VideoFileSource(clip), library, detector, scratch / "file.mp4",
                        output_size, layout)
    live_run = run_once(ReplaySource(clip_frames, CLIP_FPS), library, detector,
                        scratch / "live.mp4", output_size, layout)
    return {"backend": library.describe()[0]["name"],
            "load_average_1min": [load_before, os.getloadavg()[0]],
            "file": file_run, "live": live_run,
            "meets_fps_goal": live_run["frames_per_second"] >= GOAL_FPS,
            "meets_drop_goal": live_run["dropped_per_100"] <= GOAL_DROPS_PER_100,
            "meets_latency_goal":
                live_run["latency_median_frame_intervals"] <= GOAL_LATENCY_INTERVALS}


def pipeline_bench_lines(report: dict) -> list[str]:
    """The report for people."""
    lines = [f"pipeline, {report['config']} config, {report['backend']} backend, "
             f"{report['threads']} inference thread(s), {report['cpu_count']} cores "
             f"(load average {report['load_average_1min'][0]:.1f} -> "
             f"{report['load_average_1min'][1]:.1f}: the CPU may be shared)",
             f"input: {report['clip']}; output {report['output_size']} ({report['layout']} "
             f"layout) to an H.264 file; rendering in {report['precision']}"]
    titles = (("file", "file input, every frame (latency includes waiting in the lossless "
                        "hand-offs)"),
              ("live", f"live replay at {CLIP_FPS:.0f}/s"))
    for mode, title in titles:
        run = report[mode]
        stages = ", ".join(f"{name} {ms:.1f}" for name, ms in run["stage_ms"].items())
        lines += [f"{title}: {run['frames_per_second']:.1f} frames/s, latency "
                  f"{run['latency_median_ms']:.0f} ms median "
                  f"({run['latency_median_frame_intervals']:.1f} frame intervals), "
                  f"{run['latency_p95_ms']:.0f} ms p95, {run['frames_output']} of "
                  f"{run['frames_captured']} frames output, {run['dropped']} dropped",
                  f"  median ms per frame: {stages}; CPU {run['cpu_ms_per_frame']:.1f} ms per "
                  "frame output (all threads)",
                  f"  painted {run['frames_painted']} of {run['frames_rendered']} frames "
                  f"rendered ({run['painted_percent']:.0f}%: the network ran on these, "
                  f"{run['frames_reused']} more showed its last painting warped, the rest "
                  f"showed the warp); face tracked on {run['frames_tracked']} of "
                  f"{run['frames_output']} frames output"]
    lines.append(f"goals (live): >= {GOAL_FPS} frames/s "
                 f"{'met' if report['meets_fps_goal'] else 'NOT met'}, <= "
                 f"{GOAL_DROPS_PER_100:.0f} dropped per 100 frames "
                 f"{'met' if report['meets_drop_goal'] else 'NOT met'}, latency <= "
                 f"{GOAL_LATENCY_INTERVALS:.0f} frame intervals "
                 f"{'met' if report['meets_latency_goal'] else 'NOT met'}")
    if report["backend"] == "torch":
        lines.append("note: the torch backend needs Python's lock between operations, which "
                     "the landmark stage (dlib) holds while it works; a compiled avatar "
                     "(ONNX Runtime) renders without it")
    return lines
