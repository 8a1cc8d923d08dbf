"""Tracking one face through video: detect rarely, fit landmarks every frame, smooth them.

Full detection runs on the first frame and whenever the face is lost, a cheap detection
around the tracked box every ``redetect_every`` frames; in between, the box for the landmark
fit comes from the previous frame's landmarks, which costs a fraction of a detection.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from vcam.landmarks.detector import LandmarkDetector
from vcam.landmarks.face import Box, Face, box_overlap, half_inside, points_box


@dataclass(frozen=True)
class TrackerSettings:
    """How often to re-detect, when to call the face lost, and how much to smooth.

    ``min_cutoff`` (Hz) sets the smoothing of a still face (lower: steadier, more lag);
    ``beta`` lets fast motion through with less lag; ``smooth`` turns filtering off, which
    offline preprocessing wants (no lag between image and landmarks).
    """

    redetect_every: int = 10
    min_overlap: float = 0.4
    smooth: bool = True
    min_cutoff: float = 1.5
    beta: float = 0.05
    derivative_cutoff: float = 1.0


class OneEuroFilter:
    """The One Euro filter (Casiez et al., CHI 2012) over an array of values, per element."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0,
                 derivative_cutoff: float = 1.0) -> None:
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.derivative_cutoff = derivative_cutoff
        self.reset()

    def reset(self) -> None:
        self._value: np.ndarray | None = None
        self._derivative: np.ndarray | None = None
        self._time = 0.0

    def __call__(self, value: np.ndarray, timestamp: float) -> np.ndarray:
        value = np.asarray(value, np.float64)
        if self._value is None or self._derivative is None:
            self._value, self._derivative, self._time = value, np.zeros_like(value), timestamp
            return value.astype(np.float32)
        elapsed = timestamp - self._time
        if elapsed <= 0:
            return self._value.astype(np.float32)
        derivative = (value - self._value) / elapsed
        self._derivative = blend(self._derivative, derivative,
                                 alpha(self.derivative_cutoff, elapsed))
        cutoff = self.min_cutoff + self.beta * np.abs(self._derivative)
        self._value = blend(self._value, value, alpha(cutoff, elapsed))
        self._time = timestamp
        return self._value.astype(np.float32)


def alpha(cutoff: float | np.ndarray, elapsed: float) -> float | np.ndarray:
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / elapsed)


def blend(previous: np.ndarray, current: np.ndarray, weight: float | np.ndarray) -> np.ndarray:
    return previous + weight * (current - previous)


class BoxFromLandmarks:
    """Predicts a detector-style box from landmarks, learning the relation at each detection
    (detector boxes and landmark extents differ by a per-detector offset and scale)."""

    def __init__(self) -> None:
        self._relation = np.array([0.0, 0.12, 1.0, 1.0])

    def learn(self, box: Box, points: np.ndarray) -> None:
        x0, y0, x1, y1 = points_box(points)
        width, height = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
        self._relation = np.array([(box[0] - x0) / width, (box[1] - y0) / height,
                                   (box[2] - x0) / width, (box[3] - y0) / height])

    def predict(self, points: np.ndarray) -> Box:
        x0, y0, x1, y1 = points_box(points)
        width, height = x1 - x0, y1 - y0
        r = self._relation
        return (x0 + r[0] * width, y0 + r[1] * height, x0 + r[2] * width, y0 + r[3] * height)


class FaceTracker:
    """Follows the largest face of a video; ``update`` returns it, or None when there is none.

    Every ``redetect_every`` frames a detection near the tracked box checks the face is still
    there; the whole frame is searched on the first frame and whenever the face is lost.
    ``detections`` and ``frames`` count the detections and the frames seen.
    """

    def __init__(self, detector: LandmarkDetector,
                 settings: TrackerSettings | None = None) -> None:
        self.detector = detector
        self.settings = settings or TrackerSettings()
        self._filter = OneEuroFilter(self.settings.min_cutoff, self.settings.beta,
                                     self.settings.derivative_cutoff)
        self._boxes = BoxFromLandmarks()
        self.detections = 0
        self.frames = 0
        self.reset()

    def reset(self) -> None:
        """Forget the face: the next frame runs a full detection."""
        self._face: Face | None = None
        self._since_detection = 0
        self._filter.reset()

    def update(self, image: np.ndarray, timestamp: float | None = None) -> Face | None:
        self.frames += 1
        face = None
        if self._face is not None:
            if self._since_detection < self.settings.redetect_every:
                face = self._follow(image, self._face)
            else:
                face = self._detect(image, near=self._face.box)
        if face is None:
            face = self._detect(image)
        if face is None:
            self.reset()
            return None
        self._face = face
        return self._smoothed(face, time.monotonic() if timestamp is None else timestamp)

    def _detect(self, image: np.ndarray, near: Box | None = None) -> Face | None:
        """A detection in the whole frame or, when ``near`` is given, only around it."""
        self.detections += 1
        self._since_detection = 1
        faces = self.detector.detect(image, near=near)
        if not faces:
            return None
        if self._face is not None and box_overlap(faces[0].box, self._face.box) == 0:
            self._filter.reset()  # a different place: do not smooth across the jump
        self._boxes.learn(faces[0].box, faces[0].points)
        return faces[0]

    def _follow(self, image: np.ndarray, previous: Face) -> Face | None:
        self._since_detection += 1
        box = self._boxes.predict(previous.points)
        points = self.detector.fit(image, box)
        followed = self._boxes.predict(points)
        if (box_overlap(box, followed) < self.settings.min_overlap
                or not half_inside(followed, image)):
            return None
        return Face(points, followed, previous.score)

    def _smoothed(self, face: Face, timestamp: float) -> Face:
        if not self.settings.smooth:
            return face
        return Face(self._filter(face.points, timestamp), face.box, face.score)
