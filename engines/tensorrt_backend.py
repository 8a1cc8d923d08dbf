"""The TensorRT backend (TensorRT 10 Python API), with engines kept in :mod:`engines.cache`.

The module imports without TensorRT; :meth:`TensorRTBackend.load` reports it unavailable.
Device buffers are torch CUDA tensors bound to the execution context once
(:class:`TensorRTRunner`), and inference is enqueued on torch's current CUDA stream, so frames
can stay on the GPU (:meth:`TensorRTBackend.render_tensor`) and no pycuda is needed.

Precision: FP32 and FP16 build from an FP32 ONNX model (FP16 is a builder flag). INT8 builds
from a QDQ model (explicit quantisation, preferred since TensorRT 10.1) or from an FP32 model
plus calibration images through :class:`calibration.tensorrt_calibrator.EntropyCalibrator`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from engines.backend import (
    BackendInfo,
    BackendOptions,
    BackendUnavailable,
    GeneratorSource,
    check_batch,
    require_module,
    warm_up_with_blank,
)
from engines.cache import CachedEngine, EngineBuildError, EngineCache, EngineKey
from engines.onnx_model import file_sha256, model_precision

MEGABYTE = 1 << 20
CALIBRATION_SUFFIX = ".calib"
NO_GPU = "TensorRT needs a CUDA GPU and torch sees none"


class EngineBuildFailed(RuntimeError):
    """TensorRT could not parse the ONNX model or build an engine from it."""


def default_cache_dir() -> Path:
    """The user's cache folder for engines (platformdirs), e.g. ``~/.cache/vcam/engines``."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("vcam")) / "engines"


def torch_dtype(trt: ModuleType, data_type: Any) -> torch.dtype:
    """The torch dtype for a TensorRT tensor data type."""
    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
             trt.DataType.INT8: torch.int8, trt.DataType.INT32: torch.int32,
             trt.DataType.BOOL: torch.bool}
    if data_type not in table:
        raise BackendUnavailable(f"engine tensor type {data_type} is not supported")
    return table[data_type]


def current_gpu() -> tuple[str, str]:
    """(name, compute capability "major.minor") of the current CUDA device."""
    index = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return torch.cuda.get_device_name(index), f"{major}.{minor}"


def engine_key(trt: ModuleType, onnx_path: Path, precision: str,
               calibration_images: np.ndarray | None = None) -> EngineKey:
    """The cache key for building ``onnx_path`` at ``precision`` on the current GPU."""
    gpu_name, capability = current_gpu()
    return EngineKey(
        onnx_sha256=file_sha256(onnx_path), tensorrt_version=trt.__version__,
        gpu_name=gpu_name, compute_capability=capability, precision=precision,
        calibration_sha256=calibration_digest(calibration_images),
    )


def calibration_digest(images: np.ndarray | None) -> str:
    """SHA-256 of a calibration set's float32 bytes ("" when none is used)."""
    if images is None:
        return ""
    return hashlib.sha256(np.ascontiguousarray(images, np.float32).tobytes()).hexdigest()


