import numpy as np
import onnx
import pytest
import torch
from torch import nn

from calibration.sets import CalibrationSetSpec, build_calibration_set, neutral_face
from engines.backend import BackendOptions, GeneratorSource, create_backend
from engines.benchmark import Int8Inputs, TimingSettings, compare_int8_with_fp32
from engines.export import (
    DEFAULT_TOLERANCES,
    ExportMismatchError,
    ExportOptions,
    Tolerance,
    export_onnx,
    torch_frames,
    verify_backend,
)
from engines.metrics import psnr
from engines.onnx_model import model_precision
from vcam.landmarks.raster import rasterise

SIZE = 64
INT8_PSNR_FLOOR_DB = 28.0  # the int8 export tolerance, asserted below


def landmark_set(count: int, seed: int) -> np.ndarray:
    spec = CalibrationSetSpec(size=SIZE, count=count, seed=seed)
    return build_calibration_set(neutral_face(SIZE), rasterise, spec)


@pytest.fixture(scope="module")
def check_images() -> np.ndarray:
    return landmark_set(4, seed=11)


@pytest.fixture(scope="module")
def calibration_images() -> np.ndarray:
    return landmark_set(16, seed=0)


class ExportsDifferently(nn.Module):
    """Renders like the generator in torch but adds 0.01 inside the traced ONNX graph."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, landmarks: torch.Tensor) -> torch.Tensor:
        frames = self.inner(landmarks)
        return frames + 0.01 if torch.onnx.is_in_onnx_export() else frames


def test_fp32_export_matches_torch_within_1e_3(generator, check_images, tmp_path):
    result = export_onnx(generator, tmp_path / "g.onnx", check_images)
    assert result.report.passed and result.report.max_abs_diff <= 1e-3
    model = onnx.load(str(result.path))
    assert model.opset_import[0].version == 17
    assert [item.name for item in model.graph.input] == ["landmarks"]
    assert [item.name for item in model.graph.output] == ["frame"]
    dims = [dim.dim_value for dim in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, SIZE, SIZE]
    assert [path.name for path in tmp_path.iterdir()] == ["g.onnx"]


def test_fp16_export_is_half_precision_inside_and_close(generator, check_images, tmp_path):
    result = export_onnx(generator, tmp_path / "g16.onnx", check_images,
                         ExportOptions(precision="fp16"))
    assert model_precision(result.path) == "fp16"
    fp16 = DEFAULT_TOLERANCES["fp16"]
    assert result.report.max_abs_diff <= fp16.max_abs_diff
    assert result.report.psnr_db >= fp16.min_psnr_db


def test_int8_export_stays_above_the_psnr_floor(generator, check_images, calibration_images,
                                                tmp_path):
    assert DEFAULT_TOLERANCES["int8"].min_psnr_db == INT8_PSNR_FLOOR_DB
    result = export_onnx(generator, tmp_path / "g8.onnx", check_images,
                         ExportOptions(precision="int8"), calibration_images)
    assert model_precision(result.path) == "int8"
    assert result.float_leading_fraction in ExportOptions().int8_float_fractions
    backend = create_backend("onnxruntime", GeneratorSource(SIZE, onnx_path=result.path),
                             BackendOptions(device="cpu", precision="int8"))
    frames = backend.render(check_images)
    assert psnr(frames, torch_frames(generator, check_images)) >= INT8_PSNR_FLOOR_DB


def test_export_refuses_a_graph_that_differs_from_torch(generator, check_images, tmp_path):
    with pytest.raises(ExportMismatchError, match=r"exceeds the limit 0\.001 by 0\.00"):
        export_onnx(ExportsDifferently(generator), tmp_path / "bad.onnx", check_images)
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_below_a_stricter_tolerance(generator, check_images, tmp_path):
    strict = ExportOptions(tolerance=Tolerance(max_abs_diff=0.0))
    with pytest.raises(ExportMismatchError, match="fp32 ONNX graph") as caught:
        export_onnx(generator, tmp_path / "strict.onnx", check_images, strict)
    assert caught.value.report.max_abs_diff > 0
    unreachable = ExportOptions(precision="int8", tolerance=Tolerance(min_psnr_db=200.0),
                                int8_float_fractions=(0.0,))
    with pytest.raises(ExportMismatchError, match=r"dB below the floor of 200\.00 dB"):
        export_onnx(generator, tmp_path / "int8.onnx", check_images, unreachable,
                    check_images)
    assert list(tmp_path.iterdir()) == []


def test_int8_export_without_calibration_images_is_refused(generator, check_images, tmp_path):
    with pytest.raises(ValueError, match="calibration images"):
        export_onnx(generator, tmp_path / "g.onnx", check_images, ExportOptions(precision="int8"))


def test_a_backend_is_verified_against_the_previous_step(generator, check_images, tmp_path):
    path = export_onnx(generator, tmp_path / "g.onnx", check_images).path
    backend = create_backend("onnxruntime", GeneratorSource(SIZE, onnx_path=path),
                             BackendOptions(device="cpu"))
    reference = torch_frames(generator, check_images)
    assert verify_backend(backend, check_images, reference, "fp32").passed
    with pytest.raises(ExportMismatchError, match="onnxruntime fp32 engine"):
        verify_backend(backend, check_images, reference + 0.1, "fp32")


def test_int8_against_fp32_report(generator, check_images, calibration_images, tmp_path):
    path = export_onnx(generator, tmp_path / "g.onnx", check_images).path
    report = compare_int8_with_fp32(path, check_images, Int8Inputs(
        calibration_images=calibration_images), threads=1, timing=TimingSettings(1, 3))
    assert report.psnr_db >= 25.0  # every convolution quantised: ~28 dB on this model
    for stats in (report.fp32, report.int8):
        assert 0 < stats.median_ms <= stats.p95_ms and stats.samples == 3
    assert report.to_dict()["speedup"] == pytest.approx(report.speedup)
