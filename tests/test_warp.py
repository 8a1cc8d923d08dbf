"""The piecewise-affine warp on the landmark triangulation."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vcam.warp import (
    PiecewiseAffineWarp,
    border_points,
    double_areas,
    remap,
    to_grid_sample,
    triangulate,
)

SIZE = 256
# iBUG indices of landmarks with no other landmark within 5 px: the jaw's ends, the chin and
# a mouth corner. (Near crowded landmarks such as the nose tip, a (6, -4) px move stretches
# the triangles around it so unevenly that a dot's centroid drifts by more than a pixel from
# the landmark's image; test_every_landmark_samples_its_source_landmark covers all 68.)
ROOMY_LANDMARKS = (0, 8, 16, 48)


@pytest.fixture(scope="module")
def warp(face) -> PiecewiseAffineWarp:
    return PiecewiseAffineWarp(face[1], SIZE)


def dot_centre(image: np.ndarray) -> np.ndarray:
    """Intensity-weighted centre (x, y) of a bright dot on black."""
    weights = image.astype(np.float64).sum(axis=2)
    rows, columns = np.mgrid[: weights.shape[0], : weights.shape[1]]
    return np.array([(columns * weights).sum(), (rows * weights).sum()]) / weights.sum()


def hull_mask(points: np.ndarray, erode: int) -> np.ndarray:
    """Boolean mask of the convex hull of ``points``, eroded by ``erode`` pixels."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(points).astype(np.int32)), 1)
    return cv2.erode(mask, np.ones((2 * erode + 1, 2 * erode + 1), np.uint8)).astype(bool)


def max_difference(first: np.ndarray, second: np.ndarray) -> int:
    return int(np.abs(first.astype(int) - second.astype(int)).max())


def test_border_points_ring_the_image():
    points = border_points(SIZE)
    assert points.shape == (16, 2) and points.dtype == np.float32
    on_border = (points == 0) | (points == SIZE - 1)
    assert on_border.any(axis=1).all()
    corners = {(0.0, 0.0), (SIZE - 1.0, 0.0), (0.0, SIZE - 1.0), (SIZE - 1.0, SIZE - 1.0)}
    assert corners <= set(map(tuple, points.tolist()))
    assert len(np.unique(points, axis=0)) == len(points)


def test_triangles_tile_the_whole_image(face):
    vertices = np.concatenate([face[1], border_points(SIZE)])
    triangles = triangulate(vertices)
    areas = double_areas(vertices[triangles].astype(np.float64))
    assert (areas > 0).all()
    assert areas.sum() / 2 == pytest.approx((SIZE - 1) ** 2)


def test_identical_landmarks_return_the_source(face, warp):
    image, points = face
    warped = warp.warp(image, points)
    assert warped.shape == image.shape and warped.dtype == np.uint8
    assert max_difference(warped, image) <= 1
    inside = hull_mask(points, erode=0)
    assert max_difference(warped[inside], image[inside]) <= 1


@pytest.mark.parametrize("landmark", ROOMY_LANDMARKS)
def test_a_moved_landmark_carries_its_dot_there(face, warp, landmark):
    points = face[1]
    source = np.zeros((SIZE, SIZE, 3), np.uint8)
    centre = np.round(points[landmark] * 16).astype(int)
    cv2.circle(source, tuple(centre.tolist()), 16, (255, 255, 255), -1, cv2.LINE_AA, 4)
    np.testing.assert_allclose(dot_centre(source), points[landmark], atol=0.1)
    target = points.copy()
    target[landmark] += (6.0, -4.0)
    np.testing.assert_allclose(dot_centre(warp.warp(source, target)), target[landmark],
                               atol=1.0)


def test_every_landmark_samples_its_source_landmark(face, warp):
    points = face[1]
    # A head turn without folds: rotate by 6 degrees, scale by 1.05, shift by (3, -2) px.
    turn = cv2.getRotationMatrix2D(tuple(points.mean(axis=0).tolist()), 6, 1.05)
    target = (points @ turn[:, :2].T + turn[:, 2] + (3, -2)).astype(np.float32)
    sample = warp.sample_map(target)
    at_targets = remap(sample, target[None])[0]
    np.testing.assert_allclose(at_targets, points, atol=0.5)


