"""Frame comparisons and latency statistics shared by export checks and benchmarks."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Frames are in [-1, 1].
FRAME_DATA_RANGE = 2.0


def psnr(candidate: np.ndarray, reference: np.ndarray,
         data_range: float = FRAME_DATA_RANGE) -> float:
    """Peak signal-to-noise ratio in dB over all pixels (``inf`` for identical arrays); the
    candidate first, like ``vcam.eval.metrics.psnr(rendered, real)``."""
    if reference.shape != candidate.shape:
        raise ValueError(f"shapes differ: {candidate.shape} vs {reference.shape}")
    error = np.mean((np.asarray(candidate, np.float64) - np.asarray(reference, np.float64)) ** 2)
    return math.inf if error == 0 else float(10 * np.log10(data_range ** 2 / error))


def max_abs_diff(candidate: np.ndarray, reference: np.ndarray) -> float:
    if reference.shape != candidate.shape:
        raise ValueError(f"shapes differ: {candidate.shape} vs {reference.shape}")
    return float(np.max(np.abs(reference.astype(np.float64) - candidate.astype(np.float64))))


@dataclass(frozen=True)
class LatencyStats:
    """Per-call latency in milliseconds over ``samples`` timed calls."""

    median_ms: float
    p95_ms: float
    samples: int


def measure_latency(call: Callable[[], object], repeats: int, warmup: int = 3) -> LatencyStats:
    """Time ``call`` ``repeats`` times after ``warmup`` untimed calls."""
    if repeats <= 0:
        raise ValueError("repeats must be positive")
    for _ in range(warmup):
        call()
    timings = np.empty(repeats)
    for index in range(repeats):
        start = time.perf_counter()
        call()
        timings[index] = (time.perf_counter() - start) * 1000
    return LatencyStats(float(np.median(timings)), float(np.percentile(timings, 95)), repeats)


def best_of_rounds(calls: dict[str, Callable[[], object]], rounds: int,
                   repeats: int) -> dict[str, LatencyStats]:
    """Interleave ``rounds`` timing rounds over several calls and keep, for each, the round
    with the lowest median: on a shared CPU this removes most interference from other work."""
    best: dict[str, LatencyStats] = {}
    for _ in range(rounds):
        for name, call in calls.items():
            stats = measure_latency(call, repeats)
            if name not in best or stats.median_ms < best[name].median_ms:
                best[name] = stats
    return best
