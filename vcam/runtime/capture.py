"""Frame sources: a video file, a camera (reconnecting when it drops out), or the demo.

A source is a context manager (opening on entry, releasing on exit) whose ``frames(stop)``
yields :class:`Captured` items until the input ends or ``stop`` is set. ``live`` sources
(cameras, the demo) run at their own pace and the pipeline drops stale frames behind them; a
file is not live: the pipeline waits for every frame.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from vcam.data.sources import sane_fps
from vcam.errors import UserError

DEFAULT_FPS = 30.0


@dataclass(frozen=True)
class Captured:
    """What a source produced: an RGB frame, landmarks (the demo), or neither (camera lost);
    ``timestamp`` is the frame's time in a file (None for live sources)."""

    image: np.ndarray | None = None
    points: np.ndarray | None = None
    timestamp: float | None = None

    @property
    def lost(self) -> bool:
        return self.image is None and self.points is None


class FrameSource(Protocol):
    """A video input for the pipeline."""

    live: bool
    fps: float

    def __enter__(self) -> FrameSource: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def frames(self, stop: threading.Event) -> Iterator[Captured]:
        """Frames until the input ends or ``stop`` is set."""
        ...


class CaptureDevice(Protocol):
    """The part of ``cv2.VideoCapture`` the sources use (frames are BGR)."""

    def isOpened(self) -> bool: ...

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def get(self, prop: int) -> float: ...

    def release(self) -> None: ...


def to_rgb(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class VideoFileSource:
    """Every frame of a video file, in order, as fast as the pipeline takes them."""

    live = False

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fps = DEFAULT_FPS
        self._capture: cv2.VideoCapture | None = None

    def __enter__(self) -> VideoFileSource:
        self._capture = open_video(self.path)
        self.fps = sane_fps(self._capture.get(cv2.CAP_PROP_FPS), DEFAULT_FPS)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def frames(self, stop: threading.Event) -> Iterator[Captured]:
        if self._capture is None:
            raise RuntimeError("open the source (with ...) before reading frames")
        index = 0
        while not stop.is_set():
            ok, frame = self._capture.read()
            if not ok or frame is None:
                return
            yield Captured(image=to_rgb(frame), timestamp=index / self.fps)
            index += 1


def open_video(path: Path) -> cv2.VideoCapture:
    """``path`` opened for reading, at its first frame; a one-line ``UserError`` when it does
    not exist or no frame of it can be decoded (empty, garbage, truncated before a frame)."""
    if not path.is_file():
        raise UserError(f"--input {path} does not exist")
    capture = cv2.VideoCapture(str(path))
    if capture.isOpened() and capture.grab():
        capture.release()
        capture = cv2.VideoCapture(str(path))
        return capture
    capture.release()
    raise UserError(f"--input {path} is not a readable video (no frame could be decoded): "
                    "pass a video file such as an .mp4, a camera index or demo")


def video_fps(path: Path) -> float:
    """The frame rate of a readable video (``UserError`` otherwise)."""
    capture = open_video(path)
    try:
        return sane_fps(capture.get(cv2.CAP_PROP_FPS), DEFAULT_FPS)
    finally:
        capture.release()


@dataclass(frozen=True)
class ReconnectSettings:
    """Backoff between attempts to reopen a lost camera, and how often to send a card."""

    first_delay: float = 0.25
    max_delay: float = 4.0
    factor: float = 2.0
    card_interval: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.first_delay <= self.max_delay or self.factor < 1:
            raise ValueError("need 0 < first_delay <= max_delay and factor >= 1")
        if self.card_interval <= 0:
            raise ValueError("card_interval must be positive")


class Backoff:
    """Delays that grow by ``factor`` from ``first_delay`` up to ``max_delay``."""

    def __init__(self, settings: ReconnectSettings) -> None:
        self.settings = settings
        self.reset()

    def reset(self) -> None:
        self._next = self.settings.first_delay

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._next * self.settings.factor, self.settings.max_delay)
        return delay


def open_opencv_camera(index: int) -> CaptureDevice:
    return cv2.VideoCapture(index)


class CameraSource:
    """A live camera. When it stops delivering, it is released and reopened with backoff;
    meanwhile the source yields "camera lost" items (every ``card_interval`` seconds)."""

    live = True

    def __init__(self, index: int, fps: float = DEFAULT_FPS,
                 reconnect: ReconnectSettings = ReconnectSettings(),
                 opener: Callable[[int], CaptureDevice] = open_opencv_camera) -> None:
        self.index = index
        self.fps = fps
        self.reconnect = reconnect
        self.opener = opener
        self.reconnects = 0
        self._device: CaptureDevice | None = None

    def __enter__(self) -> CameraSource:
        self._device = self._open()
        if self._device is None:
            raise UserError(f"no camera found at index {self.index}: connect a webcam, choose "
                            "another with --input N, or pass --input FILE (a video) or "
                            "--input demo")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._release()

    def _open(self) -> CaptureDevice | None:
        device = self.opener(self.index)
        if device.isOpened():
            return device
        device.release()
        return None

    def _release(self) -> None:
        if self._device is not None:
            self._device.release()
            self._device = None

    def frames(self, stop: threading.Event) -> Iterator[Captured]:
        backoff = Backoff(self.reconnect)
        while not stop.is_set():
            if self._device is None:
                yield from self._reconnect(stop, backoff)
                continue
            ok, frame = self._device.read()
            if ok and frame is not None:
                yield Captured(image=to_rgb(frame))
                continue
            self._release()
            yield Captured()

    def _reconnect(self, stop: threading.Event, backoff: Backoff) -> Iterator[Captured]:
        """Wait one backoff delay (sending cards), then try once to reopen."""
        remaining = backoff.next_delay()
        while remaining > 0:
            wait = min(remaining, self.reconnect.card_interval)
            if stop.wait(wait):
                return
            remaining -= wait
            yield Captured()
        self._device = self._open()
        if self._device is not None:
            self.reconnects += 1
            backoff.reset()
