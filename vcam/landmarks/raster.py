"""The paper's landmark image: each landmark group a polyline in its own colour on black."""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from calibration import ibug

# Sub-pixel precision for cv2 drawing: coordinates are multiplied by 2**SHIFT.
SHIFT = 4


class LandmarkGroup(NamedTuple):
    name: str
    start: int
    stop: int
    closed: bool
    colour: tuple[int, int, int]  # RGB


GROUPS = tuple(LandmarkGroup(name, points.start, points.stop, closed, colour)
               for name, points, closed, colour in (
                   ("jaw", ibug.JAW, False, (255, 255, 255)),
                   ("right_brow", ibug.RIGHT_BROW, False, (255, 0, 0)),
                   ("left_brow", ibug.LEFT_BROW, False, (0, 255, 0)),
                   ("nose_bridge", ibug.NOSE_BRIDGE, False, (0, 0, 255)),
                   ("nose_base", ibug.NOSE_BASE, False, (255, 255, 0)),
                   ("right_eye", ibug.RIGHT_EYE, True, (255, 0, 255)),
                   ("left_eye", ibug.LEFT_EYE, True, (0, 255, 255)),
                   ("outer_lip", ibug.OUTER_LIP, True, (255, 128, 0)),
                   ("inner_lip", ibug.INNER_LIP, True, (128, 0, 255))))


def line_width(size: int) -> int:
    """Line thickness for an S x S landmark image: 2 px at 256, scaling with S."""
    return max(1, round(size / 128))


def rasterise(points: np.ndarray, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """Draw 68 landmarks (crop pixel coordinates) as an RGB uint8 (size, size, 3) image.

    Pass ``out`` to draw into a preallocated buffer (it is cleared first).
    """
    if out is None:
        out = np.zeros((size, size, 3), np.uint8)
    else:
        out.fill(0)
    fixed = np.round(np.asarray(points, np.float64) * (1 << SHIFT)).astype(np.int32)
    thickness = line_width(size)
    for group in GROUPS:
        cv2.polylines(out, [fixed[group.start:group.stop]], group.closed, group.colour,
                      thickness, cv2.LINE_AA, SHIFT)
    return out
