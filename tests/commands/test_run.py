"""`vcam run` from parsed options: real avatar bundles, real files, one-line errors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import pytest

from tests.conftest import write_rgb
from vcam.avatar import load_avatar, save_avatar
from vcam.commands.options import RETARGET_CHOICES, parse_size
from vcam.commands.run import add_arguments, run
from vcam.data.synthetic import astronaut, moving_face_frames, write_video
from vcam.enroll import Photo, enroll
from vcam.errors import UserError
from vcam.models.store import load_models
from vcam.runtime.retarget import RETARGET_MODES
from vcam.runtime.session import settings_from_args
from vcam.train.finetune import FineTuneSettings


@pytest.fixture(scope="module")
def bundle(tiny_model, dlib_detector, tmp_path_factory) -> Path:
    avatar, _ = enroll([Photo("astronaut", astronaut())], "astronaut", load_models(tiny_model),
                       dlib_detector, FineTuneSettings())
    return save_avatar(avatar, tmp_path_factory.mktemp("avatars") / "a.avatar.safetensors")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clips") / "me.mp4"
    write_video(str(path), moving_face_frames(12, 320, 240, face_size=90), fps=25)
    return path


@pytest.fixture(autouse=True)
def shared_detector(dlib_detector, monkeypatch):
    """The session's dlib detector instead of loading a new one per run (1-2 s each)."""
    monkeypatch.setattr("vcam.runtime.session.create_landmark_detector",
                        lambda settings: dlib_detector)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vcam run")
    add_arguments(parser)
    return parser.parse_args(list(argv))


