"""The H.264 file sink: what it writes, and what it refuses to write over."""

from __future__ import annotations

import hashlib
from pathlib import Path

import av
import numpy as np
import pytest

from vcam.avatar import save_avatar
from vcam.cli import main
from vcam.data.synthetic import astronaut, moving_face_frames, write_video
from vcam.enroll import Photo, enroll
from vcam.errors import UserError
from vcam.models.store import load_models
from vcam.runtime.file_sink import FileSink, frame_rate, same_file
from vcam.runtime.frames import Frame
from vcam.runtime.stats import StatsSnapshot
from vcam.train.finetune import FineTuneSettings

STATS = StatsSnapshot(0.0, 0.0, 0.0, {}, 0, 0)


def write_frames(path: Path, count: int, width: int = 64, height: int = 48, **options) -> FileSink:
    with FileSink(path, width, height, 25, **options) as sink:
        for index in range(count):
            canvas = np.full((height, width, 3), (10 * index, 100, 200), np.uint8)
            sink.send(canvas, Frame(index, 0.0, 0.0), STATS)
    return sink


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_output_is_h264_yuv420p_with_every_frame_and_the_index_up_front(tmp_path):
    path = tmp_path / "out.mp4"
    assert write_frames(path, 7).frames_written == 7
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.width, stream.height) == (64, 48)
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    assert len(frames) == 7
    np.testing.assert_allclose(frames[3][24, 32].astype(int), (30, 100, 200), atol=10)
    data = path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # +faststart: playable while loading
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]  # no temporary file left
    assert path.stat().st_mode & 0o777 == 0o644


def test_nothing_is_written_before_the_end_and_nothing_after_a_failed_run(tmp_path):
    path = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="start-up"), FileSink(path, 64, 48, 25) as sink:
        sink.send(np.zeros((48, 64, 3), np.uint8), Frame(0, 0.0, 0.0), STATS)
        assert not path.exists()  # written aside until the sink closes
        raise RuntimeError("start-up failed")
    assert list(tmp_path.iterdir()) == []
    with FileSink(path, 64, 48, 25):
        pass  # no frame ever came: no empty video either
    assert list(tmp_path.iterdir()) == []


def test_existing_files_are_kept_unless_forced(tmp_path):
    path = tmp_path / "out.mp4"
    path.write_bytes(b"precious")
    with pytest.raises(UserError, match="--force"):
        write_frames(path, 2)
    assert path.read_bytes() == b"precious"
    write_frames(path, 2, force=True)
    assert path.read_bytes() != b"precious"


def test_refusals_input_file_odd_size_other_formats(tmp_path):
    clip = tmp_path / "in.mp4"
    clip.write_bytes(b"video")
    link = tmp_path / "link.mp4"
    link.symlink_to(clip)
    assert same_file(link, clip) and same_file(tmp_path / "." / "in.mp4", clip)
    for path in (clip, link):
        with pytest.raises(UserError, match="is the input"):
            write_frames(path, 1, force=True, inputs=[clip])
    with pytest.raises(UserError, match="even"):
        write_frames(tmp_path / "odd.mp4", 1, width=65)
    with pytest.raises(UserError, match=r"\.mp4"):
        write_frames(tmp_path / "out.avi", 1)
    assert clip.read_bytes() == b"video" and sorted(p.name for p in tmp_path.iterdir()) == [
        "in.mp4", "link.mp4"]
    assert frame_rate(30.0) == 30 and frame_rate(30000 / 1001).denominator == 1001


@pytest.fixture(scope="module")
def bundle(tiny_model, dlib_detector, tmp_path_factory) -> Path:
    avatar, _ = enroll([Photo("astronaut", astronaut())], "astronaut", load_models(tiny_model),
                       dlib_detector, FineTuneSettings())
    return save_avatar(avatar, tmp_path_factory.mktemp("avatars") / "a.avatar.safetensors")


@pytest.fixture
def clip(tmp_path) -> Path:
    path = tmp_path / "me.mp4"
    write_video(str(path), moving_face_frames(6, 160, 120, face_size=60), fps=25)
    return path


def run_command(capsys, *argv: str) -> tuple[int, str]:
    code = main(["run", *argv])
    return code, capsys.readouterr().err


def test_vcam_run_refuses_to_write_over_its_input(bundle, clip, capsys):
    before = digest(clip)
    for extra in ((), ("--force",)):
        code, err = run_command(capsys, "--avatar", str(bundle), "--input", str(clip),
                                "--sink", f"file:{clip}", "--size", "160x120", *extra)
        assert code == 2 and "is the input video" in err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert digest(clip) == before
    assert sorted(p.name for p in clip.parent.iterdir()) == ["me.mp4"]


def test_vcam_run_refuses_an_existing_output_without_force(bundle, clip, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"an earlier recording")
    code, err = run_command(capsys, "--avatar", str(bundle), "--input", str(clip),
                            "--sink", f"file:{out}", "--size", "160x120")
    assert code == 2 and "--force" in err and len(err.strip().splitlines()) == 1
    assert out.read_bytes() == b"an earlier recording"


def test_vcam_run_that_fails_to_start_leaves_no_file(bundle, clip, tmp_path, capsys):
    out = tmp_path / "out" / "out.mp4"
    code, err = run_command(capsys, "--avatar", str(bundle), "--input", str(clip),
                            "--sink", f"file:{out}", "--size", "160x120",
                            "--backend", "tensorrt", "--device", "cpu")
    assert code == 2 and "Traceback" not in err
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
