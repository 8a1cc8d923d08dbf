"""The torch backend: the deployable module itself, on CPU or CUDA.

FP16 runs on CUDA only (CPU half-precision convolutions are slow and not what a user means);
INT8 is not offered here (use onnxruntime or tensorrt, which have calibrated INT8 paths).
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
from torch import nn

from engines.backend import (
    BackendInfo,
    BackendOptions,
    BackendUnavailable,
    GeneratorSource,
    check_batch,
    warm_up_with_blank,
)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def resolve_torch_device(requested: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is unavailable."""
    has_cuda = torch.cuda.is_available()
    if requested == "cuda" and not has_cuda:
        raise BackendUnavailable("CUDA was requested but torch sees no CUDA GPU")
    return torch.device("cuda" if requested == "cuda" or (requested == "auto" and has_cuda)
                        else "cpu")


def compiled(module: nn.Module) -> nn.Module:
    """``torch.compile(module)``; compilation itself happens on the first call (warm-up).
    Importing the compiler stack warns about torch's own use of deprecated TorchScript
    decorators, which is noise to a vcam user, so those warnings are silenced here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script_method.*",
                                category=DeprecationWarning)
        return torch.compile(module)  # type: ignore[return-value]


class TorchBackend:
    """Runs the personalised generator with torch (eager or ``torch.compile``)."""

    def __init__(self, module: nn.Module, image_size: int, device: torch.device,
                 options: BackendOptions, input_channels: int = 3) -> None:
        self.image_size = image_size
        self.input_channels = input_channels
        self.device = device
        self.options = options
        self.dtype = DTYPES[options.precision]
        self.memory_format = (torch.channels_last if options.channels_last
                              else torch.contiguous_format)
        prepared = copy.deepcopy(module).eval().requires_grad_(False)
        prepared = prepared.to(device=device, dtype=self.dtype, memory_format=self.memory_format)
        self.module: nn.Module = compiled(prepared) if options.compile else prepared

    @classmethod
    def load(cls, source: GeneratorSource, options: BackendOptions) -> TorchBackend:
        """Load from ``source.module``; BackendUnavailable for what torch cannot do here."""
        if source.module is None:
            raise BackendUnavailable("no torch module was given")
        if options.precision == "int8":
            raise BackendUnavailable("int8 has no torch path; use onnxruntime or tensorrt")
        device = resolve_torch_device(options.device)
        if options.precision == "fp16" and device.type != "cuda":
            raise BackendUnavailable("fp16 in torch needs a CUDA GPU")
        if options.threads is not None:
            torch.set_num_threads(options.threads)  # process-wide: torch has no per-module knob
        return cls(source.module, source.image_size, device, options, source.input_channels)

    def warm_up(self) -> None:
        warm_up_with_blank(self, self.image_size, self.options.warmup_iterations,
                           self.input_channels)

    def render_tensor(self, landmark_images: torch.Tensor) -> torch.Tensor:
        """Render a tensor already on this backend's device; returns float32 on the device."""
        batch = landmark_images.to(device=self.device, dtype=self.dtype,
                                   memory_format=self.memory_format)
        with torch.inference_mode():
            return self.module(batch).float()

    def render(self, landmark_images: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(check_batch(landmark_images, self.image_size, self.input_channels))
        frames = self.render_tensor(batch)
        return frames.cpu().contiguous().numpy()

    def describe(self) -> BackendInfo:
        return BackendInfo(
            name="torch", device=str(self.device), precision=self.options.precision,
            image_size=self.image_size, threads=torch.get_num_threads(),
            compiled=self.options.compile, library_version=torch.__version__,
        )

    def close(self) -> None:
        self.module = nn.Identity()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
