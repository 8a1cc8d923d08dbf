"""The real-time pipeline end to end, with real avatars (a random `tiny` model, the astronaut
enrolled feed-forward), real video files and the real sinks. Fakes stand in only for hardware
this machine lacks: a webcam that drops out, a virtual camera device (registered through
pyvirtualcam's own backend registry) and a desktop display."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import pyvirtualcam
from pyvirtualcam.util import encode_fourcc

from tests.conftest import VIRTUALCAM_BACKEND
from vcam.avatar import load_avatar, save_avatar
from vcam.data.synthetic import astronaut, moving_face_frames, write_video
from vcam.enroll import Photo, enroll
from vcam.landmarks.tracker import FaceTracker
from vcam.models.store import load_models
from vcam.runtime.avatars import AvatarEntry, AvatarLibrary, RendererSettings
from vcam.runtime.capture import CameraSource, ReconnectSettings, VideoFileSource
from vcam.runtime.compositor import Background, CompositorSettings
from vcam.runtime.controls import Controls
from vcam.runtime.demo import DemoAnimation, DemoSource
from vcam.runtime.file_sink import FileSink
from vcam.runtime.frames import Frame
from vcam.runtime.pipeline import Pipeline, PipelineSettings
from vcam.runtime.sinks import VirtualCameraSink, WindowSink
from vcam.runtime.stats import StatsSnapshot
from vcam.train.finetune import FineTuneSettings

WIDTH, HEIGHT = 320, 240
RED = (200, 30, 10)


@pytest.fixture(scope="module")
def bundles(tiny_model, dlib_detector, tmp_path_factory) -> list[Path]:
    """Two avatar bundles: the astronaut, and the astronaut mirrored (another 'person')."""
    folder = tmp_path_factory.mktemp("avatars")
    models = load_models(tiny_model)
    paths = []
    for name, photo in (("astronaut", astronaut()), ("mirrored", astronaut()[:, ::-1].copy())):
        avatar, _ = enroll([Photo(name, photo)], name, models, dlib_detector,
                           FineTuneSettings())
        paths.append(save_avatar(avatar, folder / f"{name}.avatar.safetensors"))
    return paths


@pytest.fixture(scope="module")
def library(bundles):
    entries = [AvatarEntry(load_avatar(path), path) for path in bundles]
    with AvatarLibrary(entries, RendererSettings("torch", threads=1)) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def face_clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clips") / "face.mp4"
    write_video(str(path), moving_face_frames(24, WIDTH, HEIGHT, face_size=90))
    return path


def settings(**changes) -> PipelineSettings:
    """The tile layout on a known colour (paste-back has its own tests)."""
    compositor = CompositorSettings(WIDTH, HEIGHT, Background("colour", RED), layout="tile")
    return PipelineSettings(**({"compositor": compositor, "log_every": 0} | changes))


def read_frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def no_pipeline_threads_left() -> bool:
    return not [thread for thread in threading.enumerate() if thread.name.startswith("vcam-")]


def test_video_file_to_file_renders_one_frame_per_input_frame(library, face_clip, tmp_path,
                                                               dlib_detector):
    out = tmp_path / "out.mp4"
    pipeline = Pipeline(VideoFileSource(face_clip), library, [FileSink(out, WIDTH, HEIGHT, 25)],
                        settings(), FaceTracker(dlib_detector))
    summary = pipeline.run()
    assert summary.reason == "end of input"
    assert summary.frames_captured == summary.frames_rendered == summary.frames_output == 24
    assert summary.dropped == 0
    assert summary.face_states.get("tracking", 0) >= 22
    assert set(summary.stage_ms) == {"capture", "landmarks", "render", "output"}
    written = read_frames(out)
    assert len(written) == 24
    assert written[0].shape == (HEIGHT, WIDTH, 3)
    centre = cv2.cvtColor(written[10], cv2.COLOR_BGR2RGB)[100:140, 140:180]
    assert np.abs(centre.astype(int) - RED).mean() > 20  # the avatar, not the background
    assert no_pipeline_threads_left()


def test_face_lost_is_held_eased_to_neutral_and_recovered(library, tmp_path, dlib_detector):
    """10 frames with a face, 30 without (1.2 s at 25 frames/s), 10 with the face again."""
    faces = list(moving_face_frames(20, WIDTH, HEIGHT, face_size=90))
    empty = [np.full((HEIGHT, WIDTH, 3), 96, np.uint8)] * 30
    clip = tmp_path / "gap.mp4"
    write_video(str(clip), iter(faces[:10] + empty + faces[10:]), fps=25)
    pipeline = Pipeline(VideoFileSource(clip), library,
                        [FileSink(tmp_path / "out.mp4", WIDTH, HEIGHT, 25)], settings(),
                        FaceTracker(dlib_detector))
    states = pipeline.run().face_states
    # hold 0.5 s (12 frames), ease 0.5 s (12-13 frames), then neutral; the face is back at once
    assert 11 <= states.get("holding", 0) <= 13
    assert 11 <= states.get("easing", 0) <= 13
    assert 4 <= states.get("neutral", 0) <= 8
    assert states.get("tracking", 0) >= 18


def test_virtual_camera_gets_rgb_frames_of_the_right_size_at_the_right_pace(
        library, recording_virtualcam):
    fps = 30.0
    demo = DemoSource(DemoAnimation(library.avatar(0).neutral_landmarks, library.crop_size(0)),
                      fps)
    sink = VirtualCameraSink(WIDTH, HEIGHT, fps, backend=VIRTUALCAM_BACKEND)
    summary = Pipeline(demo, library, [sink], settings(fps=fps, max_frames=24),
                       driver_neutral=library.avatar(0).neutral_landmarks).run()
    # Live input: a frame that comes within half an interval of the one before replaces it
    # if that one is still waiting; every frame is either sent or counted as dropped.
    assert summary.frames_output + summary.dropped == summary.frames_captured == 24
    assert summary.frames_output >= 12
    (camera,) = recording_virtualcam
    assert (camera.width, camera.height, camera.fps) == (WIDTH, HEIGHT, fps)
    assert camera.fourcc == encode_fourcc(pyvirtualcam.PixelFormat.RGB.value)
    assert camera.closed
    assert len(camera.frames) >= summary.frames_output
    assert all(frame.dtype == np.uint8 and frame.size == WIDTH * HEIGHT * 3
               for frame in camera.frames)
    first = camera.frames[0].reshape(HEIGHT, WIDTH, 3)
    assert tuple(first[2, 2]) == RED  # RGB order, as pyvirtualcam expects
    intervals = np.diff(camera.times)
    assert 0.5 / fps < float(np.median(intervals)) < 2.0 / fps  # the demo's own rate
    assert camera.times[-1] - camera.times[0] > 0.6 * (len(camera.times) - 1) / fps


def test_missing_virtual_camera_device_is_a_one_line_error_with_the_setup_command():
    from vcam.errors import UserError

    with pytest.raises(UserError) as caught, VirtualCameraSink(WIDTH, HEIGHT, 30,
                                                               backend="v4l2loopback"):
        pass
    message = str(caught.value)
    assert "\n" not in message
    assert "sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=vcam" in message


class FlakyCamera:
    """A webcam stand-in: BGR frames at about 60 Hz; ``fail_after`` frames, then it is gone
    (unplugged); ``frames=None`` is a camera that cannot be opened."""

    def __init__(self, frames: list[np.ndarray] | None, fail_after: int | None = None) -> None:
        self.frames = frames
        self.fail_after = fail_after
        self.reads = 0
        self.released = False

    def isOpened(self) -> bool:
        return self.frames is not None and not self.released

    def read(self) -> tuple[bool, np.ndarray | None]:
        if not self.isOpened() or (self.fail_after is not None
                                   and self.reads >= self.fail_after):
            return False, None
        time.sleep(1 / 60)
        assert self.frames is not None
        frame = self.frames[self.reads % len(self.frames)]
        self.reads += 1
        return True, frame

    def get(self, prop: int) -> float:
        return 30.0

    def release(self) -> None:
        self.released = True


@pytest.fixture(scope="module")
def camera_frames() -> list[np.ndarray]:
    return [cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
            for frame in moving_face_frames(12, WIDTH, HEIGHT, face_size=90)]


def test_lost_camera_shows_a_card_and_reconnects_with_backoff(library, camera_frames, tmp_path,
                                                             dlib_detector):
    devices = [FlakyCamera(camera_frames, fail_after=5), FlakyCamera(None),
               FlakyCamera(camera_frames)]
    opened: list[FlakyCamera] = []

    def opener(index: int) -> FlakyCamera:
        opened.append(devices[len(opened)])
        return opened[-1]

    reconnect = ReconnectSettings(first_delay=0.05, max_delay=0.2, card_interval=0.02)
    source = CameraSource(0, 30, reconnect, opener)
    sink = FileSink(tmp_path / "out.mp4", WIDTH, HEIGHT, 30)
    summary = Pipeline(source, library, [sink], settings(max_frames=15),
                       FaceTracker(dlib_detector)).run()
    assert summary.reason == "frame limit (15)"
    assert summary.frames_captured == 15
    assert len(opened) == 3 and source.reconnects == 1  # failed once, then came back
    assert all(device.released for device in devices)
    assert summary.face_states.get("camera lost", 0) >= 1  # the card reached the output
    assert summary.frames_output >= 3
    assert sink.frames_written == summary.frames_output + summary.face_states["camera lost"]


class CtrlC:
    """A sink that presses Ctrl-C (sends this process SIGINT) at its ``after``-th frame."""

    name = "ctrl-c"
    steady = False

    def __init__(self, after: int) -> None:
        self.after = after
        self.frames = 0
        self.closed = False

    def __enter__(self) -> CtrlC:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.closed = True

    def send(self, canvas: np.ndarray, frame: Frame, stats: StatsSnapshot) -> None:
        self.frames += 1
        if self.frames == self.after:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture
def ctrl_c_raises():
    """Ctrl-C raises KeyboardInterrupt here, whatever this process inherited (a background
    job starts with SIGINT ignored, and the test would then run on)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.timeout(120)
