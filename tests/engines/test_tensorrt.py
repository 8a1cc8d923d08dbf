import sys
import types

import numpy as np
import pytest
import torch

from calibration.sets import CalibrationSetSpec, build_calibration_set, neutral_face
from engines import tensorrt_backend
from engines.backend import BackendOptions, BackendUnavailable, GeneratorSource
from engines.cache import CacheOutcome
from engines.export import (
    DEFAULT_TOLERANCES,
    ExportOptions,
    compare_frames,
    export_onnx,
    onnx_frames,
)
from engines.metrics import psnr
from engines.onnx_model import file_sha256
from engines.tensorrt_backend import TensorRTBackend, calibration_digest, engine_key
from vcam.landmarks.raster import rasterise

SIZE = 64


def tensorrt_could_run() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


needs_tensorrt = pytest.mark.skipif(not tensorrt_could_run(), reason="needs TensorRT and a GPU")


def landmark_set(count: int, seed: int) -> np.ndarray:
    spec = CalibrationSetSpec(size=SIZE, count=count, seed=seed)
    return build_calibration_set(neutral_face(SIZE), rasterise, spec)


@pytest.fixture(scope="module")
def onnx_path(generator, tmp_path_factory):
    folder = tmp_path_factory.mktemp("trt")
    return export_onnx(generator, folder / "g.onnx", landmark_set(2, 1)).path


def test_without_tensorrt_the_backend_is_unavailable_not_an_import_error(monkeypatch,
                                                                         onnx_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailable, match="tensorrt is not installed"):
        TensorRTBackend.load(GeneratorSource(SIZE, onnx_path=onnx_path), BackendOptions())


def test_cpu_device_is_refused_before_anything_is_built(monkeypatch, onnx_path):
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.0"))
    with pytest.raises(BackendUnavailable, match="cpu was requested"):
        TensorRTBackend.load(GeneratorSource(SIZE, onnx_path=onnx_path),
                             BackendOptions(device="cpu"))


def test_engine_key_is_made_of_the_model_tensorrt_gpu_and_precision(monkeypatch, onnx_path):
    monkeypatch.setattr(tensorrt_backend, "current_gpu", lambda: ("Fake GPU", "8.6"))
    fake_trt = types.SimpleNamespace(__version__="10.3.0")
    images = landmark_set(2, 0)
    key = engine_key(fake_trt, onnx_path, "int8", images)
    assert (key.onnx_sha256, key.tensorrt_version, key.gpu_name, key.compute_capability,
            key.precision) == (file_sha256(onnx_path), "10.3.0", "Fake GPU", "8.6", "int8")
    assert key.calibration_sha256 == calibration_digest(images) != calibration_digest(images[:1])
    assert engine_key(fake_trt, onnx_path, "fp16").calibration_sha256 == ""


@pytest.mark.tensorrt
@needs_tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_renders_like_onnxruntime_and_is_cached(precision, onnx_path, tmp_path):
    check = landmark_set(4, 2)
    source = GeneratorSource(SIZE, onnx_path=onnx_path, calibration_images=landmark_set(16, 0))
    options = BackendOptions(device="cuda", precision=precision, cache_dir=tmp_path)
    backend = TensorRTBackend.load(source, options)
    backend.warm_up()
    frames, reference = backend.render(check), onnx_frames(onnx_path, check)
    report = compare_frames(reference, frames, precision, DEFAULT_TOLERANCES[precision])
    assert report.passed, report.problem
    assert backend.cached.outcome is CacheOutcome.BUILT
    assert TensorRTBackend.load(source, options).cached.outcome is CacheOutcome.HIT
    on_gpu = backend.render_tensor(torch.from_numpy(check).cuda())
    assert on_gpu.is_cuda and on_gpu.shape == (4, 3, SIZE, SIZE)
    backend.close()


@pytest.mark.tensorrt
@needs_tensorrt
def test_a_qdq_model_builds_int8_without_a_calibrator(generator, tmp_path):
    check = landmark_set(4, 2)
    qdq = export_onnx(generator, tmp_path / "g8.onnx", check, ExportOptions(precision="int8"),
                      landmark_set(16, 0))
    backend = TensorRTBackend.load(GeneratorSource(SIZE, onnx_path=qdq.path),
                                   BackendOptions(device="cuda", precision="int8",
                                                  cache_dir=tmp_path))
    assert backend.cached.engine is not None
    assert not list(tmp_path.glob("*.calib"))
    reference = onnx_frames(qdq.path, check)
    assert psnr(backend.render(check), reference) >= DEFAULT_TOLERANCES["int8"].min_psnr_db