def landmark_triangles_mask(warp: PiecewiseAffineWarp, points: np.ndarray,
                            erode: int) -> np.ndarray:
    """Where the triangles with only landmark corners (no border point) lie for ``points``,
    eroded by ``erode`` pixels."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    for triangle in warp.triangles[(warp.triangles < warp.num_points).all(axis=1)]:
        cv2.fillConvexPoly(mask, np.round(points[triangle] * 16).astype(np.int32), 1,
                           cv2.LINE_8, 4)
    return cv2.erode(mask, np.ones((2 * erode + 1, 2 * erode + 1), np.uint8)).astype(bool)


def test_translating_every_landmark_moves_the_interior(face, warp):
    image, points = face
    shift_x, shift_y = 5, -3
    target = points + np.float32([shift_x, shift_y])
    warped = warp.warp(image, target)
    shifted = np.roll(image, (shift_y, shift_x), axis=(0, 1))
    inside = landmark_triangles_mask(warp, target, erode=1)
    assert inside.sum() > 10000
    assert max_difference(warped[inside], shifted[inside]) <= 1
    edges = np.zeros((SIZE, SIZE), bool)
    edges[[0, -1], :] = edges[:, [0, -1]] = True
    assert max_difference(warped[edges], image[edges]) <= 1


@pytest.mark.parametrize("case", ["collapsed", "reversed", "mirrored", "noisy", "far_away",
                                  "on_the_border"])
def test_degenerate_targets_still_warp(face, warp, case):
    image, points = face
    rng = np.random.default_rng(7)
    targets = {
        "collapsed": np.full_like(points, SIZE / 2),
        "reversed": points[::-1],
        "mirrored": np.stack([SIZE - 1 - points[:, 0], points[:, 1]], axis=1),
        "noisy": points + rng.normal(0, 30, points.shape).astype(np.float32),
        "far_away": points * 1e6,
        "on_the_border": np.zeros_like(points),
    }
    sample = warp.sample_map(targets[case])
    assert sample.shape == (SIZE, SIZE, 2) and np.isfinite(sample).all()
    warped = warp.warp(image, targets[case])
    assert warped.shape == image.shape and warped.dtype == np.uint8


def test_non_finite_or_misshapen_targets_are_refused(face, warp):
    image, points = face
    broken = points.copy()
    broken[3, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        warp.warp(image, broken)
    with pytest.raises(ValueError, match="68 target points"):
        warp.warp(image, points[:60])
    with pytest.raises(ValueError, match="256x256"):
        warp.warp(image[:128], points)


def test_the_dense_map_is_what_warp_samples(face, warp):
    image, points = face
    target = points + np.random.default_rng(3).normal(0, 3, points.shape).astype(np.float32)
    sample = warp.sample_map(target)
    assert sample.dtype == np.float32
    expected = cv2.remap(image, sample, None, cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
    np.testing.assert_array_equal(warp.warp(image, target), expected)


def test_identity_map_is_the_pixel_grid(face, warp):
    sample = warp.sample_map(face[1])
    rows, columns = np.mgrid[:SIZE, :SIZE]
    np.testing.assert_allclose(sample, np.stack([columns, rows], axis=2), atol=1e-3)


@pytest.mark.parametrize("align_corners", [False, True])
def test_grid_sample_coordinates_match_remap(face, warp, align_corners):
    image, points = face
    target = points + np.float32([2.5, 1.5])
    sample = warp.sample_map(target)
    pixels = image.astype(np.float32)
    expected = remap(pixels, sample)
    grid = torch.from_numpy(to_grid_sample(sample, align_corners))[None]
    batch = torch.from_numpy(pixels).permute(2, 0, 1)[None]
    sampled = F.grid_sample(batch, grid, mode="bilinear", padding_mode="border",
                            align_corners=align_corners)[0].permute(1, 2, 0).numpy()
    assert np.abs(sampled - expected).mean() < 0.1
    assert np.abs(sampled - expected).max() < 4


def test_a_given_triangulation_is_used(face):
    image, points = face
    shared = PiecewiseAffineWarp(points, SIZE).triangles
    warp = PiecewiseAffineWarp(points, SIZE, triangles=shared[:10])
    np.testing.assert_array_equal(warp.triangles, shared[:10])
    assert max_difference(warp.warp(image, points), image) <= 1
    with pytest.raises(ValueError, match="vertex indices"):
        PiecewiseAffineWarp(points, SIZE, triangles=np.arange(8))


def test_region_aware_source_takes_the_mouth_from_the_nearest_mouth_shape():
    from calibration.sets import neutral_face
    from vcam.runtime.demo import open_mouth
    from vcam.warp import WarpGuide, mouth_region_mask

    size = 128
    closed = neutral_face(size).astype(np.float64)
    opened = closed.copy()
    open_mouth(opened, 12.0)
    # Frame 0: the target's head, mouth closed (red). Frame 1: the target's mouth shape, head
    # moved down and right (blue).
    crops = np.stack([np.full((size, size, 3), (200, 0, 0), np.uint8),
                      np.full((size, size, 3), (0, 0, 200), np.uint8)])
    landmarks = np.stack([closed, opened + 6.0])
    target = opened
    nearest = WarpGuide(crops, landmarks).image_for(target)
    regions = WarpGuide(crops, landmarks, source="regions").image_for(target)
    # Nearest over every landmark: the head's match, closed mouth and all (frame 0).
    assert (nearest[..., 0] > 190).all()
    mouth = np.round(target[62:67].mean(axis=0)).astype(int)
    brow = np.round(target[17:27].mean(axis=0)).astype(int)
    assert regions[mouth[1], mouth[0], 2] > 190 and regions[mouth[1], mouth[0], 0] < 10
    assert regions[brow[1], brow[0], 0] > 190 and regions[brow[1], brow[0], 2] < 10
    # No seam: the blend changes by a few grey levels per pixel at most.
    assert np.abs(np.diff(regions.astype(int), axis=0)).max() < 40
    mask = mouth_region_mask(target, size)
    assert mask.shape == (size, size, 1) and mask.max() <= 1.0 and mask.min() >= 0.0
    one = WarpGuide(crops[:1], landmarks[:1], source="regions")
    assert np.array_equal(one.image_for(target), WarpGuide(crops[:1], landmarks[:1])
                          .image_for(target))
    with pytest.raises(ValueError, match="source"):
        WarpGuide(crops, landmarks, source="best")


def opened(points: np.ndarray, gap: float) -> np.ndarray:
    """``points`` with the lower inner lip moved down by ``gap`` inter-ocular distances."""
    moved = np.array(points, np.float32)
    moved[[65, 66, 67], 1] += gap * np.linalg.norm(points[36] - points[45])
    return moved


def test_only_a_mouth_opening_beyond_the_source_is_painted(face):
    from vcam.warp import lip_gap, paint_region

    _, points = face
    closed = opened(points, -lip_gap(points))
    assert paint_region(closed, closed, 256) is None
    assert paint_region(opened(closed, 0.02), closed, 256) is None  # lips barely part
    wide = opened(closed, 0.3)
    region = paint_region(wide, closed, 256)
    assert region is not None and region.shape == (256, 256, 1)
    centre = np.round(wide[[62, 66]].mean(axis=0)).astype(int)
    assert region[centre[1], centre[0], 0] > 0.95
    assert region[10, 10, 0] == 0 and float(region.max()) <= 1.0
    # No hard edge: neighbouring pixels differ by little.
    assert float(np.abs(np.diff(region[..., 0], axis=1)).max()) < 0.5
    # A source whose mouth is as open needs no painting.
    assert paint_region(wide, wide, 256) is None


def test_the_painting_fades_in_as_the_mouth_opens(face):
    from vcam.warp import PAINT_FULL, PAINT_OPENING, lip_gap, paint_region, paint_strength

    assert paint_strength(PAINT_OPENING) == 0.0 and paint_strength(PAINT_FULL) == 1.0
    assert paint_strength(1.0) == 1.0 and paint_strength(-1.0) == 0.0
    openings = np.linspace(PAINT_OPENING, PAINT_FULL, 7)
    assert np.all(np.diff([paint_strength(value) for value in openings]) > 0)
    _, points = face
    closed = opened(points, -lip_gap(points))
    halfway = (PAINT_OPENING + PAINT_FULL) / 2
    peaks = {gap: float(paint_region(opened(closed, gap), closed, 256).max())
             for gap in (PAINT_OPENING + 0.002, halfway, PAINT_FULL + 0.01)}
    assert peaks[PAINT_OPENING + 0.002] < 0.1  # no pop where painting starts
    assert 0.4 < peaks[halfway] < 0.6 and peaks[PAINT_FULL + 0.01] > 0.95


def test_the_warp_is_kept_outside_the_painted_region():
    from vcam.warp import paint_where_needed

    rendered = np.full((8, 8, 3), 200, np.uint8)
    warped = np.full((8, 8, 3), 10, np.uint8)
    assert paint_where_needed(rendered, warped, None) is warped
    region = np.zeros((8, 8, 1), np.float32)
    region[2:4, 2:4] = 1.0
    region[5, 5] = 0.5
    mixed = paint_where_needed(rendered, warped, region)
    assert (mixed[2:4, 2:4] == 200).all() and mixed[0, 0, 0] == 10 and mixed[5, 5, 0] == 105


def test_the_painting_is_no_more_colourful_than_the_enrollment(face):
    from vcam.warp import WarpGuide, chroma_limit, limit_chroma

    photo, points = face
    grey_photo = np.repeat(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    assert chroma_limit(grey_photo) < 1.0 < 20.0 < chroma_limit(photo)
    red_mouth = np.zeros_like(photo)
    red_mouth[...] = (150, 40, 50)
    greyed = limit_chroma(red_mouth, 0.0)
    assert np.ptp(greyed.astype(int), axis=2).max() <= 2  # no colour left
    luma = cv2.cvtColor(red_mouth, cv2.COLOR_RGB2YCrCb)[..., 0].astype(int)
    assert np.abs(cv2.cvtColor(greyed, cv2.COLOR_RGB2YCrCb)[..., 0] - luma).max() <= 1
    assert np.abs(limit_chroma(red_mouth, 255.0).astype(int) - red_mouth).max() <= 2
    region = np.ones((*photo.shape[:2], 1), np.float32)
    for crops, coloured in ((grey_photo, False), (photo, True)):
        guide = WarpGuide(crops[None], points[None])
        painted = guide.paint(red_mouth, crops, region).astype(int)
        assert (np.ptp(painted, axis=2).max() > 60) == coloured
        assert guide.paint(red_mouth, crops, None) is crops


def test_the_painting_is_smoothed_over_the_networks_two_pixel_blocks(face):
    from vcam.warp import WarpGuide

    photo, points = face
    blocks = (np.indices(photo.shape[:2]) // 2).sum(axis=0) % 2  # a 2x2-block checkerboard
    rendered = np.repeat((60 + 120 * blocks)[..., None], 3, axis=2).astype(np.uint8)
    grey = np.repeat(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    region = np.zeros((*photo.shape[:2], 1), np.float32)
    region[20:-20, 20:-20] = 1.0
    painted = WarpGuide(grey[None], points[None]).paint(rendered, grey, region).astype(int)
    inner = painted[30:-30, 30:-30]
    assert abs(inner.mean() - 120) < 3 and inner.std() < 0.3 * rendered.std()
    assert np.array_equal(painted[:20], grey[:20])  # outside the region: the warp


def test_painting_blends_only_the_box_around_the_region_and_changes_nothing_else(face):
    from vcam.warp import lip_gap, paint_region, paint_where_needed, painted_box

    photo, points = face
    size = photo.shape[0]
    closed = opened(points, -lip_gap(points))
    region = paint_region(opened(closed, 0.3), closed, size)
    rows, columns = painted_box(region)
    assert 0 < (rows.stop - rows.start) * (columns.stop - columns.start) < size * size / 4
    rendered = np.random.default_rng(0).integers(0, 256, photo.shape, np.uint8)
    whole = region * rendered.astype(np.float32) + (1 - region) * photo.astype(np.float32)
    expected = np.clip(np.round(whole), 0, 255).astype(np.uint8)
    painted = paint_where_needed(rendered, photo, region)
    assert np.array_equal(painted, expected) and painted is not photo
    assert painted_box(np.zeros_like(region)) is None


def inside(points: np.ndarray, erode: int) -> np.ndarray:
    """Boolean mask of the inner-lip polygon (points 60-67), eroded (or grown, when
    ``erode`` is negative) by that many pixels."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    cv2.fillPoly(mask, [np.round(points[60:68]).astype(np.int32)], 1)
    kernel = np.ones((2 * abs(erode) + 1, 2 * abs(erode) + 1), np.uint8)
    return (cv2.erode(mask, kernel) if erode > 0 else cv2.dilate(mask, kernel)).astype(bool)


