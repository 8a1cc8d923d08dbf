"""ONNX Runtime static INT8 quantisation (QDQ format) calibrated on landmark images.

Defaults, chosen by measurement on seeded random-weight ``tiny`` (64 px) and ``cpu`` (256 px)
generators on a 2-core AMD EPYC (AVX2, no VNNI), PSNR of INT8 against FP32 frames:

* unsigned 8-bit activations, signed per-channel 8-bit weights, ``reduce_range`` on: without
  VNNI, ONNX Runtime's u8 x s8 kernels add pairs of products in int16 and saturate; 7-bit
  weights avoid it (cpu model 16.8 -> 22.2 dB, tiny 21.4 -> 27.8 dB). u8 x u8 weights (22.3
  dB) and per-tensor weights (22.1 dB) were no better, s8 activations no better and slower.
* min-max calibration: entropy and percentile were within 0.5 dB and several times slower.
* convolutions only: quantising the attention's matrix products made ONNX Runtime run a
  quantised softmax that cost more than the integer products saved, for no quality gain.
* the error comes mostly from the first layers, which see the sparse landmark image: on
  the cpu model one encoder convolution quantised alone gives 22-34 dB, one decoder
  convolution alone 40-48 dB. :attr:`QuantisationOptions.float_leading_fraction` keeps the
  first ones float (cpu model, all convolutions: 22 dB; first half float: 32 dB).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from calibration.files import atomic_write_bytes
from calibration.sets import iterate_batches

QUANT_TYPES = {"qint8": QuantType.QInt8, "quint8": QuantType.QUInt8}
CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}


@dataclass(frozen=True)
class QuantisationOptions:
    """How to quantise.

    Attributes:
        activation_type: ``"quint8"`` or ``"qint8"`` for activations.
        weight_type: ``"qint8"`` or ``"quint8"`` for weights.
        per_channel: one weight scale per output channel (much better for convolutions).
        calibrate_method: ``"minmax"``, ``"entropy"`` or ``"percentile"``.
        op_types: the operator types to quantise; the rest stay float.
        reduce_range: 7-bit weights, which avoids the int16 overflow of u8 x s8 products on
            x86 CPUs without VNNI (AVX2 only); costs little precision.
        float_leading_fraction: keep this fraction of the quantisable nodes, counted from the
            graph's input, in float. Early layers see the sparse landmark image and their
            error is amplified by every later normalisation, so they are the most sensitive.
        preprocess: run ONNX Runtime's shape inference and graph optimisation first.
    """

    activation_type: str = "quint8"
    weight_type: str = "qint8"
    per_channel: bool = True
    calibrate_method: str = "minmax"
    op_types: tuple[str, ...] = ("Conv",)
    reduce_range: bool = True
    float_leading_fraction: float = 0.0
    preprocess: bool = True

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("activation_type", self.activation_type, QUANT_TYPES),
            ("weight_type", self.weight_type, QUANT_TYPES),
            ("calibrate_method", self.calibrate_method, CALIBRATION_METHODS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {sorted(allowed)}, got {value!r}")
        if not 0.0 <= self.float_leading_fraction <= 1.0:
            raise ValueError("float_leading_fraction must be within [0, 1]")


class LandmarkImageReader(CalibrationDataReader):
    """Feeds a calibration set to ONNX Runtime's calibrator one batch at a time."""

    def __init__(self, images: np.ndarray, input_name: str, batch_size: int = 1) -> None:
        if not len(images):
            raise ValueError("the calibration set is empty")
        self.images = images
        self.input_name = input_name
        self.batch_size = batch_size
        self._batches: Iterator[np.ndarray] = iterate_batches(images, batch_size)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        self._batches = iterate_batches(self.images, self.batch_size)


def input_name(model_path: Path) -> str:
    """Name of the model's single graph input."""
    model = onnx.load(str(model_path), load_external_data=False)
    initialisers = {tensor.name for tensor in model.graph.initializer}
    inputs = [item.name for item in model.graph.input if item.name not in initialisers]
    if len(inputs) != 1:
        raise ValueError(f"{model_path} has inputs {inputs}, expected exactly one")
    return inputs[0]


def leading_nodes(model_path: Path, options: QuantisationOptions) -> list[str]:
    """Names of the first ``float_leading_fraction`` of the nodes that would be quantised
    (ONNX graphs are stored in topological order)."""
    model = onnx.load(str(model_path), load_external_data=False)
    candidates = [node.name for node in model.graph.node if node.op_type in options.op_types]
    return candidates[:round(len(candidates) * options.float_leading_fraction)]


def quantise_static(fp32_path: Path, int8_path: Path, images: np.ndarray,
                    options: QuantisationOptions = QuantisationOptions()) -> Path:
    """Quantise an FP32 ONNX model to QDQ INT8 calibrated on ``images`` (float32 (K, 3, S, S)
    landmark images in [-1, 1], fed one at a time: exported models have a static batch of
    1). Writes ``int8_path`` whole (temp file then rename) and returns it."""
    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    reader = LandmarkImageReader(images, input_name(fp32_path))
    with tempfile.TemporaryDirectory(prefix="vcam-quantise-") as scratch:
        source = fp32_path
        if options.preprocess:
            source = Path(scratch) / "preprocessed.onnx"
            quant_pre_process(str(fp32_path), str(source), skip_symbolic_shape=True)
        staged = Path(scratch) / "int8.onnx"
        quantize_static(
            str(source), str(staged), reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(options.op_types),
            nodes_to_exclude=leading_nodes(source, options),
            per_channel=options.per_channel,
            reduce_range=options.reduce_range,
            activation_type=QUANT_TYPES[options.activation_type],
            weight_type=QUANT_TYPES[options.weight_type],
            calibrate_method=CALIBRATION_METHODS[options.calibrate_method],
        )
        # A copy then a rename: a rename across file systems would not be atomic.
        atomic_write_bytes(int8_path, staged.read_bytes())
    return int8_path
