"""Fidelity where a face moves most: SSIM and PSNR inside a box around the mouth and the eyes.

A whole-frame figure is dominated by hair, background and cheeks, which any method copies from
the enrollment frame; the mouth and the eyes are where a rendering must paint what no
enrollment frame shows (an open mouth, closed eyes). Each region is a square box centred on its
landmarks (iBUG 300-W order: mouth 48-67, eyes 36-47) whose side is :data:`BOX_SCALE` times the
larger extent of those landmarks, at least :data:`MIN_BOX_SIDE` pixels, clipped to the image.
The box comes from the *target* landmarks, so every method is scored on the same pixels.

Inside an open mouth a second figure, ``mouth_interior``, asks whether the rendering has the
real frame's contrast there: bright teeth against a dark cavity spread the luma of the
inner-lip polygon (landmarks 60-67) widely, a smooth fill does not. It is the ratio of the
smaller to the larger of the two spreads (rendered, real), 1 when they match. It compares the
spreads only, not where dark and bright lie (PSNR and SSIM of the mouth box do that): noise
of the right spread would score 1 too.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from vcam.eval.metrics import psnr, ssim

MOUTH_POINTS = tuple(range(48, 68))
EYE_POINTS = tuple(range(36, 48))
REGIONS = {"mouth": MOUTH_POINTS, "eye": EYE_POINTS}
# Side of the box over the larger extent (width or height) of the region's landmarks: a
# margin of a quarter of the extent on each side takes in the lips' and lids' edges.
BOX_SCALE = 1.5
# The smallest box side in pixels; keeps SSIM's 7x7 window meaningful on a small region.
MIN_BOX_SIDE = 48
INNER_LIP_POINTS = tuple(range(60, 68))
REGION_METRICS = (*(f"{region}_{metric}" for region in REGIONS for metric in ("ssim", "psnr")),
                  "mouth_interior")
# An inner-lip polygon whose mean height (area over width) is below this share of its width,
# or that covers fewer pixels, is a shut mouth: no interior to compare.
MIN_INTERIOR_OPENING = 0.1
MIN_INTERIOR_PIXELS = 30
# Spreads below this (of luma in 0-1) count as this: two near-uniform interiors match.
MIN_SPREAD = 0.05

Box = tuple[int, int, int, int]


def region_box(points: np.ndarray, indices: tuple[int, ...], image_size: tuple[int, int],
               scale: float = BOX_SCALE, min_side: int = MIN_BOX_SIDE) -> Box:
    """The box (x0, y0, x1, y1), end-exclusive integer pixels, around ``points[indices]``:
    a square centred on their bounding box with side ``max(scale * extent, min_side)``,
    clipped to an image of ``image_size`` (height, width). Empty only when the landmarks lie
    wholly outside the image."""
    region = np.asarray(points, np.float64)[list(indices)]
    low, high = region.min(axis=0), region.max(axis=0)
    centre = (low + high) / 2
    side = max(scale * float((high - low).max()), float(min_side))
    height, width = image_size
    x0, y0 = (math.floor(float(value) - side / 2) for value in centre)
    x1, y1 = x0 + math.ceil(side), y0 + math.ceil(side)
    return (min(max(x0, 0), width), min(max(y0, 0), height),
            min(max(x1, 0), width), min(max(y1, 0), height))


def crop(image: np.ndarray, box: Box) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.ascontiguousarray(image[y0:y1, x0:x1])


def region_scores(rendered: np.ndarray, real: np.ndarray, points: np.ndarray) -> dict[str, float]:
    """``mouth_ssim``, ``mouth_psnr``, ``eye_ssim`` and ``eye_psnr`` of a rendered frame
    against the real one, in boxes around the target landmarks ``points``; ``nan`` for a
    region whose box is smaller than SSIM's window."""
    scores = {}
    for name, indices in REGIONS.items():
        box = region_box(points, indices, real.shape[:2])
        usable = min(box[2] - box[0], box[3] - box[1]) >= 7
        first, second = crop(rendered, box), crop(real, box)
        scores[f"{name}_ssim"] = ssim(first, second) if usable else math.nan
        scores[f"{name}_psnr"] = psnr(first, second) if usable else math.nan
    scores["mouth_interior"] = interior_match(rendered, real, points)
    return scores


def interior_spread(image: np.ndarray, points: np.ndarray) -> float:
    """The luma spread (90th minus 10th percentile, luma 0-1) inside the inner-lip polygon
    of ``points`` in an RGB uint8 ``image``: about 0.4 where teeth and a dark cavity show,
    low for a smooth fill; ``nan`` for a shut mouth (see :data:`MIN_INTERIOR_OPENING`)."""
    polygon = np.asarray(points, np.float32)[list(INNER_LIP_POINTS)]
    width = float(np.ptp(polygon[:, 0]))
    if cv2.contourArea(polygon) < MIN_INTERIOR_OPENING * width * width:
        return math.nan
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 1)
    luma = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[mask > 0]
    if luma.size < MIN_INTERIOR_PIXELS:
        return math.nan
    low, high = np.percentile(luma, [10, 90])
    return float(high - low) / 255.0


def interior_match(rendered: np.ndarray, real: np.ndarray, points: np.ndarray) -> float:
    """The smaller over the larger luma spread of the mouth's interior in the two frames
    (see :func:`interior_spread`): 1 when the rendering's interior is as contrasted as the
    real one (where dark and bright lie is not compared), low for a smooth fill where teeth
    and cavity show; ``nan`` for a shut mouth."""
    spreads = [interior_spread(image, points) for image in (rendered, real)]
    if any(math.isnan(spread) for spread in spreads):
        return math.nan
    floored = [max(spread, MIN_SPREAD) for spread in spreads]
    return min(floored) / max(floored)


def mouth_difference(first: np.ndarray, second: np.ndarray, points: np.ndarray) -> float:
    """Mean absolute pixel difference of two frames inside the mouth box of ``points``."""
    box = region_box(points, MOUTH_POINTS, first.shape[:2])
    difference = np.abs(crop(first, box).astype(np.int16) - crop(second, box).astype(np.int16))
    return float(difference.mean()) if difference.size else 0.0