def frame_count(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    return count


def test_file_run_writes_one_frame_per_input_frame_and_reports_json(bundle, clip, tmp_path,
                                                                    capsys):
    out = tmp_path / "out.mp4"
    code = run(parse("--avatar", str(bundle), "--input", str(clip),
                               "--sink", f"file:{out}", "--size", "320x240", "--json"))
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frames_captured"] == report["frames_output"] == 12
    assert report["dropped"] == 0 and report["reason"] == "end of input"
    assert frame_count(out) == 12


def test_photo_is_enrolled_on_the_fly_and_drives_the_demo(tiny_model, tmp_path, capsys):
    photo = write_rgb(tmp_path / "me.png", astronaut())
    out = tmp_path / "demo.mp4"
    code = run(parse("--photo", str(photo), "--model", str(tiny_model), "--input",
                               "demo", "--sink", f"file:{out}", "--size", "320x240",
                               "--max-frames", "6", "--fps", "60", "--mirror",
                               "--background", "blur"))
    assert code == 0
    printed = capsys.readouterr().out
    assert "frame limit (6)" in printed and "captured" in printed
    assert 1 <= frame_count(out) <= 6


def test_avatar_by_name_from_the_data_folder(bundle, clip, tmp_path, vcam_home):
    (vcam_home / "avatars").mkdir(parents=True)
    (vcam_home / "avatars" / "me.avatar.safetensors").write_bytes(bundle.read_bytes())
    out = tmp_path / "out.mp4"
    assert run(parse("--avatar", "me", "--avatar", str(bundle), "--input", str(clip),
                               "--sink", f"file:{out}", "--size", "160x120",
                               "--max-frames", "3")) == 0
    assert frame_count(out) == 3


def test_built_in_avatar_is_enrolled_once_per_model_and_cached(tiny_model, tmp_path,
                                                               vcam_home):
    def run_demo(out: Path) -> None:
        assert run(parse("--model", str(tiny_model), "--input", "demo", "--sink",
                                   f"file:{out}", "--size", "160x120", "--max-frames", "3",
                                   "--fps", "60")) == 0
        assert 1 <= frame_count(out) <= 3

    run_demo(tmp_path / "first.mp4")
    cached = list((vcam_home / "cache").glob("astronaut-*.avatar.safetensors"))
    assert len(cached) == 1
    first_write = cached[0].stat().st_mtime_ns
    run_demo(tmp_path / "second.mp4")
    assert cached[0].stat().st_mtime_ns == first_write  # reused, not enrolled again
    cached[0].write_bytes(b"not an avatar")
    run_demo(tmp_path / "third.mp4")  # a damaged cache is replaced, not fatal
    assert load_avatar(cached[0]).name == "astronaut"


def test_photo_and_built_in_avatar_never_build_the_discriminator(tiny_model, tmp_path,
                                                                vcam_home, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("inference built the discriminator")

    monkeypatch.setattr("vcam.models.store.Discriminator", refuse)
    photo = write_rgb(tmp_path / "me.png", astronaut())
    for who in (["--photo", str(photo)], []):
        out = tmp_path / f"{len(who)}.mp4"
        assert run(parse(*who, "--model", str(tiny_model), "--input", "demo",
                                   "--sink", f"file:{out}", "--size", "160x120",
                                   "--max-frames", "2", "--fps", "60")) == 0
        assert 1 <= frame_count(out) <= 2


def test_demo_written_to_a_file_is_a_ten_second_clip_with_every_frame(tiny_model, tmp_path,
                                                                      vcam_home, capsys):
    out = tmp_path / "demo.mp4"
    assert run(parse("--model", str(tiny_model), "--input", "demo", "--sink",
                               f"file:{out}", "--size", "160x120", "--fps", "5",
                               "--json")) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frames_captured"] == report["frames_output"] == 50
    assert report["dropped"] == 0
    assert frame_count(out) == 50


def test_no_avatar_and_no_model_is_a_clear_error(clip, monkeypatch, tmp_path):
    monkeypatch.setattr("vcam.models.store.shipped_weights_dir", lambda: tmp_path)
    with pytest.raises(UserError, match=r"no default model.*--model"):
        run(parse("--input", str(clip), "--sink", "file:/tmp/never.mp4"))


def test_no_camera_says_so_and_suggests_a_file(bundle):
    with pytest.raises(UserError, match=r"no camera.*--input FILE"):
        run(parse("--avatar", str(bundle), "--input", "7", "--sink",
                            "file:/tmp/never.mp4", "--size", "160x120"))


def test_no_virtual_camera_device_gives_the_setup_command(bundle, clip):
    with pytest.raises(UserError) as caught:
        run(parse("--avatar", str(bundle), "--input", str(clip), "--size",
                            "160x120"))  # default sink: the virtual camera, absent here
    assert "sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=vcam" in str(
        caught.value)


def test_preview_without_a_display_is_a_clear_error(bundle, clip, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(UserError, match="display"):
        run(parse("--avatar", str(bundle), "--input", str(clip), "--sink", "window",
                            "--size", "160x120"))


def test_options_are_checked_at_the_edge(bundle):
    assert parse_size("1280x720") == (1280, 720)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size("wide")
    with pytest.raises(UserError, match="--input"):
        settings_from_args(parse("--avatar", str(bundle), "--input", "missing.mp4"))
    with pytest.raises(UserError, match="--sink"):
        settings_from_args(parse("--avatar", str(bundle), "--input", "demo", "--sink", "tv"))
    with pytest.raises(SystemExit):
        parse("--avatar", "a", "--photo", "b.png")  # one or the other
    settings = settings_from_args(parse("--avatar", "a", "--avatar", "b", "--input", "demo",
                                        "--sink", "window", "--sink", "virtualcam",
                                        "--retarget", "raw", "--follow-head"))
    assert settings.avatars == ("a", "b") and len(settings.sinks) == 2
    assert settings.pipeline.retarget.mode == "raw"
    assert settings.pipeline.compositor.follow_head
    assert not settings.pipeline.retarget.move_in_crop  # the crop moves instead
    assert settings.pipeline.fps == 30.0


def test_the_retarget_choices_are_the_runtime_modes():
    assert RETARGET_CHOICES == RETARGET_MODES