def test_ctrl_c_stops_cleanly_and_releases_everything(library, camera_frames, tmp_path,
                                                      dlib_detector, ctrl_c_raises):
    camera = FlakyCamera(camera_frames)
    file_sink = FileSink(tmp_path / "out.mp4", WIDTH, HEIGHT, 30)
    interrupter = CtrlC(after=5)
    # The frame cap only ends a run whose Ctrl-C went astray (and fails the test).
    pipeline = Pipeline(CameraSource(0, 30, opener=lambda index: camera), library,
                        [file_sink, interrupter], settings(max_frames=300),
                        FaceTracker(dlib_detector))
    summary = pipeline.run()
    assert summary.reason == "interrupted (Ctrl-C)"
    assert no_pipeline_threads_left()
    assert camera.released
    assert interrupter.closed and not file_sink.is_open
    assert len(read_frames(tmp_path / "out.mp4")) == file_sink.frames_written >= 5


def test_a_faceless_video_warns_once(library, tmp_path, dlib_detector, caplog):
    clip = tmp_path / "empty_room.mp4"
    write_video(str(clip), (np.full((HEIGHT, WIDTH, 3), 70, np.uint8) for _ in range(75)))
    with caplog.at_level("WARNING", logger="vcam.runtime"):
        summary = Pipeline(VideoFileSource(clip), library,
                           [FileSink(tmp_path / "out.mp4", WIDTH, HEIGHT, 25)], settings(),
                           FaceTracker(dlib_detector)).run()
    assert summary.frames_output == 75 and summary.face_states == {"neutral": 75}
    warnings = [record.getMessage() for record in caplog.records if "no face" in
                record.getMessage()]
    assert len(warnings) == 1 and "first 2 s" in warnings[0]


