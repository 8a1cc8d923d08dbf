"""A call's media on the real-time runtime's stages, without a network: one's landmarks from
`vcam run`'s inputs (demo, a video file tracked with dlib), the peer's avatar through the
runtime's pipeline with a real ONNX Runtime render into a virtual camera (pyvirtualcam, with
a recording device registered through its backend registry) and an mp4 file read back; no
leftovers from an avatar received for one call; the command line's one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.backend import BackendRegistry
from tests.conftest import VIRTUALCAM_BACKEND
from tests.net.conftest import video_facts
from vcam.avatar import load_avatar
from vcam.cli import main
from vcam.data.synthetic import moving_face_frames, write_video
from vcam.errors import UserError
from vcam.net.media import (
    CapturedLandmarks,
    PipelineRenderer,
    ReceiveSettings,
    SendSettings,
    torch_keeping_thread_count,
)
from vcam.net.playout import PeerAvatar, RendererStop
from vcam.runtime.avatars import RendererSettings
from vcam.runtime.compositor import Background, CompositorSettings
from vcam.runtime.demo import DemoAnimation
from vcam.runtime.session import InputSpec
from vcam.runtime.sinks import MainThreadDisplay, SinkSpec

WIDTH, HEIGHT = 160, 120
GREEN = (10, 200, 30)
FPS = 20.0
CROP = 64  # the tiny avatars' crop
# The longest a test waits for the render thread (a busy machine is slow, never this slow).
DEADLINE_S = 30.0


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """This test's own temporary folder in place of the system's (to see what is left)."""
    folder = tmp_path / "system-tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def receive_settings(*sinks: SinkSpec, backend: str = "onnxruntime", threads: int = 1
                     ) -> ReceiveSettings:
    return ReceiveSettings(sinks, RendererSettings(backend, threads, "cpu"),
                           CompositorSettings(WIDTH, HEIGHT, Background("colour", GREEN),
                                              layout="tile"),  # a known background colour
                           virtualcam_backend=VIRTUALCAM_BACKEND)


def play(renderer: PipelineRenderer, avatar, count: int) -> None:
    """Hand the renderer ``count`` frames of the avatar's face talking, at ``FPS``, as the
    call's playout loop does."""
    animation = DemoAnimation(avatar.neutral_landmarks, avatar.config.image_size)
    started = time.monotonic()
    for index in range(count):
        time.sleep(max(0.0, started + index / FPS - time.monotonic()))
        renderer.submit(animation.points_at(index / FPS))


def settled(renderer: PipelineRenderer, submitted: int) -> dict[str, int]:
    """The renderer's counts once each of the ``submitted`` landmark sets was rendered,
    skipped (replaced by a newer one) or rejected, and its output stopped changing, however
    slow the machine (within ``DEADLINE_S``)."""
    deadline = time.monotonic() + DEADLINE_S
    counts, last = renderer.counts, None
    while time.monotonic() < deadline:
        handled = counts["rendered"] + counts["skipped"] + counts["rejected"]
        if handled >= submitted and counts == last:
            return counts
        last = counts
        time.sleep(0.1)
        counts = renderer.counts
    raise AssertionError(f"{submitted} landmark sets handed over, not all handled: {counts}")


# -- receiving ---------------------------------------------------------------------------------


