"""TensorRT's INT8 entropy calibrator fed from a calibration set of landmark images.

The module imports without TensorRT: the calibrator then derives from ``object`` so its
batching and cache logic still run (and are tested) on a CPU machine. With TensorRT
installed it is a real ``tensorrt.IInt8EntropyCalibrator2``. The device buffer is a torch
tensor (CUDA for TensorRT), so no pycuda is needed.

TensorRT 10.1 deprecates implicit (calibrator) quantisation in favour of explicit QDQ models;
a QDQ model from :mod:`calibration.ort_quantize` builds an INT8 engine without this class.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from calibration.files import atomic_write_bytes
from calibration.sets import iterate_batches

try:
    import tensorrt as trt

    CalibratorBase: type = trt.IInt8EntropyCalibrator2
except (ImportError, OSError):  # not installed, or its CUDA libraries are missing
    CalibratorBase = object


def tensorrt_available() -> bool:
    """Whether the real TensorRT base class is in use."""
    return CalibratorBase is not object


class EntropyCalibrator(CalibratorBase):  # type: ignore[misc,valid-type]
    """Hands TensorRT one batch of landmark images at a time, then caches the scales.

    Args:
        images: float32 (K, 3, S, S) landmark images in [-1, 1].
        cache_path: where the calibration table is read from and written to; when it exists
            TensorRT skips calibration and uses it (delete it after changing the set).
        batch_size: images per batch (the engine's static batch, 1 for vcam models).
        device: where the input buffer lives: ``"cuda"`` for TensorRT, ``"cpu"`` in tests.
    """

    def __init__(self, images: np.ndarray, cache_path: Path, batch_size: int = 1,
                 device: str = "cuda") -> None:
        super().__init__()
        if len(images) < batch_size:
            raise ValueError(f"{len(images)} calibration images cannot fill a batch of "
                             f"{batch_size}")
        self.images = np.asarray(images, np.float32)
        self.cache_path = Path(cache_path)
        self.batch_size = batch_size
        self.buffer = torch.empty((batch_size, *self.images.shape[1:]), dtype=torch.float32,
                                  device=device)
        self._batches: Iterator[np.ndarray] = iterate_batches(self.images, batch_size)
        self.batches_served = 0

    def get_batch_size(self) -> int:
        return self.batch_size

    def get_batch(self, names: list[str]) -> list[int] | None:
        """Copy the next batch into the device buffer and return its address; None when the
        set is exhausted (TensorRT then stops calibrating)."""
        batch = next(self._batches, None)
        if batch is None:
            return None
        self.buffer.copy_(torch.from_numpy(batch))
        if self.buffer.is_cuda:
            torch.cuda.current_stream().synchronize()
        self.batches_served += 1
        return [int(self.buffer.data_ptr())]

    def read_calibration_cache(self) -> bytes | None:
        """The stored calibration table, or None to make TensorRT calibrate."""
        if self.cache_path.is_file():
            return self.cache_path.read_bytes()
        return None

    def write_calibration_cache(self, cache: bytes | memoryview) -> None:
        """Store the table TensorRT computed (temp file then rename)."""
        atomic_write_bytes(self.cache_path, bytes(cache))