def build_serialized_engine(trt: ModuleType, onnx_path: Path, precision: str,
                            workspace_mb: int, calibrator: Any | None = None) -> bytes:
    """Parse ``onnx_path`` and build a serialised engine (explicit batch, TensorRT 10)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(index)) for index in range(parser.num_errors))
        raise EngineBuildFailed(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb * MEGABYTE)
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)  # TF32 convolutions miss the 1e-3 parity
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # INT8 layers may fall back to FP16, not FP32
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        if calibrator is not None:
            config.int8_calibrator = calibrator
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildFailed(f"TensorRT could not build a {precision} engine for {onnx_path}")
    return bytes(serialized)


class TensorRTRunner:
    """An engine's execution context with its I/O bound once to preallocated torch CUDA
    tensors (zero-copy I/O, shared by every model the backend runs)."""

    def __init__(self, trt: ModuleType, engine: Any, device: torch.device) -> None:
        self.engine = engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendUnavailable("TensorRT could not create an execution context")
        self.buffers: dict[str, torch.Tensor] = {}
        self.input_names: list[str] = []
        self.output_names: list[str] = []
        for index in range(engine.num_io_tensors):
            self._bind(trt, engine.get_tensor_name(index), device)

    def _bind(self, trt: ModuleType, name: str, device: torch.device) -> None:
        shape = tuple(self.engine.get_tensor_shape(name))
        if any(dimension < 0 for dimension in shape):
            raise BackendUnavailable(f"engine tensor {name} has a dynamic shape {shape}")
        dtype = torch_dtype(trt, self.engine.get_tensor_dtype(name))
        buffer = torch.empty(shape, dtype=dtype, device=device)
        self.context.set_tensor_address(name, buffer.data_ptr())
        self.buffers[name] = buffer
        is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        (self.input_names if is_input else self.output_names).append(name)

    @property
    def input(self) -> torch.Tensor:
        return self.buffers[self.input_names[0]]

    @property
    def output(self) -> torch.Tensor:
        return self.buffers[self.output_names[0]]

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        """Copy ``batch`` into the input buffer, enqueue inference on torch's current stream
        and return the output buffer (overwritten by the next call)."""
        self.input.copy_(batch)
        if not self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        return self.output


class TensorRTBackend:
    """Runs a cached TensorRT engine built from the exported ONNX model."""

    def __init__(self, runtime: Any, runner: TensorRTRunner, cached: CachedEngine[Any],
                 source: GeneratorSource, options: BackendOptions, version: str) -> None:
        self.runtime = runtime  # must outlive the engine it deserialised
        self.runner = runner
        self.cached = cached
        self.source = source
        self.options = options
        self.version = version
        self.device = runner.input.device

    @classmethod
    def load(cls, source: GeneratorSource, options: BackendOptions) -> TensorRTBackend:
        """Build or reuse the engine; BackendUnavailable when TensorRT cannot run here."""
        trt = require_module("tensorrt", "the tensorrt backend")
        onnx_path, found_precision = _check_runnable(source, options)
        cache = EngineCache(options.cache_dir or default_cache_dir())
        calibration = _calibration_images(source, options, found_precision)
        key = engine_key(trt, onnx_path, options.precision, calibration)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))

        def build() -> bytes:
            calibrator = _make_calibrator(calibration, cache.engine_path(key))
            return build_serialized_engine(trt, onnx_path, options.precision,
                                           options.workspace_mb, calibrator)

        try:
            cached = cache.load_or_build(key, build, runtime.deserialize_cuda_engine)
        except (EngineBuildFailed, EngineBuildError) as error:
            raise BackendUnavailable(str(error)) from error
        runner = TensorRTRunner(trt, cached.engine, torch.device("cuda"))
        return cls(runtime, runner, cached, source, options, trt.__version__)

    def warm_up(self) -> None:
        warm_up_with_blank(self, self.source.image_size, self.options.warmup_iterations,
                           self.source.input_channels)

    def render_tensor(self, landmark_images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) landmark images (any device) -> float32 frames on the GPU."""
        batch = landmark_images.to(self.device, non_blocking=True)
        step = self.runner.input.shape[0]
        frames = [self.runner.run(batch[start:start + step]).float().clone()
                  for start in range(0, len(batch), step)]
        return torch.cat(frames)

    def render(self, landmark_images: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(check_batch(landmark_images, self.source.image_size,
                            self.source.input_channels))
        return self.render_tensor(batch).cpu().numpy()

    def describe(self) -> BackendInfo:
        return BackendInfo(
            name="tensorrt", device=f"cuda:{self.device.index or 0}",
            precision=self.options.precision, image_size=self.source.image_size,
            model_path=str(self.cached.path), library_version=self.version,
        )

    def close(self) -> None:
        self.runner.buffers.clear()
        self.runner.context = None
        torch.cuda.empty_cache()


def unavailable_reason() -> str | None:
    """Why TensorRT cannot build engines on this machine (not installed, no CUDA GPU), found
    in a moment and before any work; None when it can."""
    try:
        require_module("tensorrt", "the tensorrt backend")
    except BackendUnavailable as error:
        return str(error)
    return None if torch.cuda.is_available() else NO_GPU


def _check_runnable(source: GeneratorSource, options: BackendOptions) -> tuple[Path, str]:
    """The ONNX model's path and precision; BackendUnavailable unless a CUDA GPU and a
    model TensorRT can build at the requested precision are present."""
    if options.device == "cpu":
        raise BackendUnavailable("TensorRT needs a CUDA device but cpu was requested")
    if not torch.cuda.is_available():
        raise BackendUnavailable(NO_GPU)
    if source.onnx_path is None or not Path(source.onnx_path).is_file():
        raise BackendUnavailable(f"no ONNX model at {source.onnx_path}")
    found = model_precision(source.onnx_path)
    if found == "fp16" or (found == "int8" and options.precision != "int8"):
        raise BackendUnavailable(f"{source.onnx_path} holds a {found} model; TensorRT builds "
                                 f"{options.precision} from an fp32 (or QDQ int8) model")
    return Path(source.onnx_path), found


def _calibration_images(source: GeneratorSource, options: BackendOptions,
                        model_precision_found: str) -> np.ndarray | None:
    """The calibration set a calibrator needs: INT8 from an FP32 (not QDQ) model only."""
    if options.precision != "int8" or model_precision_found == "int8":
        return None
    if source.calibration_images is None or not len(source.calibration_images):
        raise BackendUnavailable("int8 from an fp32 model needs calibration images "
                                 "(or a QDQ model from calibration.ort_quantize)")
    return source.calibration_images


def _make_calibrator(images: np.ndarray | None, engine_path: Path) -> Any | None:
    """An entropy calibrator whose table is cached beside the engine, or None."""
    if images is None:
        return None
    from calibration.tensorrt_calibrator import EntropyCalibrator

    return EntropyCalibrator(images, engine_path.with_suffix(CALIBRATION_SUFFIX))