def test_the_peer_goes_through_onnx_runtime_to_a_virtual_camera_and_an_mp4_and_leaves_nothing(
        avatars, vcam_home, private_tmp, recording_virtualcam, tmp_path):
    avatar = load_avatar(avatars["bob"])
    out = tmp_path / "peer.mp4"
    settings = receive_settings(SinkSpec("virtualcam"), SinkSpec("file", out))
    renderer = PipelineRenderer(PeerAvatar(avatar), FPS, settings)  # received for this call
    renderer.start()
    try:
        (compiled,) = private_tmp.iterdir()
        assert (compiled / "generator-fp32.onnx").is_file()
        assert renderer.pipeline is not None
        (backend,) = renderer.pipeline.renderer.library.describe()
        assert backend["name"] == "onnxruntime" and backend["device"] == "cpu"
        play(renderer, avatar, 30)
        settled(renderer, 30)
        assert renderer.stopped is None
    finally:
        renderer.close()
    counts = renderer.counts
    assert counts["rendered"] + counts["skipped"] == 30 and counts["rejected"] == 0, counts
    assert 0 < counts["output"] <= counts["rendered"], counts
    assert video_facts(out) == (counts["output"], WIDTH, HEIGHT)
    (camera,) = recording_virtualcam
    assert (camera.width, camera.height, camera.fps) == (WIDTH, HEIGHT, FPS) and camera.closed
    assert len(camera.frames) >= counts["output"]  # a steady sink repeats the last frame
    assert {(frame.size, frame.dtype) for frame in camera.frames} == {
        (WIDTH * HEIGHT * 3, np.dtype(np.uint8))}
    assert tuple(camera.last.reshape(HEIGHT, WIDTH, 3)[2, 2]) == GREEN  # RGB, the background
    assert camera.last.reshape(HEIGHT, WIDTH, 3)[HEIGHT // 2, WIDTH // 2].tolist() != list(GREEN)
    # Nothing made from an avatar received for one call outlives it.
    assert list(private_tmp.iterdir()) == []
    assert not vcam_home.exists() or list(vcam_home.rglob("*")) == []


def test_an_avatar_the_user_has_keeps_its_compiled_model_in_the_users_folder(
        avatars, vcam_home, private_tmp, tmp_path):
    avatar = load_avatar(avatars["astro"])
    renderer = PipelineRenderer(PeerAvatar(avatar, avatars["astro"]), FPS,
                                receive_settings(SinkSpec("file", tmp_path / "peer.mp4")))
    renderer.start()
    renderer.close()
    assert renderer.error is None
    assert len(list((vcam_home / "compiled").glob("*/generator-fp32.onnx"))) == 1
    assert list(private_tmp.iterdir()) == []


def test_rendering_with_torch_leaves_torchs_thread_count_alone(avatars, private_tmp, tmp_path):
    before = torch.get_num_threads()
    avatar = load_avatar(avatars["bob"])
    renderer = PipelineRenderer(PeerAvatar(avatar), FPS,
                                receive_settings(SinkSpec("file", tmp_path / "peer.mp4"),
                                                 backend="torch", threads=before + 2))
    renderer.start()
    try:
        (backend,) = renderer.pipeline.renderer.library.describe()
        assert backend["name"] == "torch"
        play(renderer, avatar, 4)
        settled(renderer, 4)
    finally:
        renderer.close()
    assert renderer.counts["rendered"] >= 1  # the last set handed over is never skipped
    assert torch.get_num_threads() == before
    assert list(private_tmp.iterdir()) == []


def test_a_call_removes_what_calls_killed_outright_left_behind(avatars, private_tmp, tmp_path):
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    stale = private_tmp / f"vcam-call-compiled-{int(ended.stdout)}-x1"  # its process is gone
    (stale / "engines").mkdir(parents=True)
    (stale / "generator-fp32.onnx").write_bytes(b"onnx")
    in_use = private_tmp / f"vcam-call-compiled-{os.getpid()}-x2"  # a call of this process
    in_use.mkdir()
    (private_tmp / "not-vcam").mkdir()
    renderer = PipelineRenderer(PeerAvatar(load_avatar(avatars["bob"])), FPS,
                                receive_settings(SinkSpec("file", tmp_path / "peer.mp4"),
                                                 backend="torch"))
    renderer.start()
    renderer.close()
    assert sorted(path.name for path in private_tmp.iterdir()) == sorted([in_use.name,
                                                                          "not-vcam"])


def test_a_sink_that_cannot_open_fails_the_start_and_leaves_nothing(avatars, private_tmp,
                                                                   tmp_path):
    renderer = PipelineRenderer(PeerAvatar(load_avatar(avatars["bob"])), FPS,
                                receive_settings(SinkSpec("file", tmp_path / "peer.avi")))
    with pytest.raises(UserError, match="mp4"):
        renderer.start()
    renderer.close()
    assert list(private_tmp.iterdir()) == []


def test_quitting_the_preview_is_a_hang_up(avatars, private_tmp, tmp_path):
    renderer = PipelineRenderer(PeerAvatar(load_avatar(avatars["bob"])), FPS,
                                receive_settings(SinkSpec("file", tmp_path / "peer.mp4")))
    renderer.start()
    try:
        assert renderer.stopped is None
        renderer.controls.request_quit()  # what q in the preview window does
        renderer.thread.join(10)
        assert renderer.stopped == RendererStop("hung up from the preview window")
    finally:
        renderer.close()
    assert list(private_tmp.iterdir()) == []


class RecordingDisplay:
    """A desktop window for the window sink (its ``Display`` extension point, as there is no
    display here): records the pictures shown and the threads that used it, and presses q
    after ``quit_after`` pictures."""

    def __init__(self, quit_after: int) -> None:
        self.quit_after = quit_after
        self.shown: list[tuple[int, ...]] = []
        self.threads: set[int] = set()
        self.closed = False

    def check(self) -> None:
        pass

    def open(self, title: str) -> None:
        self.threads.add(threading.get_ident())

    def show(self, title: str, bgr: np.ndarray) -> None:
        self.threads.add(threading.get_ident())
        self.shown.append(bgr.shape)

    def poll_key(self, title: str, milliseconds: int) -> int:
        self.threads.add(threading.get_ident())
        return ord("q") if len(self.shown) >= self.quit_after else -1

    def close(self, title: str) -> None:
        self.threads.add(threading.get_ident())
        self.closed = True


def test_the_preview_window_lives_in_the_main_thread_and_q_hangs_up(avatars, private_tmp):
    """As `vcam call` runs it: the call (starting, feeding and closing the renderer) in a
    thread of its own, the window's every call in the main thread."""
    display = RecordingDisplay(quit_after=5)
    windows = MainThreadDisplay(display)
    avatar = load_avatar(avatars["bob"])
    renderer = PipelineRenderer(PeerAvatar(avatar), FPS, receive_settings(SinkSpec("window")),
                                display=windows)
    stops: list[RendererStop | None] = []
    call_over = threading.Event()

    def call() -> None:
        try:
            renderer.start()
            playing = threading.Thread(target=play, args=(renderer, avatar, 20), daemon=True)
            playing.start()
            renderer.thread.join(DEADLINE_S)
            stops.append(renderer.stopped)
            playing.join()
        finally:
            renderer.close()
            call_over.set()

    threading.Thread(target=call, daemon=True).start()
    windows.serve(call_over)
    windows.finish()
    assert stops == [RendererStop("hung up from the preview window")]
    assert len(display.shown) >= 5 and display.closed
    assert display.threads == {threading.get_ident()}  # opened, shown, read, closed here
    assert list(private_tmp.iterdir()) == []
    with pytest.raises(RuntimeError, match="stopped"):  # nobody serves it any more
        windows.show("vcam", np.zeros((2, 2, 3), np.uint8))


class OpeningSlowly(RecordingDisplay):
    """A window that takes until ``opened`` is set to open."""

    def __init__(self) -> None:
        super().__init__(quit_after=1000)
        self.opening, self.opened = threading.Event(), threading.Event()

    def open(self, title: str) -> None:
        self.opening.set()
        assert self.opened.wait(DEADLINE_S)


def test_a_call_that_ends_while_the_renderer_starts_opens_nothing_more(avatars, private_tmp,
                                                                       tmp_path):
    display, loads, logged = OpeningSlowly(), [], []
    registry = BackendRegistry()
    registry.register("torch", lambda source, options: loads.append(source)
                      or torch_keeping_thread_count(source, options))
    out = tmp_path / "peer.mp4"
    renderer = PipelineRenderer(
        PeerAvatar(load_avatar(avatars["bob"])), FPS,
        receive_settings(SinkSpec("window"), SinkSpec("file", out), backend="torch"),
        registry=registry, display=display, log=logged.append)
    starting = threading.Thread(target=renderer.start, daemon=True)
    starting.start()
    assert display.opening.wait(DEADLINE_S)
    closing = threading.Thread(target=renderer.close, daemon=True)  # the call ended
    closing.start()
    deadline = time.monotonic() + DEADLINE_S
    while not logged and time.monotonic() < deadline:
        time.sleep(0.05)
    display.opened.set()
    starting.join(DEADLINE_S)
    closing.join(DEADLINE_S)
    assert not starting.is_alive() and not closing.is_alive()
    assert logged == ["waiting for the renderer to stop"]
    assert renderer.error is None and renderer.pipeline is None and renderer.stopped is None
    assert loads == [] and not out.exists() and display.closed  # the window opened is closed
    assert list(private_tmp.iterdir()) == []


def test_landmarks_that_cannot_be_retargeted_are_dropped_and_counted(avatars, private_tmp,
                                                                    tmp_path):
    """What the peer's packets decode to goes through retargeting: nothing it sends may
    raise there (and end the call as a failure here)."""
    avatar = load_avatar(avatars["bob"])
    good = DemoAnimation(avatar.neutral_landmarks, CROP).points_at(0.0)
    with_nan = good.copy()
    with_nan[30] = np.nan
    collapsed = np.full((68, 2), CROP / 2, np.float32)  # no scale: 1/0 when retargeted
    unusable = [with_nan, collapsed, np.full((68, 2), np.inf, np.float32), good * 1e6,
                good[:60]]
    renderer = PipelineRenderer(PeerAvatar(avatar), FPS,
                                receive_settings(SinkSpec("file", tmp_path / "peer.mp4"),
                                                 backend="torch"))
    renderer.start()
    try:
        for landmarks in [*unusable, good]:
            renderer.submit(landmarks)
        counts = settled(renderer, len(unusable) + 1)
        assert renderer.stopped is None
    finally:
        renderer.close()
    assert renderer.error is None
    assert counts["rejected"] == len(unusable) and counts["rendered"] == 1, counts


# -- sending -----------------------------------------------------------------------------------


def take(source: CapturedLandmarks, count: int) -> tuple[list, float]:
    """The first ``count`` samples (fewer if the source ends) and the seconds they took."""
    stop, samples = threading.Event(), []
    started = time.monotonic()
    for sample in source.samples(stop):
        samples.append(sample)
        if len(samples) == count:
            stop.set()
            break
    return samples, time.monotonic() - started


def check_in_crop(samples: list) -> None:
    for sample in samples:
        assert sample.landmarks.shape == (68, 2) and sample.landmarks.dtype == np.float32
        assert np.isfinite(sample.landmarks).all()
        assert sample.landmarks.min() >= 0 and sample.landmarks.max() < CROP
    times = [sample.capture_us for sample in samples]
    assert times == sorted(times) and len(set(times)) == len(times)


def test_the_demo_input_sends_ones_avatar_talking_at_its_frame_rate(avatars):
    avatar = load_avatar(avatars["astro"])
    source = CapturedLandmarks(InputSpec.parse("demo"), avatar, SendSettings(fps=50))
    try:
        samples, seconds = take(source, 20)
    finally:
        source.close()
    assert source.fps == 50 and len(samples) == 20 and seconds >= 0.8 * 19 / 50
    check_in_crop(samples)
    # The demo's neutral is the avatar's own: retargeting keeps the animation as it is.
    expected = DemoAnimation(avatar.neutral_landmarks, CROP).points_at(0.0)
    np.testing.assert_allclose(samples[0].landmarks, expected, atol=0.05)
    assert np.abs(samples[-1].landmarks - samples[0].landmarks).max() > 0.5  # it moves


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "me.mp4"
    write_video(str(path), moving_face_frames(8, 320, 240, face_size=100), fps=FPS)
    return path


def test_a_video_file_is_tracked_in_real_time_and_loops_when_asked(avatars, clip,
                                                                   dlib_detector):
    avatar = load_avatar(avatars["astro"])
    once = CapturedLandmarks(InputSpec.parse(str(clip)), avatar, detector=dlib_detector)
    try:
        samples, seconds = take(once, 100)
    finally:
        once.close()
    assert once.fps == FPS and len(samples) == 8 and seconds >= 0.8 * 7 / FPS
    check_in_crop(samples)
    looping = CapturedLandmarks(InputSpec.parse(str(clip)), avatar, SendSettings(loop=True),
                                dlib_detector)
    try:
        samples, seconds = take(looping, 20)
    finally:
        looping.close()
    assert len(samples) == 20 and seconds >= 0.8 * 19 / FPS
    check_in_crop(samples)


class NoFrames:
    """A video file that opens but yields no frame (every time)."""

    live, fps = False, FPS

    def __enter__(self) -> NoFrames:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def frames(self, stop: threading.Event):
        return iter(())


def test_a_looping_file_without_frames_ends_instead_of_spinning(avatars, clip, dlib_detector):
    source = CapturedLandmarks(InputSpec.parse(str(clip)), load_avatar(avatars["astro"]),
                               SendSettings(loop=True), dlib_detector)
    source.close()
    source.capture = NoFrames()
    taken: list = []
    taking = threading.Thread(target=lambda: taken.append(take(source, 5)), daemon=True)
    taking.start()
    taking.join(DEADLINE_S)
    assert not taking.is_alive(), "it loops for ever"
    assert taken[0][0] == []


# -- the command line --------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "message"), [
    (["--sink", "tv"], "--sink tv"),
    (["--sink", "file:peer.avi"], ".mp4"),
    (["--sink", "window"], "display"),
    (["--sink", "virtualcam", "--virtualcam-device", "/dev/no-such-video"], "v4l2loopback"),
    (["--background", "blur"], "blur"),
    (["--background", "no-such-room.png"], "--background"),
    (["--background", "{tmp}/room.png"], "not a readable image"),
    (["--input", "no-such-clip.mp4"], "--input"),
    (["--input", "7"], "no camera"),
    (["--fps", "500"], "--fps"),
    (["--avatar", "nobody"], "nobody"),
])
def test_bad_options_are_one_line_errors_before_any_network(avatars, tmp_path, monkeypatch,
                                                            capsys, options, message):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("VCAM_HOME", str(tmp_path / "home"))
    (tmp_path / "room.png").write_text("not a picture")
    options = [option.replace("{tmp}", str(tmp_path)) for option in options]
    code = main(["call", "serve", "--port", "0", "--audio-input", "none",
                 "--avatar", str(avatars["astro"]),
                 "--input", "demo", "--sink", f"file:{tmp_path / 'peer.mp4'}", *options])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("vcam: error: ") and err.count("\n") == 1 and message in err, err


