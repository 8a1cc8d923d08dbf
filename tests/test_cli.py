import json
import subprocess
import sys

import pytest

from tests.conftest import REPO
from vcam.cli import main
from vcam.data.synthetic import moving_face_frames, write_video


def run_vcam(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "run_vcam.py"), *args],
                          capture_output=True, text=True, timeout=300, cwd=REPO)


def test_help_lists_the_commands():
    result = run_vcam("--help")
    assert result.returncode == 0
    assert "preprocess" in result.stdout and "bench" in result.stdout


def test_user_error_is_one_line_with_exit_code_2(tmp_path):
    result = run_vcam("preprocess", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


def test_preprocess_prints_a_json_summary(tmp_path, capsys):
    write_video(str(tmp_path / "clip.mp4"), moving_face_frames(12, 320, 240, face_size=90))
    code = main(["preprocess", str(tmp_path / "clip.mp4"), "--out", str(tmp_path / "out"),
                 "--size", "64", "--workers", "1", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["clips"] == 1 and summary["frames_kept"] == 12
    assert summary["frames_per_second"] > 0


@pytest.mark.slow
def test_landmark_bench_reports_figures(tmp_path, capsys):
    code = main(["bench", "landmarks", "--frames", "20", "--clips", "1", "--workers", "1",
                 "--data", str(tmp_path / "none"), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    per_frame = report["per_frame"]
    assert per_frame["tracked"]["faces_found"] == 20
    assert per_frame["tracked"]["detections"] < 20
    assert per_frame["detect_every_frame"]["mean_ms"] > 0
    assert report["preprocess"]["source"] == "synthetic astronaut clips"
    assert report["preprocess"]["frames_kept"] == 100


@pytest.mark.slow
def test_train_bench_reports_seconds_per_step(capsys):
    code = main(["bench", "train", "--config", "tiny", "--steps", "1", "--shots", "2",
                 "--vgg", "none", "--no-identity-loss", "--device", "cpu", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["config"] == "tiny" and report["steps"] == 1
    assert report["seconds_per_step_median"] > 0
    assert report["peak_rss_mb"] >= report["rss_before_steps_mb"] > 0


def test_train_meta_refuses_bad_data_in_one_line(tmp_path):
    result = run_vcam("train", "meta", "--data", str(tmp_path), "--config", "tiny",
                      "--out", str(tmp_path / "run"), "--vgg", "none")
    assert result.returncode == 2
    assert "not a preprocessed dataset" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_a_cavity_needs_the_warp_guided_generator(tmp_path):
    result = run_vcam("train", "meta", "--data", str(tmp_path), "--config", "tiny",
                      "--out", str(tmp_path / "run"), "--vgg", "none", "--mouth-input", "cavity")
    assert result.returncode == 2
    assert "--generator warp" in result.stderr and result.stderr.strip().count("\n") == 0


def test_run_vcam_without_a_command_runs_the_camera(tmp_path):
    from vcam.cli import with_default_command

    assert with_default_command([]) == ["run"]
    assert with_default_command(["--input", "demo"]) == ["run", "--input", "demo"]
    assert with_default_command(["--help"]) == ["--help"]
    assert with_default_command(["enroll", "x.jpg"]) == ["enroll", "x.jpg"]
    result = run_vcam("--input", "demo", "--sink", f"file:{tmp_path / 'out.mp4'}",
                      "--avatar", str(tmp_path / "missing.avatar.safetensors"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "invalid choice" not in result.stderr


def test_building_every_command_imports_nothing_heavy():
    """The CLI builds every command's parser at start-up: no command's options may pull in
    torch, OpenCV, numpy or the network stack for the others."""
    check = ("import sys; from vcam.cli import build_parser; build_parser(); "
             "print(sorted({'torch', 'cv2', 'numpy', 'aiortc', 'aiohttp'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                            check=True, cwd=REPO)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("argv", [
    ["run", "--backend", "{}"],
    ["call", "join", "http://127.0.0.1:8765/call", "--token", "t", "--avatar", "a",
     "--backend", "{}"],
    ["bench", "pipeline", "--backend", "{}"],
])
def test_one_name_for_onnx_runtime_in_every_backend_option(argv, capsys):
    from vcam.cli import build_parser

    def backend(name: str):
        return build_parser().parse_args([part.format(name) for part in argv]).backend

    assert backend("onnx") == backend("onnxruntime") == "onnxruntime"  # the engine's name
    assert backend("tensorrt") == "tensorrt" and backend("torch") == "torch"
    with pytest.raises(SystemExit) as exit_info:
        backend("onnxrt")
    assert exit_info.value.code == 2
    assert "choose from auto, torch, onnx, tensorrt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv[:-2], "--help"])
    shown = capsys.readouterr().out
    assert "--backend auto|torch|onnx|tensorrt" in shown and "onnxruntime" not in shown


def test_the_render_bench_takes_several_engines_by_their_command_line_names():
    from vcam.cli import build_parser

    args = build_parser().parse_args(["bench", "render", "--backend", "torch", "onnx"])
    assert args.backend == ["torch", "onnxruntime"]
    assert build_parser().parse_args(["bench", "render"]).backend == [
        "torch", "onnxruntime", "tensorrt"]
    assert build_parser().parse_args(["compile", "me", "--backend", "onnx"]).backend == "onnx"
