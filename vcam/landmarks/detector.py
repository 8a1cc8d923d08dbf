"""The landmark detector protocol and its registry.

Every backend returns faces (``vcam.landmarks.face``) with 68 points in iBUG 300-W order,
float32 pixel coordinates of the RGB uint8 image it was given, the face box and a confidence
score.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from vcam.errors import UserError
from vcam.landmarks.face import Box, Face


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
