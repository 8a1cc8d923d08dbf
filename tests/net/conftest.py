"""Fixtures of the call tests: two tiny avatars, and a virtual camera device that records
what it is sent, registered through pyvirtualcam's own backend registry."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pytest
import pyvirtualcam

from vcam.avatar import avatar_bytes
from vcam.enroll import Photo, enroll
from vcam.models.store import load_models
from vcam.train.finetune import FineTuneSettings

VIRTUALCAM_BACKEND = "vcam-call-test-recorder"


@pytest.fixture(scope="session")
def avatars(tiny_model, dlib_detector, astronaut_image, tmp_path_factory) -> dict[str, Path]:
    """Two different tiny avatars, 'astro' and 'bob', as bundle files."""
    folder = tmp_path_factory.mktemp("avatars")
    models = load_models(tiny_model)
    paths = {}
    for name, photo in (("astro", astronaut_image),
                        ("bob", np.ascontiguousarray(astronaut_image[:, ::-1]))):
        avatar, _ = enroll([Photo(name, photo)], name, models, dlib_detector,
                           FineTuneSettings())
        paths[name] = folder / f"{name}.avatar.safetensors"
        paths[name].write_bytes(avatar_bytes(avatar))
    return paths


class RecordingVirtualCamera:
    """A virtual camera device for pyvirtualcam's backend registry (keyword arguments as
    pyvirtualcam.Camera passes them); it keeps the size and type of every frame it is sent
    (flat, as pyvirtualcam hands them on) and the last one."""

    instances: ClassVar[list[RecordingVirtualCamera]] = []

    def __init__(self, *, width: int, height: int, fps: float, fourcc: int,
                 device: str | None, **extra) -> None:
        self.width, self.height, self.fps, self.fourcc = width, height, fps, fourcc
        self.frames: list[tuple[int, np.dtype]] = []
        self.last: np.ndarray | None = None
        self.closed = False
        RecordingVirtualCamera.instances.append(self)

    def device(self) -> str:
        return "/dev/video-call-test"

    def native_fourcc(self) -> int:
        return self.fourcc

    def send(self, frame: np.ndarray) -> None:
        self.frames.append((frame.size, frame.dtype))
        self.last = frame.copy()

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def recording_virtualcam():
    """The devices opened through pyvirtualcam's ``VIRTUALCAM_BACKEND`` during the test."""
    RecordingVirtualCamera.instances.clear()
    pyvirtualcam.register_backend(VIRTUALCAM_BACKEND, RecordingVirtualCamera)
    yield RecordingVirtualCamera.instances
    pyvirtualcam.camera.BACKENDS.pop(VIRTUALCAM_BACKEND, None)


def video_facts(path: Path) -> tuple[int, int, int]:
    """Frame count, width and height of a video file, read back with OpenCV."""
    capture = cv2.VideoCapture(str(path))
    try:
        return (int(capture.get(cv2.CAP_PROP_FRAME_COUNT)),
                int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    finally:
        capture.release()
