"""Export a personalised generator to ONNX and refuse to save it unless it matches torch.

``export_onnx`` traces the module (opset 17, static 1x3xSxS input ``landmarks`` -> output
``frame``), runs the ONNX model through ONNX Runtime on the caller's landmark images and
compares the frames with torch's. Lower precisions are checked twice: the FP32 graph first
(so a broken export is named as such), then the FP16 or INT8 model. A mismatch beyond the
precision's tolerance raises :class:`ExportMismatchError` saying by how much, and nothing is
written; a match is written to a temporary file and renamed into place.

Tolerances (frames in [-1, 1]; measured on seeded random-weight ``tiny`` / ``cpu`` generators
and landmark images from :mod:`calibration.sets`):

* fp32: max abs difference 1e-3. Operator reordering alone gives 7e-5 / 6e-4: instance norm
  over the mostly black landmark image amplifies rounding in its flat regions.
* fp16: max abs difference 0.1 and PSNR at least 45 dB. Half precision measured 8e-3 / 2e-2
  max abs and 68 / 60 dB; a single pixel's maximum is a fragile statistic at 1.5 million
  pixels, so the PSNR floor carries the check and the max abs limit catches overflow.
* int8: PSNR at least 28 dB (RMS error ~0.08, ~10 of 255 grey levels). Quantising every
  convolution gives 28 / 22 dB; keeping the first quarter / half of them (the encoder, which
  sees the sparse landmark image) float gives 32 / 32 dB, so INT8 export tries
  ``int8_float_fractions`` in turn and keeps the first model that passes.
"""

from __future__ import annotations

import re
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from torch import nn

from calibration.files import atomic_write_bytes
from calibration.ort_quantize import QuantisationOptions, quantise_static
from engines.backend import PRECISIONS, Backend
from engines.metrics import max_abs_diff, psnr
from engines.onnx_model import INPUT_NAME, OUTPUT_NAME
from engines.onnxruntime_backend import CPU_PROVIDER, create_session

# Landmark image (direct generator) or landmark image + warped enrollment image (warp).
INPUT_CHANNELS = (3, 6)
OPSET = 17
INT8_FLOAT_FRACTIONS = (0.0, 0.25, 0.5)
# fp16 conversion leaves these float: instance norm's variance overflows half precision.
FP16_FLOAT_OPS = ("InstanceNormalization",)


@dataclass(frozen=True)
class Tolerance:
    """A limit on how far exported frames may be from torch's: a maximum absolute
    difference, a minimum PSNR in dB, or both."""

    max_abs_diff: float | None = None
    min_psnr_db: float | None = None

    def violation(self, max_abs: float, psnr_db: float) -> str | None:
        """Why the measured difference breaks this tolerance, or None when it does not."""
        if self.max_abs_diff is not None and not max_abs <= self.max_abs_diff:
            return (f"max abs difference {max_abs:.3g} exceeds the limit {self.max_abs_diff:.3g}"
                    f" by {max_abs - self.max_abs_diff:.3g}")
        if self.min_psnr_db is not None and not psnr_db >= self.min_psnr_db:
            return (f"PSNR {psnr_db:.2f} dB is {self.min_psnr_db - psnr_db:.2f} dB below the "
                    f"floor of {self.min_psnr_db:.2f} dB")
        return None


DEFAULT_TOLERANCES = {
    "fp32": Tolerance(max_abs_diff=1e-3),
    "fp16": Tolerance(max_abs_diff=0.1, min_psnr_db=45.0),
    "int8": Tolerance(min_psnr_db=28.0),
}


@dataclass(frozen=True)
class ParityReport:
    """How an exported model's frames compare with torch's on the check images."""

    precision: str
    max_abs_diff: float
    psnr_db: float
    tolerance: Tolerance
    images: int

    @property
    def problem(self) -> str | None:
        return self.tolerance.violation(self.max_abs_diff, self.psnr_db)

    @property
    def passed(self) -> bool:
        return self.problem is None


class ExportMismatchError(RuntimeError):
    """The exported model's frames differ from torch's beyond the tolerance."""

    def __init__(self, stage: str, report: ParityReport) -> None:
        self.report = report
        super().__init__(f"{stage} does not match torch on {report.images} landmark images: "
                         f"{report.problem}; nothing was saved")


