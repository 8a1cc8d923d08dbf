"""Live measurements: per-stage processing time, frames per second at the sinks,
capture-to-sink latency and dropped frames.

Each stage writes its own :class:`StageStats` from its own thread; readers (the preview
overlay, the periodic log line, the final summary) take a :class:`StatsSnapshot`. Recent
values are kept in fixed-length windows, so figures follow the present, not the average of
the whole run; totals cover the whole run. The "capture" time is how long the source took to
deliver a frame, which for a live camera includes waiting for its next frame.
"""

from __future__ import annotations

import statistics
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

WINDOW = 120
# The run summary's medians cover at most this many frames (about 11 minutes at 30/s), so a
# long call does not grow memory without bound.
RUN_WINDOW = 20_000
STAGES = ("capture", "landmarks", "render", "output")


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[round(fraction * (len(ordered) - 1))]


class StageStats:
    """Processing times (ms) of one stage's recent frames, and how many it handled."""

    def __init__(self, name: str, window: int = WINDOW) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._recent: deque[float] = deque(maxlen=window)
        self._all_ms: deque[float] = deque(maxlen=RUN_WINDOW)
        self.frames = 0

    def record(self, milliseconds: float) -> None:
        with self._lock:
            self._recent.append(milliseconds)
            self._all_ms.append(milliseconds)
            self.frames += 1

    def recent_median(self) -> float:
        with self._lock:
            values = list(self._recent)
        return statistics.median(values) if values else 0.0

    def run_median(self) -> float:
        with self._lock:
            values = list(self._all_ms)
        return statistics.median(values) if values else 0.0


class OutputStats:
    """When frames reached the sinks, and their capture-to-sink latency (ms)."""

    def __init__(self, window: int = WINDOW) -> None:
        self._lock = threading.Lock()
        self._times: deque[float] = deque(maxlen=window)
        self._recent_latency: deque[float] = deque(maxlen=window)
        self.latencies_ms: deque[float] = deque(maxlen=RUN_WINDOW)
        self.first: float | None = None
        self.last: float | None = None
        self.frames = 0

    def record(self, captured_at: float, delivered_at: float) -> None:
        latency = (delivered_at - captured_at) * 1000
        with self._lock:
            self._times.append(delivered_at)
            self._recent_latency.append(latency)
            self.latencies_ms.append(latency)
            self.first = delivered_at if self.first is None else self.first
            self.last = delivered_at
            self.frames += 1

    def recent_fps(self) -> float:
        with self._lock:
            times = list(self._times)
        if len(times) < 2 or times[-1] <= times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def recent_latency(self) -> tuple[float, float]:
        """Median and 95th percentile of recent latencies (ms)."""
        with self._lock:
            values = list(self._recent_latency)
        return (statistics.median(values) if values else 0.0), percentile(values, 0.95)


@dataclass(frozen=True)
class StatsSnapshot:
    """Figures for display and logs."""

    fps: float
    latency_median_ms: float
    latency_p95_ms: float
    stage_ms: dict[str, float]
    dropped: int
    frames: int

    def line(self) -> str:
        stages = ", ".join(f"{name} {ms:.1f}" for name, ms in self.stage_ms.items())
        return (f"{self.fps:.1f} frames/s, latency {self.latency_median_ms:.0f} ms "
                f"(p95 {self.latency_p95_ms:.0f}), dropped {self.dropped}; ms per stage: "
                f"{stages}")


@dataclass
class PipelineStats:
    """Every stage's stats, the sink-side stats, and a way to count dropped frames."""

    dropped_counter: Callable[[], int] = lambda: 0
    stages: dict[str, StageStats] = field(
        default_factory=lambda: {name: StageStats(name) for name in STAGES})
    output: OutputStats = field(default_factory=OutputStats)

    def snapshot(self) -> StatsSnapshot:
        median, p95 = self.output.recent_latency()
        return StatsSnapshot(self.output.recent_fps(), median, p95,
                             {name: stage.recent_median() for name, stage in self.stages.items()},
                             self.dropped_counter(), self.output.frames)
