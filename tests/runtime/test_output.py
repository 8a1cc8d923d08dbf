"""Compositor, sink parsing and validation, file sink colour order, preview and keys."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vcam.errors import UserError
from vcam.runtime.compositor import CARD_COLOUR, Background, Compositor, CompositorSettings
from vcam.runtime.controls import Command, Controls, SelectAvatar, handle_key
from vcam.runtime.file_sink import FileSink
from vcam.runtime.frames import FaceState, Frame, FrameKind
from vcam.runtime.preview import PreviewLayout, overlay_lines
from vcam.runtime.sinks import (
    V4L2LOOPBACK_SETUP,
    SinkSpec,
    check_canvas,
    display_available,
    virtual_camera_help,
)
from vcam.runtime.stats import StatsSnapshot

RED = (200, 30, 10)
STATS = StatsSnapshot(25.0, 80.0, 120.0, {"capture": 1.0, "landmarks": 5.0, "render": 40.0,
                                           "output": 3.0}, 2, 100)


def avatar_frame(rendered: np.ndarray, **fields) -> Frame:
    return Frame(0, 0.0, 0.0, rendered=rendered, **fields)


def test_crop_is_placed_centred_at_a_steady_scale_over_the_background():
    settings = CompositorSettings(320, 240, Background("colour", RED), face_fraction=0.5)
    compositor = Compositor(settings)
    canvas = compositor.compose(avatar_frame(np.full((64, 64, 3), 255, np.uint8)))
    assert canvas.shape == (240, 320, 3) and canvas.dtype == np.uint8
    assert tuple(canvas[5, 5]) == RED
    assert tuple(canvas[120, 160]) == (255, 255, 255)  # the crop, 120 px, at the centre
    assert tuple(canvas[120, 160 - 70]) == RED
    again = compositor.compose(avatar_frame(np.full((64, 64, 3), 255, np.uint8)))
    assert again is canvas  # the canvas buffer is reused


def test_mirror_flips_the_output():
    rendered = np.zeros((64, 64, 3), np.uint8)
    rendered[:, :32] = 255  # left half white
    settings = CompositorSettings(200, 100, Background("colour", (0, 0, 0)), face_fraction=1.0,
                                  feather=0.0)
    plain = Compositor(settings).compose(avatar_frame(rendered)).copy()
    mirrored = Compositor(CompositorSettings(200, 100, Background("colour", (0, 0, 0)),
                                             face_fraction=1.0, feather=0.0, mirror=True)
                          ).compose(avatar_frame(rendered))
    np.testing.assert_array_equal(mirrored, plain[:, ::-1])


def test_blurred_background_comes_from_the_driver_frame():
    driver = np.zeros((480, 640, 3), np.uint8)
    driver[:, :, 2] = 250  # a blue room
    compositor = Compositor(CompositorSettings(320, 240, Background("blur"), face_fraction=0.5))
    canvas = compositor.compose(avatar_frame(np.zeros((64, 64, 3), np.uint8), image=driver))
    assert canvas[5, 5, 2] > 200 and canvas[5, 5, 0] < 20


def test_image_background(tmp_path):
    path = tmp_path / "room.png"
    cv2.imwrite(str(path), np.full((50, 80, 3), (10, 20, 30), np.uint8))  # BGR on disk
    assert Background.parse(str(path)).kind == "image"
    compositor = Compositor(CompositorSettings(160, 120, Background.parse(str(path))))
    canvas = compositor.compose(avatar_frame(None))
    assert tuple(canvas[2, 2]) == (30, 20, 10)  # RGB in the canvas


def test_follow_head_moves_the_crop_smoothly_towards_the_face():
    settings = CompositorSettings(320, 240, Background("colour", (0, 0, 0)), face_fraction=0.4,
                                  follow_head=True, follow_seconds=0.2)
    compositor = Compositor(settings)
    white = np.full((64, 64, 3), 255, np.uint8)
    driver = np.zeros((240, 320, 3), np.uint8)
    face = np.stack(np.meshgrid(np.linspace(40, 80, 17), np.linspace(100, 140, 4)),
                    -1).reshape(-1, 2)[:68].astype(np.float32)  # a face on the left
    first = compositor.compose(avatar_frame(white, image=driver, driver_points=face))
    assert first[120, 60].max() == 255 and first[120, 260].max() == 0  # jumps there at once
    moved = face + np.array([200.0, 0.0], np.float32)
    frame = Frame(1, 0.1, 0.1, image=driver, driver_points=moved, rendered=white)
    centre_after_step = compositor._crop_centre(frame)[0]
    assert 60 < centre_after_step < 250  # on its way, not there yet


def test_camera_lost_card():
    compositor = Compositor(CompositorSettings(320, 240))
    canvas = compositor.compose(Frame(0, 0.0, 0.0, kind=FrameKind.CAMERA_LOST))
    assert tuple(canvas[2, 2]) == CARD_COLOUR
    assert canvas.max() > 200  # the text


def test_background_option_parsing():
    assert Background.parse("blur").kind == "blur"
    assert Background.parse("#ff8000").colour == (255, 128, 0)
    with pytest.raises(UserError, match="--background"):
        Background.parse("no-such-picture.png")


def test_sink_specs():
    assert SinkSpec.parse("virtualcam") == SinkSpec("virtualcam")
    assert SinkSpec.parse("window") == SinkSpec("window")
    assert SinkSpec.parse("file:out/run.mp4").path.name == "run.mp4"
    for wrong in ("file:", "printer", "window:1"):
        with pytest.raises(UserError, match="--sink"):
            SinkSpec.parse(wrong)


def test_sinks_validate_frames(tmp_path):
    with pytest.raises(ValueError, match="RGB uint8"):
        check_canvas(np.zeros((240, 320, 3), np.float32), 320, 240)
    with FileSink(tmp_path / "out.mp4", 320, 240, 25) as sink, pytest.raises(ValueError):
        sink.send(np.zeros((240, 321, 3), np.uint8), Frame(0, 0.0, 0.0), STATS)


def test_file_sink_writes_bgr_so_players_see_the_right_colours(tmp_path):
    path = tmp_path / "out.mp4"
    canvas = np.zeros((240, 320, 3), np.uint8)
    canvas[:] = RED
    with FileSink(path, 320, 240, 25) as sink:
        for _ in range(3):
            sink.send(canvas, Frame(0, 0.0, 0.0), STATS)
    assert sink.frames_written == 3
    capture = cv2.VideoCapture(str(path))
    ok, bgr = capture.read()
    capture.release()
    assert ok
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    np.testing.assert_allclose(rgb[120, 160].astype(int), RED, atol=12)


def test_file_sink_refuses_other_formats(tmp_path):
    with pytest.raises(UserError, match=r"\.mp4"), FileSink(tmp_path / "out.avi", 32, 32, 25):
        pass


def test_virtual_camera_help_names_the_setup_command():
    assert V4L2LOOPBACK_SETUP in virtual_camera_help("Linux")
    assert V4L2LOOPBACK_SETUP == ("sudo modprobe v4l2loopback devices=1 exclusive_caps=1 "
                                  "card_label=vcam")
    assert "OBS" in virtual_camera_help("Windows") and "OBS" in virtual_camera_help("Darwin")


def test_display_detection():
    assert not display_available({}, "Linux")
    assert display_available({"DISPLAY": ":0"}, "Linux")
    assert display_available({"WAYLAND_DISPLAY": "wayland-0"}, "Linux")
    assert display_available({}, "Darwin")


def test_keys_map_to_controls():
    controls = Controls(avatar_count=2)
    handle_key(ord("2"), controls)
    handle_key(ord("9"), controls)  # no ninth avatar: ignored
    handle_key(ord("n"), controls)
    assert controls.landmark_commands() == [SelectAvatar(1), Command.RESET_NEUTRAL]
    assert controls.landmark_commands() == []
    handle_key(ord("o"), controls)
    assert not controls.overlay.is_set()
    handle_key(-1, controls)
    assert not controls.stop.is_set()
    handle_key(27, controls)
    assert controls.stop.is_set() and controls.quit_requested


def test_preview_shows_driver_landmarks_avatar_and_stats():
    layout = PreviewLayout(1280, 720, height=180)
    driver = np.full((480, 640, 3), 90, np.uint8)
    points = np.stack([np.linspace(20, 44, 68), np.linspace(20, 44, 68)], 1).astype(np.float32)
    frame = Frame(0, 0.0, 0.0, image=driver, driver_points=points * 10,
                  avatar_points=points, face_state=FaceState.TRACKING)
    canvas = np.full((720, 1280, 3), 200, np.uint8)
    lines = overlay_lines(STATS, frame, "astronaut")
    assert "25.0 fps" in lines[0] and "render 40" in lines[1] and "astronaut" in lines[2]
    image = layout.compose(frame, canvas, [], crop_size=64, demo_crop_size=64)
    assert image.shape == (180, 240 + 180 + 320, 3)
    assert image[170, 10].tolist() == [90, 90, 90]  # driver panel
    assert image[:, 240:420].max() > 0  # landmark panel has drawing
    assert image[170, 700].tolist() == [200, 200, 200]  # avatar panel
