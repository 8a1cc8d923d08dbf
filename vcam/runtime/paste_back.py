"""Paste-back: each rendered crop put back into the avatar's enrollment photo.

The photo (the avatar's :class:`~vcam.backdrop.Backdrop`) is fitted to the output once: scaled
uniformly, never stretched, to fill the output (cropping what does not fit, while keeping the
whole head in view); only where the head cannot fit otherwise are bars left at the sides
(letterbox). Each frame the rendered crop is warped by the inverse of the enrollment crop
transform (then the same fit) to where the face was, and blended in with a soft mask over the
face and hair. The mask is drawn from the landmarks: the neutral face's region (so the
photo's own face is always covered) joined with the current one (so a turned, tilted or
moved head is covered too), heavily feathered and faded out before the crop's border, so no
seam and no square edge shows.

The generator's crops are softer than the photo around them; a light unsharp mask on the
crop (``SHARPEN``) brings the face's sharpness close to the photo's. Measured on the built-in
avatar with the shipped model, over the face in the 1280x720 output: variance of the
Laplacian (photo: 28.3) on the neutral face / mean of 8 demo poses, and on the neutral face
(where the photo is the truth) PSNR and SSIM against the photo:

    none          19.6 / 13.7   41.6 dB  0.9940
    amount 0.3    26.2 / 17.9   42.8 dB  0.9956
    amount 0.5    31.3 / 21.1   42.6 dB  0.9948   <- kept: moving faces are the softer ones
    amount 0.7    36.6 / 24.5   41.7 dB  0.9928
    amount 1.0    45.9 / 30.4   39.7 dB  0.9875
    detail 0.5    34.6 / 23.3   40.4 dB  0.9917   (the photo's high frequencies, warped)
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from vcam.backdrop import Backdrop

# The whole head (the crop's square) keeps this much room in the view, as a multiple of its
# side: less and the view is widened (bars at the sides) rather than cutting the head.
HEAD_ROOM = 1.25
# The face-and-hair region: the brows lifted by this fraction of the face's height (the
# forehead and the hair above it), the whole outline grown by this factor about its centre.
HAIR_LIFT = 0.65
MASK_GROWTH = 1.12
# The mask is drawn at 1/MASK_SHRINK of the crop's size (it is smooth, so this loses nothing),
# feathered by a Gaussian of MASK_SOFTNESS crop sides, and faded to zero over the outer
# BORDER_FADE of the crop.
MASK_SHRINK = 4
MASK_SOFTNESS = 0.045
BORDER_FADE = 0.12
# Unsharp mask on the rendered crop: crop + SHARPEN * (crop - blur(crop, SHARPEN_SIGMA px)).
SHARPEN = 0.5
SHARPEN_SIGMA = 1.0


def view_transform(image_size: tuple[int, int], face: tuple[float, float, float],
                   width: int, height: int) -> np.ndarray:
    """(2, 3) affine: backdrop px -> output px for a ``image_size`` (width, height) backdrop
    whose head square is ``face`` (centre x, centre y, side): the largest view of the output's
    aspect that fits in the backdrop, widened to hold the head with room, centred on the face
    and kept inside the backdrop where it fits. One uniform scale: never stretched."""
    source_width, source_height = image_size
    aspect = width / height
    view_height = min(source_height, source_width / aspect)
    view_height = max(view_height, min(face[2] * HEAD_ROOM, source_height))
    view_width = view_height * aspect
    x0 = placed(face[0] - view_width / 2, view_width, source_width)
    y0 = placed(face[1] - view_height / 2, view_height, source_height)
    scale = height / view_height
    return np.array([[scale, 0.0, -x0 * scale + 0.5 * scale - 0.5],
                     [0.0, scale, -y0 * scale + 0.5 * scale - 0.5]], np.float64)


def placed(start: float, length: float, limit: float) -> float:
    """``start`` moved so [start, start + length] lies in [0, limit]; centred if too long."""
    if length >= limit:
        return (limit - length) / 2
    return min(max(start, 0.0), limit - length)


def compose_affine(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The (2, 3) affine applying ``first``, then ``second``."""
    as_3x3 = np.vstack([first, [0.0, 0.0, 1.0]])
    return (second @ as_3x3)[:2]


def face_region(points: np.ndarray) -> np.ndarray:
    """A polygon around the face and hair of 68 landmarks: the jaw line, the brows, the brows
    lifted to above the hairline, grown a little about the centre."""
    points = np.asarray(points, np.float64)
    jaw, brows = points[0:17], points[17:27]
    face_height = float(jaw[:, 1].max() - brows[:, 1].min())
    hair = brows - np.array([0.0, HAIR_LIFT * face_height])
    outline = np.concatenate([jaw, brows, hair])
    centre = outline.mean(axis=0)
    return centre + (outline - centre) * MASK_GROWTH


def border_fade(size: int, fade: float) -> np.ndarray:
    """(size, size) float32: 1 inside, easing (smoothstep) to 0 at the square's border."""
    distance = np.minimum(np.arange(size), np.arange(size)[::-1]).astype(np.float64)
    ramp = np.clip(distance / max(fade * size, 1e-6), 0.0, 1.0)
    ramp = ramp * ramp * (3 - 2 * ramp)
    return np.minimum(ramp[:, None], ramp[None, :]).astype(np.float32)