@dataclass(frozen=True)
class ExportOptions:
    """How to export.

    Attributes:
        precision: ``"fp32"``, ``"fp16"`` (half-precision weights, float32 inputs and
            outputs) or ``"int8"`` (QDQ, calibrated on the calibration images).
        tolerance: overrides the precision's entry in :data:`DEFAULT_TOLERANCES`.
        quantisation: INT8 settings; its ``float_leading_fraction`` is replaced by each of
            ``int8_float_fractions`` in turn until the check passes.
        int8_float_fractions: fractions of leading convolutions kept float, tried in order.
        threads: ONNX Runtime threads for the check.
    """

    precision: str = "fp32"
    tolerance: Tolerance | None = None
    quantisation: QuantisationOptions = field(default_factory=QuantisationOptions)
    int8_float_fractions: tuple[float, ...] = INT8_FLOAT_FRACTIONS
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not self.int8_float_fractions:
            raise ValueError("int8_float_fractions must not be empty")

    def limit(self) -> Tolerance:
        return self.tolerance or DEFAULT_TOLERANCES[self.precision]


@dataclass(frozen=True)
class ExportResult:
    """What was saved, and how closely it matched torch."""

    path: Path
    precision: str
    fp32_report: ParityReport
    report: ParityReport
    float_leading_fraction: float | None = None


def export_onnx(module: nn.Module, path: Path, check_images: np.ndarray,
                options: ExportOptions = ExportOptions(),
                calibration_images: np.ndarray | None = None) -> ExportResult:
    """Export ``module`` to ``path`` in ``options.precision`` after checking it.

    Args:
        module: the deployable personalised generator (B, 3, S, S) -> (B, 3, S, S).
        path: destination ``.onnx`` file; written only when every check passes.
        check_images: float32 (K, 3, S, S) landmark images in [-1, 1] to compare on.
        options: precision, tolerance and quantisation settings.
        calibration_images: float32 (K, 3, S, S) landmark images for INT8 calibration
            (required for ``int8``; see :mod:`calibration.sets`).

    Raises:
        ExportMismatchError: the model differs from torch beyond the tolerance.
        ValueError: bad image shapes, or ``int8`` without calibration images.
    """
    images = _checked_images(check_images)
    if options.precision == "int8" and calibration_images is None:
        raise ValueError("int8 export needs calibration images")
    reference = torch_frames(module, images)
    with tempfile.TemporaryDirectory(prefix="vcam-export-") as scratch:
        fp32_path = Path(scratch) / "fp32.onnx"
        torch_to_onnx(module, fp32_path, images.shape[-1], channels=images.shape[1])
        fp32_limit = options.limit() if options.precision == "fp32" else DEFAULT_TOLERANCES["fp32"]
        fp32_report = check_against(reference, fp32_path, images, "fp32", fp32_limit,
                                    options.threads)
        if not fp32_report.passed:
            raise ExportMismatchError("the fp32 ONNX graph", fp32_report)
        final, report, fraction = _lower_precision(fp32_path, fp32_report, reference, images,
                                                   options, calibration_images)
        if not report.passed:
            raise ExportMismatchError(f"the {options.precision} ONNX model", report)
        destination = Path(path)
        destination.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(destination, final.read_bytes())
    return ExportResult(destination, options.precision, fp32_report, report, fraction)


def _lower_precision(fp32_path: Path, fp32_report: ParityReport, reference: np.ndarray,
                     images: np.ndarray, options: ExportOptions,
                     calibration_images: np.ndarray | None
                     ) -> tuple[Path, ParityReport, float | None]:
    """The model file at ``options.precision``, its check, and the INT8 float fraction."""
    if options.precision == "fp32":
        return fp32_path, fp32_report, None
    if options.precision == "fp16":
        fp16_path = convert_to_fp16(fp32_path, fp32_path.with_name("fp16.onnx"))
        report = check_against(reference, fp16_path, images, "fp16", options.limit(),
                               options.threads)
        return fp16_path, report, None
    if calibration_images is None:
        raise ValueError("int8 export needs calibration images")
    return _quantise_until_close(fp32_path, reference, images, options, calibration_images)