def test_a_cavity_is_cut_only_where_the_mouth_opens_beyond_the_source(face):
    from vcam.warp import CAVITY_SHADE, lip_gap, mouth_cavity

    photo, points = face
    closed = opened(points, -lip_gap(points))
    assert mouth_cavity(photo, closed, closed) is photo
    assert mouth_cavity(photo, opened(closed, 0.02), closed) is photo  # lips barely part
    wide = opened(closed, 0.3)
    holed = mouth_cavity(photo, wide, closed)
    assert holed.dtype == np.uint8 and holed.shape == photo.shape
    outside = ~inside(wide, erode=-2)
    assert np.array_equal(holed[outside], photo[outside])  # the lips and face are kept
    hole = holed[inside(wide, erode=2)].astype(int)
    assert np.ptp(hole, axis=0).max() == 0  # one flat fill
    lips = np.zeros((SIZE, SIZE), np.uint8)
    cv2.fillPoly(lips, [np.round(wide[48:60]).astype(np.int32)], 1)
    lip_luma = np.median(photo[lips.astype(bool) & ~inside(wide, erode=-1)].mean(axis=1))
    assert hole[0].mean() == pytest.approx(CAVITY_SHADE * lip_luma, rel=0.15)
    # The same mouth in a black-and-white photo gets a grey cavity.
    grey = np.repeat(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    assert np.ptp(mouth_cavity(grey, wide, closed)[inside(wide, erode=2)], axis=1).max() <= 1


def test_the_cavity_fades_in_with_the_painting(face):
    from vcam.warp import PAINT_FULL, PAINT_OPENING, lip_gap, mouth_cavity

    photo, points = face
    white = np.full_like(photo, 255)
    closed = opened(points, -lip_gap(points))
    depth = {}
    for gap in (PAINT_OPENING + 0.002, (PAINT_OPENING + PAINT_FULL) / 2, PAINT_FULL + 0.01):
        target = opened(closed, gap)
        x, y = np.round(target[[62, 66]].mean(axis=0)).astype(int)
        depth[gap] = 255 - float(mouth_cavity(white, target, closed)[y, x].mean())
    shallow, halfway, full = depth.values()
    assert shallow < 0.1 * full and 0.4 * full < halfway < 0.6 * full


def test_only_a_cavity_model_is_given_the_hole(face):
    from vcam.warp import WarpGuide, lip_gap

    photo, points = face
    closed = opened(points, -lip_gap(points))
    wide = opened(closed, 0.3)
    plain = WarpGuide(photo[None], closed[None])
    cavity = WarpGuide(photo[None], closed[None], cavity=True)
    warped = plain.image_for(wide)
    assert np.array_equal(cavity.image_for(wide), warped)  # the warp it shows is unchanged
    assert plain.network_image(wide, warped) is warped
    holed = cavity.network_image(wide, warped)
    mouth = inside(wide, erode=2)
    assert holed[mouth].mean() < 0.6 * warped[mouth].mean()
    assert np.array_equal(holed[~inside(wide, erode=-2)], warped[~inside(wide, erode=-2)])
    shut = cavity.image_for(closed)
    assert cavity.network_image(closed, shut) is shut


def test_a_cavity_model_fine_tunes_on_enrollment_warps_with_the_hole(face):
    import dataclasses

    from vcam.enroll import enrollment_inputs
    from vcam.images import to_tensor
    from vcam.models.config import get_config
    from vcam.warp import WarpGuide, lip_gap

    photo, points = face
    closed = opened(points, -lip_gap(points))
    landmarks = np.stack([closed, opened(closed, 0.3)])
    crops = np.stack([photo, photo])
    marks = torch.zeros(2, 3, SIZE, SIZE)
    warp_config = dataclasses.replace(get_config("tiny"), generator="warp")
    cavity_config = dataclasses.replace(warp_config, mouth_input="cavity")
    plain = enrollment_inputs(warp_config, crops, landmarks, marks)[:, 3:]
    holed = enrollment_inputs(cavity_config, crops, landmarks, marks)[:, 3:]
    assert torch.equal(plain[0], holed[0])  # the closed mouth, warped from the open one
    guide = WarpGuide(crops, landmarks, cavity=True)
    expected = guide.network_image(landmarks[1], guide.image_for(landmarks[1], exclude=1), 1)
    assert torch.equal(holed[1], to_tensor(expected))
    assert float(holed[1].mean()) < float(plain[1].mean())
