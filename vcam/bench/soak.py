"""`vcam bench soak`: the real-time pipeline left running for minutes, watched for leaks.

The demo input (live, paced at 30 frames/s) drives the built-in avatar (the astronaut
enrolled feed-forward with the shipped model, or ``--model``) through the whole pipeline to
an mp4 file in a temporary folder, as ``vcam run --input demo --sink file:...`` does with a
camera's pace. Every minute the process's resident memory and the frames/s of that minute
are sampled. The goals: memory growth from the first to the last sample under 5 %, and
frames/s steady (each minute within 10 % of the mean).
"""

from __future__ import annotations

import dataclasses
import os
import resource
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vcam.bench.pipeline import bench_avatar
from vcam.landmarks.detector import create_detector
from vcam.models.store import default_model_path, load_models
from vcam.runtime.avatars import AvatarLibrary, RendererSettings
from vcam.runtime.compositor import CompositorSettings
from vcam.runtime.demo import DemoAnimation, DemoSource
from vcam.runtime.file_sink import FileSink
from vcam.runtime.frames import Frame
from vcam.runtime.pipeline import Pipeline, PipelineSettings
from vcam.runtime.stats import StatsSnapshot

SOAK_FPS = 30.0
GOAL_MEMORY_GROWTH_PERCENT = 5.0
GOAL_FPS_SPREAD_PERCENT = 10.0


@dataclass(frozen=True)
class SoakSample:
    """One minute: frames output so far, frames/s over that minute, resident memory."""

    minute: int
    frames: int
    frames_per_second: float
    rss_mb: float


class FrameCounter:
    """A sink that only counts the frames it is sent (read by the sampler)."""

    name = "counter"
    steady = False

    def __init__(self) -> None:
        self.frames = 0

    def __enter__(self) -> FrameCounter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def check(self) -> None:
        return None

    def send(self, canvas: np.ndarray, frame: Frame, stats: StatsSnapshot) -> None:
        self.frames += 1


def resident_mb() -> float:
    """This process's resident memory now (Linux: /proc; elsewhere the peak so far)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def sample_minutes(minutes: int, seconds_per_sample: float, counter: FrameCounter,
                   stop: threading.Event, samples: list[SoakSample]) -> None:
    """Append a sample at the end of each minute, then stop the pipeline."""
    started = last_time = time.monotonic()
    last_frames = 0
    for minute in range(1, minutes + 1):
        if stop.wait(max(0.0, started + minute * seconds_per_sample - time.monotonic())):
            return  # the pipeline ended by itself
        now, frames = time.monotonic(), counter.frames
        samples.append(SoakSample(minute, frames, (frames - last_frames) / (now - last_time),
                                  resident_mb()))
        last_time, last_frames = now, frames
    stop.set()


def run_soak(minutes: int, model: Path | None = None, backend: str = "auto",
             threads: int | None = None, output_size: tuple[int, int] = (1280, 720),
             seconds_per_sample: float = 60.0) -> dict:
    """Run the pipeline for ``minutes`` (a sample every ``seconds_per_sample``)."""
    threads = threads or max(1, (os.cpu_count() or 2) - 1)
    model_path = model or default_model_path()
    detector = create_detector("dlib")
    models = load_models(model_path)
    samples: list[SoakSample] = []
    with tempfile.TemporaryDirectory(prefix="vcam-soak-") as scratch:
        # Compiled forms go to the scratch folder too: nothing is left in the user's home.
        entry = dataclasses.replace(bench_avatar(models, detector, Path(scratch)),
                                    compiled_dir=Path(scratch) / "compiled")
        del models, detector  # only the pipeline's own memory is watched
        with AvatarLibrary([entry], RendererSettings(backend, threads)) as library:
            width, height = output_size
            neutral = entry.avatar.neutral_landmarks
            source = DemoSource(DemoAnimation(neutral, entry.avatar.config.image_size),
                                SOAK_FPS)
            counter = FrameCounter()
            sinks = [FileSink(Path(scratch) / "soak.mp4", width, height, SOAK_FPS), counter]
            settings = PipelineSettings(fps=SOAK_FPS, log_every=0,
                                        compositor=CompositorSettings(width, height))
            pipeline = Pipeline(source, library, sinks, settings, None, driver_neutral=neutral)
            sampler = threading.Thread(
                target=sample_minutes, name="soak-sampler", daemon=True,
                args=(minutes, seconds_per_sample, counter, pipeline.stop, samples))
            sampler.start()
            summary = pipeline.run()
            pipeline.stop.set()
            sampler.join()
            backend_name = library.describe()[0]["name"]
    return soak_report(samples) | {
        "minutes": minutes, "model": str(model_path), "backend": backend_name,
        "threads": threads, "cpu_count": os.cpu_count(), "ended_by": summary.reason,
        "output_size": f"{width}x{height}", "input": f"demo, live at {SOAK_FPS:.0f} frames/s",
        "dropped": summary.dropped}


def soak_report(samples: list[SoakSample]) -> dict:
    """The samples, memory growth (first to last) and the spread of frames/s."""
    if not samples:
        return {"samples": [], "memory_growth_percent": None, "fps_spread_percent": None,
                "meets_memory_goal": False, "meets_fps_goal": False}
    rss = [sample.rss_mb for sample in samples]
    fps = [sample.frames_per_second for sample in samples]
    growth = (rss[-1] - rss[0]) / rss[0] * 100
    mean = float(np.mean(fps))
    spread = (max(fps) - min(fps)) / 2 / mean * 100 if mean > 0 else float("inf")
    return {"samples": [asdict(sample) for sample in samples],
            "memory_growth_percent": growth, "fps_mean": mean, "fps_spread_percent": spread,
            "meets_memory_goal": growth < GOAL_MEMORY_GROWTH_PERCENT,
            "meets_fps_goal": spread <= GOAL_FPS_SPREAD_PERCENT}


def soak_lines(report: dict) -> list[str]:
    """The report for people: a table of the minutes, then the verdicts."""
    lines = [f"soak: {report['minutes']} min, {report['input']} -> {report['output_size']} mp4, "
             f"{report['backend']} backend, {report['threads']} thread(s), "
             f"{report['cpu_count']} cores; ended by: {report['ended_by']}",
             "minute  frames/s  RSS MB  growth %"]
    samples = report["samples"]
    for sample in samples:
        growth = (sample["rss_mb"] - samples[0]["rss_mb"]) / samples[0]["rss_mb"] * 100
        lines.append(f"{sample['minute']:>6}  {sample['frames_per_second']:>8.1f}  "
                     f"{sample['rss_mb']:>6.0f}  {growth:>+8.1f}")
    if not samples:
        return [*lines, "no minute completed: nothing to report"]
    verdict = {True: "met", False: "NOT met"}
    lines.append(
        f"memory growth {report['memory_growth_percent']:+.1f} % (goal < "
        f"{GOAL_MEMORY_GROWTH_PERCENT:.0f} %: {verdict[report['meets_memory_goal']]}); "
        f"frames/s {report['fps_mean']:.1f} +- {report['fps_spread_percent']:.1f} % (goal "
        f"within {GOAL_FPS_SPREAD_PERCENT:.0f} %: {verdict[report['meets_fps_goal']]}); "
        f"{report['dropped']} frames dropped")
    return lines
