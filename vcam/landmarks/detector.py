"""The landmark detector protocol and its registry.

Every backend returns faces with 68 points in iBUG 300-W order, float32 pixel coordinates of
the RGB uint8 image it was given, the face box and a confidence score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from vcam.errors import UserError

NUM_LANDMARKS = 68
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Face:
    """One face: 68 landmarks (float32, shape (68, 2)), its box (x0, y0, x1, y1) and a score."""

    points: np.ndarray
    box: Box
    score: float

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)


class LandmarkDetector(Protocol):
    """Finds faces and fits 68 landmarks. Images are RGB uint8 arrays of shape (H, W, 3)."""

    name: str

    def detect(self, image: np.ndarray, near: Box | None = None) -> list[Face]:
        """Every face found, largest first: in the whole frame, or only close to the box
        ``near`` (a cheap check that a tracked face is still there)."""
        ...

    def fit(self, image: np.ndarray, box: Box) -> np.ndarray:
        """The (68, 2) landmarks of the face inside ``box`` (a detector-style box), without
        running detection."""
        ...


def check_image(image: np.ndarray) -> np.ndarray:
    """Validate an RGB uint8 image and return it C-contiguous."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image of shape (H, W, 3), got {image.dtype} "
                         f"{image.shape}")
    return np.ascontiguousarray(image)


def largest_first(faces: list[Face]) -> list[Face]:
    return sorted(faces, key=lambda face: face.area, reverse=True)


BACKENDS = ("dlib", "face-alignment")


def create_detector(name: str = "dlib", device: str = "cpu") -> LandmarkDetector:
    """Build a detector by backend name: ``dlib`` (default, offline) or ``face-alignment``."""
    if name == "dlib":
        from vcam.landmarks.dlib_backend import DlibDetector

        return DlibDetector()
    if name == "face-alignment":
        from vcam.landmarks.fan_backend import FanDetector

        return FanDetector(device=device)
    raise UserError(f"unknown landmark backend {name!r}: choose one of {', '.join(BACKENDS)}")
