"""`vcam bench train`: seconds per meta-learning step and peak memory."""

from __future__ import annotations

import dataclasses
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from vcam.data.clips import open_dataset
from vcam.data.preprocess import PreprocessSettings, run_preprocess
from vcam.data.synthetic import moving_face_frames, write_video
from vcam.models.config import get_config
from vcam.models.store import MetaModels
from vcam.train.episodes import Split
from vcam.train.meta import MetaSettings, MetaTrainer
from vcam.train.run import RunPlan, episodes_for


def synthetic_dataset(folder: Path, size: int) -> Path:
    """Two preprocessed synthetic clips of the astronaut at ``size`` px."""
    videos = folder / "videos"
    videos.mkdir(parents=True)
    for index in range(2):
        write_video(str(videos / f"clip{index}.mp4"),
                    moving_face_frames(12, 640, 480, face_size=150 + 20 * index))
    run_preprocess([videos], folder / "dataset", PreprocessSettings(size=size))
    return folder / "dataset"


def peak_rss_mb() -> float:
    """The process's peak resident memory so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def bench_steps(trainer: MetaTrainer, episodes, steps: int) -> tuple[list[float], list[float]]:
    """Seconds of each training step and of drawing its batch (the first step warms up)."""
    times, draws = [], []
    for step in range(steps + 1):
        started = time.perf_counter()
        batch = episodes.draw(step)
        draws.append(time.perf_counter() - started)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        trainer.step(batch)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return times[1:], draws[1:]


def run_train_bench(config_name: str, steps: int, settings: MetaSettings,
                    device: str, data: Path | None = None, generator: str = "direct") -> dict:
    config = dataclasses.replace(get_config(config_name), generator=generator)
    with tempfile.TemporaryDirectory() as scratch:
        root = data if data is not None else synthetic_dataset(Path(scratch), config.image_size)
        clips = open_dataset(root).clips
        target = torch.device(device)
        torch.manual_seed(0)
        models = MetaModels(config, len(clips)).to(target).train()
        trainer = MetaTrainer(models, settings, target)
        plan = RunPlan(config, settings, Split((), ()), (), str(root))
        episodes = episodes_for(plan, clips)
        baseline = peak_rss_mb()
        if target.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times, draws = bench_steps(trainer, episodes, steps)
    report = {"config": config_name, "device": describe_device(target),
              "batch": settings.batch, "shots": settings.shots, "steps": steps,
              "identity_loss": settings.identity_loss, "vgg_loss": bool(settings.vgg_weights),
              "seconds_per_step_median": statistics.median(times),
              "seconds_per_step_mean": statistics.fmean(times),
              "seconds_per_sample": statistics.fmean(times) / settings.batch,
              "draw_seconds_per_sample": statistics.median(draws) / settings.batch,
              "episodes": settings.episodes, "generator": generator,
              "identity_every": settings.identity_every,
              "peak_rss_mb": peak_rss_mb(), "rss_before_steps_mb": baseline,
              "threads": torch.get_num_threads()}
    if target.type == "cuda":
        report["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / (1 << 20)
    return report


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"
