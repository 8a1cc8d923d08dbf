"""Square face crops around the landmarks, and pasting a rendered crop back.

A crop is an axis-aligned square (scale and translation only: head roll stays in the image,
as in the paper's data) described by a window (centre x, centre y, side) in the source image.
The 2x3 affine that maps source pixels to crop pixels is kept so a crop rendered by the
generator can be pasted back where the face was.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

DEFAULT_SIZE = 256
# The crop's side is this many times the landmarks' larger extent (whole head plus a margin).
DEFAULT_MARGIN = 1.8
# The crop centre sits above the landmarks' centre by this fraction of their height (forehead).
DEFAULT_LIFT = 0.12


@dataclass(frozen=True)
class CropTransform:
    """Maps source-image pixel coordinates to crop coordinates (``matrix`` is 2x3)."""

    matrix: np.ndarray
    size: int

    @classmethod
    def from_window(cls, centre_x: float, centre_y: float, side: float,
                    size: int = DEFAULT_SIZE) -> CropTransform:
        scale = size / side
        matrix = np.array([[scale, 0.0, size / 2 - scale * centre_x],
                           [0.0, scale, size / 2 - scale * centre_y]], np.float64)
        return cls(matrix, size)

    @property
    def scale(self) -> float:
        return float(self.matrix[0, 0])

    @property
    def inverse(self) -> np.ndarray:
        return cv2.invertAffineTransform(self.matrix)

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        return apply_affine(self.matrix, points)

    def to_source(self, points: np.ndarray) -> np.ndarray:
        return apply_affine(self.inverse, points)


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, np.float64)
    return (points @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def crop_window(points: np.ndarray, margin: float = DEFAULT_MARGIN,
                lift: float = DEFAULT_LIFT) -> np.ndarray:
    """(centre x, centre y, side) of the square crop around one face's landmarks."""
    low, high = points.min(axis=0), points.max(axis=0)
    width, height = high - low
    centre_x, centre_y = (low + high) / 2
    return np.array([centre_x, centre_y - lift * height, margin * max(width, height)],
                    np.float64)


def crop_transform_for(points: np.ndarray, size: int = DEFAULT_SIZE,
                       margin: float = DEFAULT_MARGIN,
                       lift: float = DEFAULT_LIFT) -> CropTransform:
    """The crop transform for one face's landmarks."""
    return CropTransform.from_window(*crop_window(points, margin, lift), size=size)


def crop_face(image: np.ndarray, transform: CropTransform) -> np.ndarray:
    """Cut the square crop out of ``image``; outside the frame the border pixels repeat.

    Strong downscaling first shrinks the frame with area averaging, so the crop of a large face
    in a high-resolution frame is not aliased.
    """
    matrix = transform.matrix
    shrink = int(1 / transform.scale) if transform.scale < 0.5 else 1
    if shrink > 1:
        height, width = image.shape[:2]
        image = cv2.resize(image, (width // shrink, height // shrink),
                           interpolation=cv2.INTER_AREA)
        matrix = matrix.copy()
        matrix[:, 0] *= width / image.shape[1]
        matrix[:, 1] *= height / image.shape[0]
    return cv2.warpAffine(image, matrix, (transform.size, transform.size),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def paste_back(canvas: np.ndarray, crop: np.ndarray, transform: CropTransform,
               feather: int = 0) -> np.ndarray:
    """A copy of ``canvas`` with ``crop`` warped back to where it was cut from.

    ``feather`` > 0 blends the crop's outer ``feather`` pixels into the canvas.
    """
    height, width = canvas.shape[:2]
    inverse = transform.inverse
    placed = cv2.warpAffine(crop, inverse, (width, height), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT)
    mask = crop_mask(transform.size, feather)
    weight = cv2.warpAffine(mask, inverse, (width, height), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT)[..., None]
    blended = canvas.astype(np.float32) * (1 - weight) + placed.astype(np.float32) * weight
    return np.clip(blended + 0.5, 0, 255).astype(canvas.dtype)


def crop_mask(size: int, feather: int) -> np.ndarray:
    """1 inside the crop, ramping to 0 over ``feather`` pixels at its border."""
    if feather <= 0:
        return np.ones((size, size), np.float32)
    ramp = np.minimum(np.arange(size), np.arange(size)[::-1]).astype(np.float32)
    ramp = np.clip((ramp + 1) / feather, 0, 1)
    return np.minimum(ramp[:, None], ramp[None, :])
