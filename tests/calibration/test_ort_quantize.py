import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from calibration.ort_quantize import (
    LandmarkImageReader,
    QuantisationOptions,
    leading_nodes,
    quantise_static,
)
from calibration.sets import CalibrationSetSpec, build_calibration_set, neutral_face
from engines.export import torch_to_onnx
from vcam.landmarks.raster import rasterise
from vcam.models import Generator, PersonalisedGenerator, get_config

SIZE = 64
# Default settings on the seeded random-weight tiny generator measure about 28 dB.
RAW_INT8_PSNR_FLOOR_DB = 25.0


def landmark_set(count: int, seed: int) -> np.ndarray:
    spec = CalibrationSetSpec(size=SIZE, count=count, seed=seed)
    return build_calibration_set(neutral_face(SIZE), rasterise, spec)


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory):
    torch.manual_seed(0)
    generator = Generator(get_config("tiny"))
    psi = torch.randn(1, generator.adain_param_count) * 0.1
    module = PersonalisedGenerator(generator, psi).deployable()
    return torch_to_onnx(module, tmp_path_factory.mktemp("quantise") / "fp32.onnx", SIZE)


def run(path, images):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"landmarks": image[None]})[0] for image in images])


def psnr(a, b):
    return 10 * np.log10(4.0 / np.mean((a.astype(np.float64) - b) ** 2))


def test_qdq_int8_frames_stay_within_the_psnr_floor(fp32_model, tmp_path):
    int8_path = quantise_static(fp32_model, tmp_path / "int8.onnx", landmark_set(16, 0))
    ops = {node.op_type for node in onnx.load(str(int8_path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    check = landmark_set(6, 1)
    assert psnr(run(fp32_model, check), run(int8_path, check)) >= RAW_INT8_PSNR_FLOOR_DB
    assert [path.name for path in tmp_path.iterdir()] == ["int8.onnx"]


def test_leading_fraction_keeps_the_first_nodes_float(fp32_model):
    every_conv = leading_nodes(fp32_model, QuantisationOptions(float_leading_fraction=1.0))
    quarter = leading_nodes(fp32_model, QuantisationOptions(float_leading_fraction=0.25))
    assert leading_nodes(fp32_model, QuantisationOptions()) == []
    assert quarter == every_conv[: len(quarter)] and 0 < len(quarter) < len(every_conv)


def test_reader_feeds_every_image_once_per_pass_and_rewinds():
    images = landmark_set(3, 0)
    reader = LandmarkImageReader(images, "landmarks")
    first_pass = [reader.get_next() for _ in range(4)]
    assert first_pass[-1] is None
    np.testing.assert_array_equal(first_pass[1]["landmarks"], images[1:2])
    reader.rewind()
    assert reader.get_next()["landmarks"].shape == (1, 3, SIZE, SIZE)


def test_options_are_checked():
    with pytest.raises(ValueError, match="activation_type"):
        QuantisationOptions(activation_type="int4")
    with pytest.raises(ValueError, match="float_leading_fraction"):
        QuantisationOptions(float_leading_fraction=1.5)
