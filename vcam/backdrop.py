"""The enrollment photo around the face, kept with an avatar so the runtime can paste each
rendered crop back into it ("paste-back"): the output looks like the photo come alive.

A :class:`Backdrop` is the part of the photo (or snapshot frame) around the face, at most
``MAX_SIDE`` pixels on its longest side, and the 2x3 affine taking its pixels to the pixels
of the avatar's neutral crop (the first enrollment crop). Its inverse puts a rendered crop
back where the face was cut from.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from vcam.landmarks.align import CropTransform

# The longest side of a kept photo, in pixels (bounds the bundle: 1280x720x3 is 2.7 MB).
MAX_SIDE = 1280
# How far around the face the photo is kept, in crop sides from the crop's centre
# (horizontally, vertically): a selfie or portrait is kept whole, a group photo is not.
REACH = (4.5, 2.5)


@dataclass(frozen=True)
class Backdrop:
    """``image``: (H, W, 3) RGB uint8; ``to_crop``: (2, 3) affine, image px -> crop px."""

    image: np.ndarray
    to_crop: np.ndarray

    def __post_init__(self) -> None:
        image, matrix = np.asarray(self.image), np.asarray(self.to_crop)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"a backdrop image is (H, W, 3) uint8, got {image.dtype} "
                             f"{image.shape}")
        if max(image.shape[:2]) > MAX_SIDE or min(image.shape[:2]) < 1:
            raise ValueError(f"a backdrop is 1 to {MAX_SIDE} px on a side, got {image.shape}")
        if matrix.shape != (2, 3) or not np.isfinite(matrix).all():
            raise ValueError(f"a backdrop's transform is a finite 2x3 matrix, got "
                             f"{matrix.shape}")
        if abs(np.linalg.det(matrix[:, :2].astype(np.float64))) < 1e-9:
            raise ValueError("a backdrop's transform must be invertible")

    @property
    def to_backdrop(self) -> np.ndarray:
        """(2, 3) affine: crop px -> backdrop px."""
        return cv2.invertAffineTransform(self.to_crop.astype(np.float64))

    def face_window(self, crop_size: int) -> tuple[float, float, float]:
        """(centre x, centre y, side) of the neutral crop's square in backdrop pixels."""
        to_backdrop = self.to_backdrop
        centre = to_backdrop[:, :2] @ np.array([crop_size / 2, crop_size / 2]) + to_backdrop[:, 2]
        side = crop_size * float(np.sqrt(abs(np.linalg.det(to_backdrop[:, :2]))))
        return float(centre[0]), float(centre[1]), side


def kept_region(shape: tuple[int, ...], transform: CropTransform) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the part of an image of ``shape`` kept around the crop's face."""
    height, width = shape[:2]
    inverse = transform.inverse
    centre = inverse[:, :2] @ np.full(2, transform.size / 2) + inverse[:, 2]
    side = transform.size / transform.scale
    reach_x, reach_y = REACH[0] * side, REACH[1] * side
    x0, x1 = max(0, int(centre[0] - reach_x)), min(width, int(np.ceil(centre[0] + reach_x)))
    y0, y1 = max(0, int(centre[1] - reach_y)), min(height, int(np.ceil(centre[1] + reach_y)))
    if x1 <= x0 or y1 <= y0:  # the face lies outside the picture: keep all of it
        return 0, 0, width, height
    return x0, y0, x1, y1


def backdrop_from_photo(image: np.ndarray, transform: CropTransform,
                        max_side: int = MAX_SIDE) -> Backdrop:
    """The photo around the face of ``transform`` (the photo -> crop transform), shrunk to
    at most ``max_side`` px on its longest side."""
    x0, y0, x1, y1 = kept_region(image.shape, transform)
    kept = image[y0:y1, x0:x1]
    shrink = min(1.0, max_side / max(kept.shape[:2]))
    if shrink < 1.0:
        size = (max(1, round(kept.shape[1] * shrink)), max(1, round(kept.shape[0] * shrink)))
        kept = cv2.resize(kept, size, interpolation=cv2.INTER_AREA)
    scale_x = kept.shape[1] / (x1 - x0)
    scale_y = kept.shape[0] / (y1 - y0)
    # backdrop px -> photo px (cv2.resize's pixel centres), then the photo -> crop transform
    to_photo = np.array([[1 / scale_x, 0.0, x0 + 0.5 / scale_x - 0.5],
                         [0.0, 1 / scale_y, y0 + 0.5 / scale_y - 0.5], [0.0, 0.0, 1.0]])
    to_crop = transform.matrix @ to_photo
    return Backdrop(np.ascontiguousarray(kept), to_crop.astype(np.float32))
