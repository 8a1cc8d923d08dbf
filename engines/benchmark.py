"""Latency and quality comparisons between backends and between INT8 and FP32 models."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime

from calibration.ort_quantize import QuantisationOptions, quantise_static
from engines.backend import Backend
from engines.metrics import LatencyStats, best_of_rounds, psnr
from engines.onnx_model import INPUT_NAME, OUTPUT_NAME
from engines.onnxruntime_backend import CPU_PROVIDER, create_session


@dataclass(frozen=True)
class TimingSettings:
    """``rounds`` interleaved rounds of ``repeats`` timed frames; the best round is kept."""

    rounds: int = 3
    repeats: int = 20


@dataclass(frozen=True)
class Int8Comparison:
    """INT8 against FP32 for one ONNX model on this CPU (ms per frame, batch 1)."""

    fp32: LatencyStats
    int8: LatencyStats
    psnr_db: float
    images: int
    threads: int | None

    @property
    def speedup(self) -> float:
        return self.fp32.median_ms / self.int8.median_ms

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "speedup": self.speedup}


@dataclass(frozen=True)
class Int8Inputs:
    """The INT8 model to compare, or how to make one.

    Attributes:
        int8_path: an existing QDQ model; when None one is quantised from the FP32 model.
        calibration_images: the set to quantise with (defaults to the evaluation images).
        quantisation: settings for that quantisation.
    """

    int8_path: Path | None = None
    calibration_images: np.ndarray | None = None
    quantisation: QuantisationOptions = field(default_factory=QuantisationOptions)


def compare_int8_with_fp32(fp32_path: Path, images: np.ndarray,
                           int8: Int8Inputs = Int8Inputs(), threads: int | None = None,
                           timing: TimingSettings = TimingSettings()) -> Int8Comparison:
    """Median and p95 ms per frame of the FP32 and INT8 models on ONNX Runtime's CPU
    provider, and the PSNR (data range 2) of INT8 frames against FP32 frames on ``images``
    (float32 (K, 3, S, S) landmark images in [-1, 1])."""
    with tempfile.TemporaryDirectory(prefix="vcam-int8-") as scratch:
        int8_path = int8.int8_path or quantise_static(
            Path(fp32_path), Path(scratch) / "int8.onnx",
            images if int8.calibration_images is None else int8.calibration_images,
            int8.quantisation)
        sessions = {name: create_session(onnxruntime, path, [CPU_PROVIDER], threads)
                    for name, path in (("fp32", Path(fp32_path)), ("int8", Path(int8_path)))}
        frames = {name: _session_frames(session, images) for name, session in sessions.items()}
        first = np.ascontiguousarray(images[:1], np.float32)
        calls = {name: _session_call(session, first) for name, session in sessions.items()}
        latency = best_of_rounds(calls, timing.rounds, timing.repeats)
    return Int8Comparison(latency["fp32"], latency["int8"], psnr(frames["int8"], frames["fp32"]),
                          len(images), threads)


def benchmark_backends(backends: dict[str, Backend], image: np.ndarray,
                       timing: TimingSettings = TimingSettings()) -> dict[str, LatencyStats]:
    """Per-frame latency of several loaded backends on one (1, 3, S, S) landmark image,
    interleaved so that load from other processes hits them alike."""
    calls = {name: _backend_call(backend, image) for name, backend in backends.items()}
    return best_of_rounds(calls, timing.rounds, timing.repeats)


def _session_frames(session: Any, images: np.ndarray) -> np.ndarray:
    batches = [session.run([OUTPUT_NAME], {INPUT_NAME: image[None]})[0] for image in images]
    return np.concatenate(batches)


def _session_call(session: Any, image: np.ndarray) -> Callable[[], object]:
    return lambda: session.run([OUTPUT_NAME], {INPUT_NAME: image})


def _backend_call(backend: Backend, image: np.ndarray) -> Callable[[], object]:
    return lambda: backend.render(image)
