"""The backend protocol, its options, and the registry that picks a backend at run time.

A backend runs one personalised generator G'(y): it takes a batch of landmark images (float32
NCHW in [-1, 1]) and returns frames (float32 NCHW in [-1, 1]). Each implementation lives in
its own module and is imported only when asked for, so a missing engine (TensorRT on a CPU
machine) costs nothing until it is chosen. A backend that cannot run here raises
:class:`BackendUnavailable` with the reason; :func:`create_backend` gathers every reason into
one :class:`NoBackendError` when nothing works.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from torch import nn

BACKEND_NAMES = ("torch", "onnxruntime", "tensorrt")
AUTO = "auto"
# auto tries these in order: TensorRT needs a CUDA GPU, ONNX Runtime runs anywhere, torch last.
AUTO_ORDER = ("tensorrt", "onnxruntime", "torch")
PRECISIONS = ("fp32", "fp16", "int8")
DEVICES = ("auto", "cpu", "cuda")


class BackendUnavailable(Exception):
    """This backend cannot run here (missing package, no GPU, no model in the needed form)."""


class NoBackendError(RuntimeError):
    """No backend could be created; ``reasons`` maps each backend tried to why it failed."""

    def __init__(self, reasons: dict[str, str]) -> None:
        self.reasons = dict(reasons)
        listed = "; ".join(f"{name}: {reason}" for name, reason in self.reasons.items())
        super().__init__(f"no backend could run the generator ({listed})")


@dataclass(frozen=True)
class BackendOptions:
    """How to run the generator.

    Attributes:
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        precision: ``"fp32"``, ``"fp16"`` or ``"int8"``; a backend that cannot honour it is
            unavailable rather than silently running another precision.
        threads: CPU threads for inference (ONNX Runtime intra-op, torch); None = library
            default.
        compile: wrap the torch module in ``torch.compile``.
        channels_last: run the torch module in channels-last memory format.
        cache_dir: where TensorRT engines and calibration caches are kept; None = the user
            cache folder.
        workspace_mb: TensorRT builder workspace limit.
        warmup_iterations: renders done by ``warm_up`` before timing-sensitive use.
    """

    device: str = "auto"
    precision: str = "fp32"
    threads: int | None = None
    compile: bool = False
    channels_last: bool = True
    cache_dir: Path | None = None
    workspace_mb: int = 1024
    warmup_iterations: int = 3

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.threads is not None and self.threads <= 0:
            raise ValueError(f"threads must be positive, got {self.threads}")
        if self.workspace_mb <= 0 or self.warmup_iterations < 0:
            raise ValueError("workspace_mb must be positive and warmup_iterations >= 0")


@dataclass(frozen=True, eq=False)
class GeneratorSource:
    """The personalised generator in the forms a backend may load.

    Attributes:
        image_size: S, the side of the square landmark images and frames.
        module: the deployable torch module (eval mode, spectral norm folded), for ``torch``.
        onnx_path: the exported ONNX model, for ``onnxruntime`` (in the precision asked for)
            and ``tensorrt`` (FP32 or QDQ INT8; TensorRT lowers precision itself).
        calibration_images: float32 (K, C, S, S) inputs in [-1, 1] for TensorRT's INT8
            calibrator when the ONNX model is not already quantised.
        input_channels: C, 3 for a landmark image, 6 for the warp-guided generator (the
            landmark image and the enrollment image warped to it).
    """

    image_size: int
    module: nn.Module | None = None
    onnx_path: Path | None = None
    calibration_images: np.ndarray | None = None
    input_channels: int = 3

    def input_shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        return (batch, self.input_channels, self.image_size, self.image_size)


@dataclass(frozen=True)
class BackendInfo:
    """What a backend is running on, for logs, ``--json`` output and benchmarks."""

    name: str
    device: str
    precision: str
    image_size: int
    providers: tuple[str, ...] = ()
    threads: int | None = None
    compiled: bool = False
    model_path: str | None = None
    library_version: str = ""

    def to_dict(self) -> dict[str, Any]:
        info = asdict(self)
        info["providers"] = list(self.providers)
        return info


@runtime_checkable
class Backend(Protocol):
    """A loaded personalised generator, ready to render."""

    def warm_up(self) -> None:
        """Run a few renders so the first real frame does not pay for lazy initialisation."""

    def render(self, landmark_images: np.ndarray) -> np.ndarray:
        """(B, 3, S, S) float32 landmark images in [-1, 1] -> (B, 3, S, S) float32 frames."""

    def describe(self) -> BackendInfo:
        """The backend's name, device, precision, providers and so on."""

    def close(self) -> None:
        """Release sessions, engines and device buffers."""


