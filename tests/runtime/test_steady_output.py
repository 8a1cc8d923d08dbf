"""The virtual camera gets each frame as it comes (no clock of its own to miss it by), the
last one again while nothing comes, never two new frames closer than half an interval, and a
video file at its own rate."""

from __future__ import annotations

import threading
import time

import numpy as np

from tests.conftest import VIRTUALCAM_BACKEND
from vcam.runtime.capture import Captured
from vcam.runtime.compositor import CompositorSettings
from vcam.runtime.pipeline import MIN_GAP, REPEAT_AFTER, Pipeline, PipelineSettings
from vcam.runtime.sinks import VirtualCameraSink

FPS = 10.0  # slow enough that one interval dwarfs the tiny model's processing


class PausingCamera:
    """A live input of landmarks: ``first`` frames at FPS, a pause, ``then`` more; it notes
    when it gave each frame."""

    live = True
    fps = FPS

    def __init__(self, points: np.ndarray, first: int, pause_s: float, then: int) -> None:
        self.points, self.first, self.pause_s, self.then = points, first, pause_s, then
        self.given: list[float] = []

    def __enter__(self) -> PausingCamera:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def frames(self, stop: threading.Event):
        for index in range(self.first + self.then):
            if index == self.first:
                time.sleep(self.pause_s)
            elif index:
                time.sleep(1 / FPS)
            self.given.append(time.perf_counter())
            yield Captured(points=self.points + np.float32(0.5 * index))  # a moving face


def test_the_virtual_camera_gets_frames_as_they_come_and_repeats_only_while_none_do(
        warp_library, recording_virtualcam):
    neutral = np.asarray(warp_library.avatar(0).neutral_landmarks, np.float32)
    source = PausingCamera(neutral, first=6, pause_s=0.6, then=6)
    sink = VirtualCameraSink(320, 240, FPS, backend=VIRTUALCAM_BACKEND)
    settings = PipelineSettings(fps=FPS, log_every=0, compositor=CompositorSettings(320, 240))
    summary = Pipeline(source, warp_library, [sink], settings, driver_neutral=neutral).run()
    (camera,) = recording_virtualcam
    assert summary.frames_captured == summary.frames_output == 12 and summary.dropped == 0
    # Each frame went out within a fraction of an interval of being captured (a camera clock
    # with a phase of its own would hold it half an interval on average).
    sent = new_frame_times(camera)
    assert len(sent) == 12
    assert np.median(np.subtract(sent, source.given)) < 0.3 / FPS
    assert np.diff(sent).min() >= MIN_GAP / FPS - 0.01  # new frames (a repeat may be closer)
    # The pause (0.6 s) is filled with repeats, one every REPEAT_AFTER intervals or so.
    repeats = len(camera.frames) - 12
    assert 0.6 * FPS / REPEAT_AFTER - 2 <= repeats <= 0.6 * FPS / REPEAT_AFTER + 2 + 3


def new_frame_times(camera) -> list[float]:
    """When the camera got each frame that differs from the one before it, or the first."""
    times = [camera.times[0]]
    for before, frame, at in zip(camera.frames, camera.frames[1:], camera.times[1:]):
        if not np.array_equal(before, frame):
            times.append(at)
    return times


def test_a_video_file_plays_into_the_virtual_camera_at_its_rate(warp_library, astronaut_image,
                                                                dlib_detector, tmp_path,
                                                                recording_virtualcam):
    from vcam.data.synthetic import write_video
    from vcam.landmarks.tracker import FaceTracker
    from vcam.runtime.capture import VideoFileSource

    fps, frames = 20.0, 10
    clip = tmp_path / "talk.mp4"
    write_video(str(clip), iter([astronaut_image[:256, 96:352]] * frames), fps=fps)
    sink = VirtualCameraSink(320, 240, fps, backend=VIRTUALCAM_BACKEND)
    settings = PipelineSettings(fps=fps, log_every=0, compositor=CompositorSettings(320, 240))
    summary = Pipeline(VideoFileSource(clip), warp_library, [sink], settings,
                       FaceTracker(dlib_detector)).run()
    (camera,) = recording_virtualcam
    assert summary.frames_output == frames and summary.dropped == 0
    # rendered faster than that, a file still plays at its own rate, not twice as fast
    assert camera.times[-1] - camera.times[0] >= 0.95 * (frames - 1) / fps