def _quantise_until_close(fp32_path: Path, reference: np.ndarray, images: np.ndarray,
                          options: ExportOptions, calibration_images: np.ndarray
                          ) -> tuple[Path, ParityReport, float]:
    """Quantise with each leading float fraction in turn; the first that passes, or the
    last attempt when none does."""
    int8_path = fp32_path.with_name("int8.onnx")
    for fraction in options.int8_float_fractions:
        settings = replace(options.quantisation, float_leading_fraction=fraction)
        quantise_static(fp32_path, int8_path, calibration_images, settings)
        report = check_against(reference, int8_path, images, "int8", options.limit(),
                               options.threads)
        if report.passed:
            break
    return int8_path, report, fraction


def torch_to_onnx(module: nn.Module, path: Path, image_size: int, opset: int = OPSET,
                  channels: int = 3) -> Path:
    """Trace ``module`` to an ONNX file with a static (1, C, S, S) input (C = 3 for a landmark
    image, 6 for the warp-guided generator's landmark image plus warped enrollment image)."""
    example = torch.zeros(1, channels, image_size, image_size)
    with _quiet_legacy_exporter(), torch.no_grad():
        torch.onnx.export(module.eval(), (example,), str(path), opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamo=False)
    onnx.checker.check_model(str(path))
    return path


@contextmanager
def _quiet_legacy_exporter() -> Iterator[None]:
    """Silence the TorchScript exporter's deprecation notice and its tracing chatter (the
    input shape is static, so tracing shape checks as constants is intended)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=re.escape("ONNX export mode is set to"))
        yield


def convert_to_fp16(fp32_path: Path, fp16_path: Path) -> Path:
    """Half-precision weights and arithmetic with float32 inputs and outputs."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(fp32_path))
    converted = convert_float_to_float16(
        model, keep_io_types=True, op_block_list=[*DEFAULT_OP_BLOCK_LIST, *FP16_FLOAT_OPS])
    onnx.save(converted, str(fp16_path))
    return fp16_path


def torch_frames(module: nn.Module, images: np.ndarray) -> np.ndarray:
    """The module's frames for ``images``, one image at a time as the ONNX model runs."""
    with torch.no_grad():
        frames = [module(torch.from_numpy(image[None])).numpy() for image in images]
    return np.concatenate(frames).astype(np.float32)


def onnx_frames(model_path: Path, images: np.ndarray, threads: int | None = None) -> np.ndarray:
    """ONNX Runtime (CPU) frames for ``images``, one image at a time."""
    session = create_session(onnxruntime, model_path, [CPU_PROVIDER], threads)
    frames = [session.run([OUTPUT_NAME], {INPUT_NAME: image[None]})[0] for image in images]
    return np.concatenate(frames).astype(np.float32)


def compare_frames(reference: np.ndarray, candidate: np.ndarray, precision: str,
                   tolerance: Tolerance) -> ParityReport:
    return ParityReport(precision, max_abs_diff(candidate, reference),
                        psnr(candidate, reference), tolerance, len(reference))


def check_against(reference: np.ndarray, model_path: Path, images: np.ndarray,
                  precision: str, tolerance: Tolerance, threads: int | None) -> ParityReport:
    """Compare an ONNX model's frames for ``images`` with ``reference`` frames."""
    return compare_frames(reference, onnx_frames(model_path, images, threads), precision,
                          tolerance)


def verify_backend(backend: Backend, images: np.ndarray, reference: np.ndarray,
                   precision: str, tolerance: Tolerance | None = None) -> ParityReport:
    """Check a loaded backend (say, a TensorRT engine built from the exported model) against
    the previous step's frames; ExportMismatchError when it is beyond the tolerance."""
    limit = tolerance or DEFAULT_TOLERANCES[precision]
    frames = np.concatenate([backend.render(image[None]) for image in _checked_images(images)])
    report = compare_frames(reference, frames, precision, limit)
    if not report.passed:
        raise ExportMismatchError(f"the {backend.describe().name} {precision} engine", report)
    return report


def _checked_images(images: np.ndarray) -> np.ndarray:
    batch = np.ascontiguousarray(images, np.float32)
    if (batch.ndim != 4 or batch.shape[1] not in INPUT_CHANNELS
            or batch.shape[2] != batch.shape[3] or not len(batch)):
        raise ValueError(f"expected generator inputs (K, 3 or 6, S, S) with K >= 1, "
                         f"got {tuple(batch.shape)}")
    return batch
