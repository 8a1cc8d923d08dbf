"""A found face (68 landmarks, its box, a score) and the box arithmetic shared by the
detectors, the tracker and the metrics.

Landmarks are in iBUG 300-W order, float32 pixel coordinates of the RGB uint8 image they were
found in; a box is (x0, y0, x1, y1) in the same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calibration.ibug import NUM_LANDMARKS

__all__ = ["NUM_LANDMARKS", "Box", "Face", "box_area", "box_overlap", "check_image",
           "half_inside", "largest_first", "points_box", "widen_box"]

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Face:
    """One face: 68 landmarks (float32, shape (68, 2)), its box (x0, y0, x1, y1) and a score."""

    points: np.ndarray
    box: Box
    score: float

    @property
    def area(self) -> float:
        return box_area(self.box)


def check_image(image: np.ndarray) -> np.ndarray:
    """Validate an RGB uint8 image and return it C-contiguous."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image of shape (H, W, 3), got {image.dtype} "
                         f"{image.shape}")
    return np.ascontiguousarray(image)


def largest_first(faces: list[Face]) -> list[Face]:
    return sorted(faces, key=lambda face: face.area, reverse=True)


def box_area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def points_box(points: np.ndarray) -> Box:
    """The bounding box (x0, y0, x1, y1) of landmarks."""
    low, high = np.asarray(points).min(axis=0), np.asarray(points).max(axis=0)
    return float(low[0]), float(low[1]), float(high[0]), float(high[1])


def box_overlap(first: Box, second: Box) -> float:
    """Intersection over union of two boxes."""
    width = min(first[2], second[2]) - max(first[0], second[0])
    height = min(first[3], second[3]) - max(first[1], second[1])
    intersection = max(0.0, width) * max(0.0, height)
    union = box_area(first) + box_area(second) - intersection
    return intersection / union if union > 0 else 0.0


def widen_box(box: Box, factor: float) -> Box:
    """The box scaled by ``factor`` about its centre."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half_w, half_h = (x1 - x0) * factor / 2, (y1 - y0) * factor / 2
    return (cx - half_w, cy - half_h, cx + half_w, cy + half_h)


def half_inside(box: Box, image: np.ndarray) -> bool:
    """Whether at least half of the box lies inside the image."""
    height, width = image.shape[:2]
    visible = (min(box[2], width) - max(box[0], 0)) * (min(box[3], height) - max(box[1], 0))
    area = (box[2] - box[0]) * (box[3] - box[1])
    return area > 0 and visible >= 0.5 * area