# (source, options) -> a loaded backend, or BackendUnavailable.
BackendFactory = Callable[[GeneratorSource, BackendOptions], Backend]


class BackendRegistry:
    """Backend factories by name; :meth:`create` resolves ``auto`` and gathers failures."""

    def __init__(self) -> None:
        self._factories: dict[str, BackendFactory] = {}

    def register(self, name: str, factory: BackendFactory) -> None:
        if name == AUTO:
            raise ValueError(f"{AUTO!r} is reserved for automatic selection")
        self._factories[name] = factory

    def names(self) -> tuple[str, ...]:
        return tuple(self._factories)

    def create(self, name: str, source: GeneratorSource, options: BackendOptions) -> Backend:
        """The named backend, or the first of :data:`AUTO_ORDER` that loads for ``auto``."""
        if name != AUTO and name not in self._factories:
            raise ValueError(f"unknown backend {name!r}; choose one of: "
                             f"{', '.join((AUTO, *self._factories))}")
        candidates = self._auto_order() if name == AUTO else (name,)
        reasons: dict[str, str] = {}
        for candidate in candidates:
            try:
                return self._factories[candidate](source, options)
            except BackendUnavailable as error:
                reasons[candidate] = str(error)
        raise NoBackendError(reasons)

    def _auto_order(self) -> tuple[str, ...]:
        preferred = [name for name in AUTO_ORDER if name in self._factories]
        return (*preferred, *(name for name in self._factories if name not in AUTO_ORDER))


def _lazy_factory(module_name: str, class_name: str) -> BackendFactory:
    """A factory that imports ``engines.<module_name>`` only when called."""
    def create(source: GeneratorSource, options: BackendOptions) -> Backend:
        module = importlib.import_module(f"engines.{module_name}")
        backend: Backend = getattr(module, class_name).load(source, options)
        return backend

    return create


def default_registry() -> BackendRegistry:
    """A registry holding the three built-in backends."""
    registry = BackendRegistry()
    registry.register("torch", _lazy_factory("torch_backend", "TorchBackend"))
    registry.register("onnxruntime", _lazy_factory("onnxruntime_backend", "OnnxRuntimeBackend"))
    registry.register("tensorrt", _lazy_factory("tensorrt_backend", "TensorRTBackend"))
    return registry


def create_backend(name: str, source: GeneratorSource,
                   options: BackendOptions = BackendOptions(),
                   registry: BackendRegistry | None = None) -> Backend:
    """Load ``name`` (``auto``, ``torch``, ``onnxruntime`` or ``tensorrt``) for ``source``.

    Raises:
        ValueError: ``name`` is not a registered backend.
        NoBackendError: nothing could be loaded; it lists every backend's reason.
    """
    return (registry or default_registry()).create(name, source, options)


def require_module(name: str, purpose: str) -> ModuleType:
    """Import ``name`` or raise BackendUnavailable saying what it was needed for."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise BackendUnavailable(f"{name} is not installed ({purpose}): {error}") from None


def check_batch(landmark_images: np.ndarray, image_size: int, channels: int = 3) -> np.ndarray:
    """The batch as contiguous float32 (B, C, S, S), or ValueError naming the shape."""
    batch = np.ascontiguousarray(landmark_images, np.float32)
    if batch.ndim != 4 or batch.shape[1:] != (channels, image_size, image_size):
        raise ValueError(f"expected generator inputs (B, {channels}, {image_size}, {image_size}), "
                         f"got {tuple(batch.shape)}")
    return batch


def warm_up_with_blank(backend: Backend, image_size: int, iterations: int,
                       channels: int = 3) -> None:
    """Render ``iterations`` blank (all -1, black) inputs."""
    blank = np.full((1, channels, image_size, image_size), -1.0, np.float32)
    for _ in range(iterations):
        backend.render(blank)