class ScriptedDisplay:
    """A desktop display stand-in: records what is shown and presses keys on a script
    (key pressed once the given number of previews has been shown)."""

    def __init__(self, script: dict[int, str]) -> None:
        self.script = dict(script)
        self.shown: list[np.ndarray] = []
        self.opened = self.closed = False

    def open(self, title: str) -> None:
        self.opened = True

    def show(self, title: str, bgr: np.ndarray) -> None:
        self.shown.append(bgr.copy())

    def poll_key(self, title: str, milliseconds: int) -> int:
        key = self.script.pop(len(self.shown), None)
        return -1 if key is None else ord(key)

    def close(self, title: str) -> None:
        self.closed = True


def test_preview_keys_switch_avatars_live_and_quit(library, tmp_path, dlib_detector):
    clip = tmp_path / "long.mp4"
    write_video(str(clip), moving_face_frames(200, WIDTH, HEIGHT, face_size=90))
    controls = Controls(len(library))
    display = ScriptedDisplay({3: "2", 6: "n", 8: "o", 12: "q"})
    window = WindowSink(WIDTH, HEIGHT, controls, library.names,
                        [library.crop_size(0), library.crop_size(1)], display)
    file_sink = FileSink(tmp_path / "out.mp4", WIDTH, HEIGHT, 25)
    summary = Pipeline(VideoFileSource(clip), library, [window, file_sink], settings(),
                       FaceTracker(dlib_detector), controls).run()
    assert summary.reason == "quit from the preview"
    assert display.opened and display.closed
    assert summary.frames_by_avatar.get("astronaut", 0) > 0
    assert summary.frames_by_avatar.get("mirrored", 0) > 0  # switched without a restart
    assert summary.frames_output < 200
    assert display.shown[0].shape == (360, 480 + 360 + 480, 3)
    assert not controls.overlay.is_set()


class BrokenSink:
    name = "broken"
    steady = False
    closed = False

    def __enter__(self) -> BrokenSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.closed = True

    def send(self, canvas: np.ndarray, frame: Frame, stats: StatsSnapshot) -> None:
        raise OSError("disk full")


def test_an_error_in_a_stage_stops_the_pipeline_and_is_raised(library, face_clip, tmp_path):
    broken = BrokenSink()
    file_sink = FileSink(tmp_path / "out.mp4", WIDTH, HEIGHT, 25)
    pipeline = Pipeline(VideoFileSource(face_clip), library, [file_sink, broken], settings())
    with pytest.raises(OSError, match="disk full"):
        pipeline.run()
    assert broken.closed and not file_sink.is_open
    assert no_pipeline_threads_left()