class FaceMask:
    """Soft masks over the face and hair of a crop of ``crop_size`` px, at reduced size."""

    def __init__(self, crop_size: int, neutral: np.ndarray) -> None:
        self.crop_size = crop_size
        self.size = max(8, crop_size // MASK_SHRINK)
        self._fade = border_fade(self.size, BORDER_FADE)
        self._sigma = MASK_SOFTNESS * self.size
        self._canvas = np.zeros((self.size, self.size), np.float32)
        self.neutral = self.region_mask(neutral)

    @property
    def to_crop(self) -> np.ndarray:
        """(2, 3) affine: mask px -> crop px (pixel centres)."""
        factor = self.crop_size / self.size
        return np.array([[factor, 0.0, 0.5 * factor - 0.5], [0.0, factor, 0.5 * factor - 0.5]])

    def region_mask(self, points: np.ndarray) -> np.ndarray:
        """The feathered face-and-hair region of ``points`` (crop px)."""
        factor = self.size / self.crop_size
        polygon = (face_region(points) + 0.5) * factor - 0.5
        hull = cv2.convexHull(np.round(polygon * 16).astype(np.int32))
        self._canvas[:] = 0
        cv2.fillConvexPoly(self._canvas, hull, 1.0, lineType=cv2.LINE_AA, shift=4)
        soft = cv2.GaussianBlur(self._canvas, (0, 0), self._sigma)
        return soft * self._fade

    def for_points(self, points: np.ndarray | None) -> np.ndarray:
        """The neutral face's region joined with that of ``points`` (None: neutral only)."""
        if points is None:
            return self.neutral
        return np.maximum(self.neutral, self.region_mask(points))


@dataclass(frozen=True)
class Region:
    """An axis-aligned box of the output, (x0, y0) inclusive, (x1, y1) exclusive."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def size(self) -> tuple[int, int]:
        return self.x1 - self.x0, self.y1 - self.y0

    @property
    def empty(self) -> bool:
        return self.x1 <= self.x0 or self.y1 <= self.y0

    def shifted(self, matrix: np.ndarray) -> np.ndarray:
        """``matrix`` (into output px) into this region's px."""
        moved = matrix.copy()
        moved[:, 2] -= (self.x0, self.y0)
        return moved


def covered_region(matrix: np.ndarray, crop_size: int, width: int, height: int) -> Region:
    """The output box covered by the crop square under ``matrix`` (crop px -> output px)."""
    corners = np.array([[0, 0], [crop_size, 0], [0, crop_size], [crop_size, crop_size]],
                       np.float64) - 0.5
    mapped = corners @ matrix[:, :2].T + matrix[:, 2]
    low, high = np.floor(mapped.min(axis=0)), np.ceil(mapped.max(axis=0)) + 1
    return Region(int(max(low[0], 0)), int(max(low[1], 0)), int(min(high[0], width)),
                  int(min(high[1], height)))


class PasteBack:
    """One avatar's photo, fitted to the output, with each rendered crop pasted back."""

    def __init__(self, backdrop: Backdrop, crop_size: int, neutral: np.ndarray, width: int,
                 height: int, bar_colour: tuple[int, int, int] = (0, 0, 0),
                 sharpen: float = SHARPEN) -> None:
        self.sharpen = sharpen
        view = view_transform((backdrop.image.shape[1], backdrop.image.shape[0]),
                              backdrop.face_window(crop_size), width, height)
        self.still = cv2.warpAffine(backdrop.image, view, (width, height),
                                    flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                    borderValue=bar_colour)
        crop_to_output = compose_affine(backdrop.to_backdrop, view)
        self.region = covered_region(crop_to_output, crop_size, width, height)
        self.mask = FaceMask(crop_size, neutral)
        self._crop_matrix = self.region.shifted(crop_to_output)
        self._mask_matrix = compose_affine(self.mask.to_crop, self._crop_matrix)

    def weights(self, points: np.ndarray | None) -> np.ndarray:
        """The blend weight of the rendered crop over the region (float32, in [0, 1])."""
        return cv2.warpAffine(self.mask.for_points(points), self._mask_matrix, self.region.size,
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=0)

    def compose(self, canvas: np.ndarray, rendered: np.ndarray | None,
                points: np.ndarray | None) -> None:
        """``canvas`` := the photo with ``rendered`` (S, S, 3) pasted back, drawn with the
        avatar landmarks ``points`` (crop px; None: the neutral face)."""
        np.copyto(canvas, self.still)
        if rendered is None or self.region.empty:
            return
        region = self.region
        if self.sharpen > 0:
            blurred = cv2.GaussianBlur(rendered, (0, 0), SHARPEN_SIGMA)
            rendered = cv2.addWeighted(rendered, 1 + self.sharpen, blurred, -self.sharpen, 0)
        placed_crop = cv2.warpAffine(rendered, self._crop_matrix, region.size,
                                     flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        weight = self.weights(points)
        area = canvas[region.y0:region.y1, region.x0:region.x1]
        cv2.blendLinear(placed_crop, area, weight, 1.0 - weight, dst=area)
