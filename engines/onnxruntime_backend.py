"""The ONNX Runtime backend: CPU by default, CUDA and TensorRT execution providers when the
installed onnxruntime lists them.

The ONNX file is run in the precision it was exported in (``vcam compile`` writes FP32, FP16
or QDQ INT8 models); asking for another precision than the file holds makes the backend
unavailable instead of silently running the file's.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from engines.backend import (
    BackendInfo,
    BackendOptions,
    BackendUnavailable,
    GeneratorSource,
    check_batch,
    require_module,
    warm_up_with_blank,
)
from engines.onnx_model import model_precision

CPU_PROVIDER = "CPUExecutionProvider"
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def choose_providers(available: list[str], device: str) -> list[str]:
    """Execution providers in priority order for ``device`` among those installed.

    ``cpu`` -> CPU only; ``cuda`` -> the installed GPU providers (BackendUnavailable when
    there are none) then CPU for unsupported nodes; ``auto`` -> GPU providers if any, CPU.
    """
    gpu = [provider for provider in GPU_PROVIDERS if provider in available]
    if device == "cuda" and not gpu:
        raise BackendUnavailable(
            f"CUDA was requested but onnxruntime has no GPU provider (it has {available})")
    return [CPU_PROVIDER] if device == "cpu" else [*gpu, CPU_PROVIDER]


def create_session(ort: ModuleType, model_path: Path, providers: list[str],
                   threads: int | None) -> Any:
    """An InferenceSession with every graph optimisation on and ``threads`` intra-op
    threads (None = ONNX Runtime's default, one per physical core) that sleep instead of
    spinning between operators: in a real-time pipeline the other stages need those cores
    (spinning cost 54 ms of CPU per frame instead of 33 ms with two threads on two cores)."""
    settings = ort.SessionOptions()
    settings.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    settings.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    settings.intra_op_num_threads = threads or 0
    settings.inter_op_num_threads = 1
    settings.add_session_config_entry("session.intra_op.allow_spinning", "0")
    settings.log_severity_level = 3  # errors only: QDQ and fp16 models log benign warnings
    return ort.InferenceSession(str(model_path), sess_options=settings, providers=providers)


class OnnxRuntimeBackend:
    """Runs an exported ONNX model through an ONNX Runtime session."""

    def __init__(self, ort: ModuleType, session: Any, source: GeneratorSource,
                 options: BackendOptions) -> None:
        self.ort = ort
        self.session = session
        self.source = source
        self.options = options
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name
        self.static_batch = _static_batch(session.get_inputs()[0].shape)

    @classmethod
    def load(cls, source: GeneratorSource, options: BackendOptions) -> OnnxRuntimeBackend:
        """Open ``source.onnx_path``; BackendUnavailable when it cannot run as asked."""
        ort = require_module("onnxruntime", "the onnxruntime backend")
        if source.onnx_path is None or not Path(source.onnx_path).is_file():
            raise BackendUnavailable(f"no ONNX model at {source.onnx_path}")
        found = model_precision(source.onnx_path)
        if found != options.precision:
            raise BackendUnavailable(f"{source.onnx_path} holds a {found} model but "
                                     f"{options.precision} was requested")
        providers = choose_providers(ort.get_available_providers(), options.device)
        try:
            session = create_session(ort, source.onnx_path, providers, options.threads)
        except Exception as error:  # onnxruntime raises its own untyped errors
            raise BackendUnavailable(f"onnxruntime could not load the model: {error}") from None
        return cls(ort, session, source, options)

    def warm_up(self) -> None:
        warm_up_with_blank(self, self.source.image_size, self.options.warmup_iterations,
                           self.source.input_channels)

    def render(self, landmark_images: np.ndarray) -> np.ndarray:
        batch = check_batch(landmark_images, self.source.image_size,
                            self.source.input_channels)
        if self.static_batch in (None, len(batch)):
            return self._run(batch)
        return np.concatenate([self._run(batch[index:index + 1]) for index in range(len(batch))])

    def _run(self, batch: np.ndarray) -> np.ndarray:
        frames = self.session.run([self.output_name], {self.input_name: batch})[0]
        return np.asarray(frames, np.float32)

    def describe(self) -> BackendInfo:
        providers = tuple(self.session.get_providers())
        device = "cpu" if providers == (CPU_PROVIDER,) else "cuda"
        return BackendInfo(
            name="onnxruntime", device=device, precision=self.options.precision,
            image_size=self.source.image_size, providers=providers,
            threads=self.options.threads, model_path=str(self.source.onnx_path),
            library_version=self.ort.__version__,
        )

    def close(self) -> None:
        self.session = None


def _static_batch(shape: list[Any]) -> int | None:
    """The model's fixed batch size, or None when the batch dimension is symbolic."""
    return shape[0] if shape and isinstance(shape[0], int) else None
