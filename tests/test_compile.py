import importlib.util
import json

import numpy as np
import pytest
import torch

from tests.conftest import write_rgb
from vcam.avatar import load_avatar
from vcam.cli import main
from vcam.compiled import compiled_dir, generator_inputs, generator_source, onnx_path


@pytest.fixture
def enrolled(vcam_home, tiny_model, astronaut_image, tmp_path):
    photo = write_rgb(tmp_path / "me.png", astronaut_image)
    assert main(["enroll", str(photo), "--name", "me", "--model", str(tiny_model)]) == 0
    return vcam_home / "avatars" / "me.avatar.safetensors"


def test_compile_writes_a_checked_onnx_the_runtime_finds(enrolled, capsys):
    from engines.backend import BackendOptions, create_backend

    assert main(["compile", "me", "--backend", "onnx", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    avatar = load_avatar(enrolled)
    path = onnx_path(avatar, "fp32")
    assert report["onnx"] == str(path) and path.is_file()
    assert report["max_abs_diff_fp32"] <= 1e-3
    stamp = path.stat().st_mtime_ns
    source = generator_source(avatar, "onnxruntime", announce=False)
    assert source.onnx_path == path and path.stat().st_mtime_ns == stamp
    backend = create_backend("onnxruntime", source, BackendOptions(device="cpu"))
    images = generator_inputs(avatar, 4, seed=5)
    torch_frames = create_backend("torch", source, BackendOptions(device="cpu")).render(images)
    assert np.abs(backend.render(images) - torch_frames).max() <= 1e-3


def test_int8_compile_reports_its_quality(enrolled, capsys):
    assert main(["compile", "me", "--precision", "int8", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["precision"] == "int8"
    assert report["check"]["psnr_db"] >= 28


def test_a_changed_avatar_never_reuses_compiled_files(enrolled, tiny_model, astronaut_image,
                                                      tmp_path):
    first = compiled_dir(load_avatar(enrolled))
    photo = write_rgb(tmp_path / "flipped.png", np.ascontiguousarray(astronaut_image[:, ::-1]))
    assert main(["enroll", str(photo), "--name", "me", "--model", str(tiny_model),
                 "--force"]) == 0
    assert compiled_dir(load_avatar(enrolled)) != first


def test_tensorrt_compile_without_tensorrt_is_a_clear_error(enrolled, capsys):
    pytest.importorskip("onnxruntime")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    assert main(["compile", "me", "--backend", "tensorrt", "--precision", "fp16"]) == 2
    error = capsys.readouterr().err
    assert "cannot build a TensorRT engine here" in error and error.count("\n") == 1


def test_render_bench_reports_each_backend(capsys):
    assert main(["bench", "render", "--config", "tiny", "--repeats", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"torch cpu fp32", "onnxruntime cpu fp32"} <= set(report["backends"])
    for stats in report["backends"].values():
        assert 0 < stats["median_ms"] <= stats["p95_ms"]
    assert report["onnxruntime_int8_vs_fp32"]["psnr_db"] > 20
    has_tensorrt = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()
    timed_or_not = report["backends"] if has_tensorrt else report["unavailable"]
    assert any(name.startswith("tensorrt") for name in timed_or_not)
