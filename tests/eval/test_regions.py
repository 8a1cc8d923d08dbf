"""Mouth and eye boxes, and the figures measured inside them, on constructed landmarks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calibration.sets import neutral_face
from vcam.eval.regions import (
    EYE_POINTS,
    MIN_BOX_SIDE,
    MOUTH_POINTS,
    interior_match,
    interior_spread,
    mouth_difference,
    region_box,
    region_scores,
)

SIZE = 256


def square_points(centre: tuple[float, float], extent: tuple[float, float]) -> np.ndarray:
    """68 points all at ``centre`` except the mouth's (48-67), spread over a box of
    ``extent`` (width, height) around it."""
    points = np.tile(np.array(centre, np.float64), (68, 1))
    corners = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])
    for offset, index in enumerate(MOUTH_POINTS):
        points[index] = np.array(centre) + corners[offset % 4] * np.array(extent)
    return points


def test_the_box_is_a_square_one_and_a_half_times_the_larger_extent():
    points = square_points((128.0, 160.0), (80.0, 30.0))
    x0, y0, x1, y1 = region_box(points, MOUTH_POINTS, (SIZE, SIZE))
    assert x1 - x0 == y1 - y0 == 120
    assert (x0 + x1) / 2 == pytest.approx(128, abs=1) and (y0 + y1) / 2 == pytest.approx(160, abs=1)


def test_a_small_region_gets_the_smallest_box():
    points = square_points((100.0, 100.0), (10.0, 4.0))
    x0, y0, x1, y1 = region_box(points, MOUTH_POINTS, (SIZE, SIZE))
    assert x1 - x0 == y1 - y0 == MIN_BOX_SIDE


def test_the_box_is_clipped_to_the_image():
    points = square_points((10.0, 250.0), (60.0, 20.0))
    x0, y0, x1, y1 = region_box(points, MOUTH_POINTS, (SIZE, 300))
    assert (x0, y1) == (0, SIZE)
    assert x1 == 10 + 45 and y0 == 250 - 45
    outside = square_points((-500.0, -500.0), (20.0, 20.0))
    box = region_box(outside, MOUTH_POINTS, (SIZE, SIZE))
    assert box[2] - box[0] <= 0 and box[3] - box[1] <= 0


def test_mouth_and_eye_boxes_of_a_face_hold_their_landmarks():
    face = neutral_face(SIZE)
    for indices in (MOUTH_POINTS, EYE_POINTS):
        x0, y0, x1, y1 = region_box(face, indices, (SIZE, SIZE))
        region = face[list(indices)]
        assert (region[:, 0] > x0).all() and (region[:, 0] < x1).all()
        assert (region[:, 1] > y0).all() and (region[:, 1] < y1).all()
    mouth, eyes = (region_box(face, indices, (SIZE, SIZE))
                   for indices in (MOUTH_POINTS, EYE_POINTS))
    assert mouth[1] > eyes[1]


def test_region_scores_see_only_their_box():
    face = neutral_face(SIZE)
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    rendered = real.copy()
    x0, y0, x1, y1 = region_box(face, MOUTH_POINTS, (SIZE, SIZE))
    rendered[y0:y1, x0:x1] = 255 - rendered[y0:y1, x0:x1]
    ex0, ey0, ex1, ey1 = region_box(face, EYE_POINTS, (SIZE, SIZE))
    rendered[ey0:ey1, ex0:ex1] = real[ey0:ey1, ex0:ex1]
    assert ey1 < y1, "most of the mouth box lies below the eye box"
    scores = region_scores(rendered, real, face)
    assert scores["mouth_ssim"] < 0.5 and scores["mouth_psnr"] < 12
    assert scores["eye_ssim"] == pytest.approx(1.0) and math.isinf(scores["eye_psnr"])
    assert mouth_difference(rendered, real, face) > 50
    assert mouth_difference(real, real, face) == 0


def open_mouth(gap: float) -> np.ndarray:
    """A neutral face whose inner lips (60-67) open ``gap`` px around the mouth's centre."""
    face = neutral_face(SIZE).astype(np.float64)
    centre = face[60:68].mean(axis=0)
    angles = np.linspace(np.pi, -np.pi, 8, endpoint=False)
    face[60:68] = centre + np.stack([30 * np.cos(angles), gap / 2 * np.sin(angles)], axis=1)
    return face


def test_the_mouth_interior_tells_teeth_and_cavity_from_a_smooth_fill():
    face = open_mouth(24)
    centre_row = round(float(face[60:68, 1].mean()))
    teeth_and_cavity = np.full((SIZE, SIZE, 3), 128, np.uint8)
    teeth_and_cavity[:centre_row] = 240  # teeth above, a dark cavity below
    teeth_and_cavity[centre_row:] = 20
    smooth = np.full((SIZE, SIZE, 3), 150, np.uint8)
    assert interior_spread(teeth_and_cavity, face) > 0.8
    assert interior_spread(smooth, face) == 0
    assert interior_match(teeth_and_cavity, teeth_and_cavity, face) == 1
    assert interior_match(smooth, teeth_and_cavity, face) < 0.1
    # Symmetric: teeth painted into a plain dark cavity are as wrong as a fill over teeth.
    assert interior_match(teeth_and_cavity, smooth, face) == interior_match(
        smooth, teeth_and_cavity, face)
    # Two near-uniform interiors match, whatever their small difference in spread.
    faint = smooth.copy()
    faint[:centre_row] = 155
    assert interior_match(faint, smooth, face) == 1
    scores = region_scores(smooth, teeth_and_cavity, face)
    assert scores["mouth_interior"] < 0.1


def test_a_shut_mouth_has_no_interior_to_score():
    face = open_mouth(0.5)
    image = np.full((SIZE, SIZE, 3), 128, np.uint8)
    assert math.isnan(interior_spread(image, face))
    assert math.isnan(region_scores(image, image, face)["mouth_interior"])
