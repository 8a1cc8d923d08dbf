import sys

import numpy as np
import pytest
import torch

from calibration.sets import CalibrationSetSpec, build_calibration_set, neutral_face
from engines.backend import (
    AUTO_ORDER,
    Backend,
    BackendInfo,
    BackendOptions,
    BackendRegistry,
    BackendUnavailable,
    GeneratorSource,
    NoBackendError,
    create_backend,
)
from engines.export import torch_to_onnx
from engines.onnxruntime_backend import choose_providers
from vcam.landmarks.raster import rasterise

SIZE = 64
FP32_PARITY = 1e-3


def tensorrt_could_run() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.fixture(scope="module")
def source(generator, tmp_path_factory) -> GeneratorSource:
    onnx_path = torch_to_onnx(generator, tmp_path_factory.mktemp("model") / "g.onnx", SIZE)
    return GeneratorSource(image_size=SIZE, module=generator, onnx_path=onnx_path)


@pytest.fixture(scope="module")
def landmark_images() -> np.ndarray:
    spec = CalibrationSetSpec(size=SIZE, count=4, seed=5)
    return build_calibration_set(neutral_face(SIZE), rasterise, spec)


CPU = BackendOptions(device="cpu", threads=1, warmup_iterations=1)


@pytest.mark.parametrize("name", ["torch", "onnxruntime"])
def test_backend_renders_what_torch_renders(name, source, generator, landmark_images):
    backend = create_backend(name, source, CPU)
    assert isinstance(backend, Backend)
    backend.warm_up()
    frames = backend.render(landmark_images)  # a batch of 4 through a batch-1 model
    with torch.no_grad():
        expected = generator(torch.from_numpy(landmark_images)).numpy()
    assert frames.shape == (4, 3, SIZE, SIZE) and frames.dtype == np.float32
    assert np.abs(frames - expected).max() <= FP32_PARITY
    info = backend.describe()
    assert (info.name, info.device, info.precision, info.image_size) == (name, "cpu", "fp32",
                                                                         SIZE)
    backend.close()


def test_onnxruntime_session_uses_the_cpu_provider_and_the_thread_count(source):
    info = create_backend("onnxruntime", source, CPU).describe()
    assert info.providers == ("CPUExecutionProvider",) and info.threads == 1
    assert info.model_path == str(source.onnx_path) and info.to_dict()["providers"] == [
        "CPUExecutionProvider"]


def test_gpu_providers_come_first_only_when_listed():
    listed = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(listed, "auto") == listed
    assert choose_providers(listed, "cpu") == ["CPUExecutionProvider"]
    assert choose_providers(["CPUExecutionProvider"], "auto") == ["CPUExecutionProvider"]
    with pytest.raises(BackendUnavailable, match="no GPU provider"):
        choose_providers(["CPUExecutionProvider"], "cuda")


@pytest.mark.skipif(tensorrt_could_run(), reason="TensorRT would win auto-selection here")
def test_auto_picks_onnxruntime_without_tensorrt(source):
    assert create_backend("auto", source, CPU).describe().name == "onnxruntime"


def test_auto_falls_back_to_torch_without_onnxruntime(source, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now fails
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert create_backend("auto", source, CPU).describe().name == "torch"


def test_when_nothing_works_one_error_lists_every_reason(generator):
    module_only = GeneratorSource(image_size=SIZE, module=generator)
    options = BackendOptions(device="cpu", precision="fp16")
    with pytest.raises(NoBackendError) as caught:
        create_backend("auto", module_only, options)
    assert list(caught.value.reasons) == list(AUTO_ORDER)
    message = str(caught.value)
    assert "no ONNX model" in message and "fp16 in torch needs a CUDA GPU" in message
    assert caught.value.reasons["tensorrt"] in message


def test_a_named_backend_that_cannot_run_reports_its_reason(generator, source):
    with pytest.raises(NoBackendError, match="torch: int8 has no torch path"):
        create_backend("torch", source, BackendOptions(device="cpu", precision="int8"))
    with pytest.raises(NoBackendError, match="holds a fp32 model but int8 was requested"):
        create_backend("onnxruntime", source, BackendOptions(device="cpu", precision="int8"))
    with pytest.raises(ValueError, match="unknown backend 'onnx'"):
        create_backend("onnx", source, CPU)


class FakeBackend:
    def __init__(self, name: str) -> None:
        self.name = name

    def warm_up(self) -> None: ...

    def render(self, landmark_images: np.ndarray) -> np.ndarray:
        return landmark_images

    def describe(self) -> BackendInfo:
        return BackendInfo(self.name, "cpu", "fp32", SIZE)

    def close(self) -> None: ...


def unavailable(source, options):
    raise BackendUnavailable("not here")


def test_registry_tries_auto_order_then_the_rest(source):
    registry = BackendRegistry()
    registry.register("extra", lambda source, options: FakeBackend("extra"))
    registry.register("torch", unavailable)
    backend = create_backend("auto", source, CPU, registry)
    assert backend.describe().name == "extra"
    with pytest.raises(ValueError, match="reserved"):
        registry.register("auto", unavailable)


def test_torch_backend_wraps_the_module_in_torch_compile_when_asked(source):
    backend = create_backend("torch", source, BackendOptions(device="cpu", compile=True))
    assert backend.describe().compiled
    assert hasattr(backend.module, "_orig_mod")  # compilation itself happens on first call


def test_wrongly_shaped_batches_are_refused(source):
    backend = create_backend("onnxruntime", source, CPU)
    with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\)"):
        backend.render(np.zeros((1, 3, 32, 32), np.float32))


def test_options_are_validated():
    with pytest.raises(ValueError, match="precision"):
        BackendOptions(precision="int4")
    with pytest.raises(ValueError, match="device"):
        BackendOptions(device="tpu")