def test_inputs_a_call_cannot_use_are_refused_before_any_network(avatars, clip, tmp_path,
                                                                monkeypatch, capsys):
    fast = tmp_path / "fast.mp4"
    write_video(str(fast), moving_face_frames(4, 320, 240, face_size=100), fps=240)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no face-alignment weights
    for options, message in ((["--input", str(fast)], "240 frames/s"),
                             (["--input", str(clip), "--landmarks", "face-alignment"],
                              "face-alignment weights not found")):
        code = main(["call", "serve", "--port", "0", "--audio-input", "none",
                 "--avatar", str(avatars["astro"]),
                     "--sink", f"file:{tmp_path / 'peer.mp4'}", *options])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and message in err, err


def test_a_call_nobody_joined_releases_its_input(avatars, tmp_path, monkeypatch, capsys):
    closed, close = [], CapturedLandmarks.close
    monkeypatch.setattr(CapturedLandmarks, "close",
                        lambda self: closed.append(self.spec) or close(self))
    monkeypatch.setenv("VCAM_HOME", str(tmp_path / "home"))
    code = main(["call", "serve", "--port", "0", "--audio-input", "none",
                 "--avatar", str(avatars["astro"]),
                 "--input", "demo", "--wait-seconds", "0.2",
                 "--sink", f"file:{tmp_path / 'peer.mp4'}"])
    assert code == 0 and "nobody joined" in capsys.readouterr().err
    assert closed == [InputSpec("demo")]


def test_the_default_sink_is_a_window(avatars, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["call", "serve", "--port", "0", "--audio-input", "none",
                 "--avatar", str(avatars["astro"]),
                 "--input", "demo"]) == 2
    assert "--sink window needs a desktop display" in capsys.readouterr().err
