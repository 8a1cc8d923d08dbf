"""Piecewise-affine warping of a face image on its landmark triangulation.

One implementation shared by the evaluation's warping baseline and the warp-guided generator.
A :class:`PiecewiseAffineWarp` is built once from the *source* image's 68 landmarks: they are
joined with fixed points on the image border and triangulated (Delaunay over the source
points), and that triangulation is kept for every target frame, so a triangle's neighbours
never change from frame to frame and the per-frame cost is a rasterisation and one remap.

For a target pose the warp is a dense backward map: every output pixel finds the target
triangle it lies in, and that triangle's affine (target -> source) gives the source position
to sample. Coordinates are pixel coordinates with pixel centres at integers (the convention of
the landmark detectors and of ``cv2.remap``); the border points sit on the centres of the
outermost pixels, so the triangles cover every pixel while the border stays fixed.

Folds: when target points cross each other some target triangles turn over (their orientation
differs from the source's). Such triangles are drawn first and every well-oriented triangle is
drawn over them, so a pixel takes a well-oriented triangle's affine wherever one covers it.
Triangles that collapse to (almost) no area are skipped; a pixel no triangle covers takes the
affine of the nearest covered pixel, or the identity when nothing is covered at all.
"""

from __future__ import annotations

from functools import cached_property

import cv2
import numpy as np
from scipy import ndimage
from scipy.spatial import Delaunay

from calibration import ibug

# Border points per image side: corners plus BORDER_DIVISIONS - 1 points along every edge.
BORDER_DIVISIONS = 4
# Sub-pixel precision of the triangle rasterisation: coordinates are multiplied by 2**SHIFT.
SHIFT = 4
# A target triangle whose doubled area (px^2) is below this is treated as collapsed.
MIN_DOUBLE_AREA = 1e-2
# Target coordinates are clipped to this many image sides beyond the border, which keeps the
# fixed-point rasterisation far from integer overflow whatever the input.
MAX_REACH = 8.0
# Row of the coefficient table that holds the identity (for pixels no triangle covers).
IDENTITY = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])


def border_points(size: int, divisions: int = BORDER_DIVISIONS) -> np.ndarray:
    """Fixed points on the border of a ``size`` x ``size`` image, float32 (4 * divisions, 2).

    The corners and ``divisions - 1`` evenly spaced points on every edge, all on the centres
    of the outermost pixels (coordinates 0 and ``size - 1``), clockwise from the top left.
    """
    if size < 2 or divisions < 1:
        raise ValueError(f"need size >= 2 and divisions >= 1, got {size} and {divisions}")
    steps = np.linspace(0.0, size - 1.0, divisions + 1)[:-1]
    last = np.full_like(steps, size - 1.0)
    first = np.zeros_like(steps)
    top = np.stack([steps, first], axis=1)
    right = np.stack([last, steps], axis=1)
    bottom = np.stack([last - steps, last], axis=1)
    left = np.stack([first, last - steps], axis=1)
    return np.concatenate([top, right, bottom, left]).astype(np.float32)


def triangulate(points: np.ndarray) -> np.ndarray:
    """Delaunay triangles of ``points`` (N, 2) as vertex indices, int32 (T, 3).

    Every triangle is ordered so that its doubled signed area (see :func:`double_areas`) is
    positive, and triangles without area are left out. Of points that coincide exactly only
    one is used.
    """
    vertices = np.asarray(points, np.float64)
    triangles = Delaunay(vertices).simplices.astype(np.int32)
    areas = double_areas(vertices[triangles])
    triangles[areas < 0] = triangles[areas < 0][:, ::-1]
    return np.ascontiguousarray(triangles[np.abs(areas) > MIN_DOUBLE_AREA])


def double_areas(corners: np.ndarray) -> np.ndarray:
    """Twice the signed area of each triangle in ``corners`` (T, 3, 2)."""
    first = corners[:, 1] - corners[:, 0]
    second = corners[:, 2] - corners[:, 0]
    return first[:, 0] * second[:, 1] - first[:, 1] * second[:, 0]


def triangle_affines(targets: np.ndarray, sources: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The affine of every triangle that maps its target corners onto its source corners.

    ``targets`` and ``sources`` are (T, 3, 2). Returns the coefficients (T, 6) as
    ``(a, b, c, d, e, f)`` with ``source = (a x + b y + c, d x + e y + f)``, and the doubled
    signed target areas (T,). A collapsed target triangle gets the identity.
    """
    target_edges = np.stack([targets[:, 1] - targets[:, 0], targets[:, 2] - targets[:, 0]], 2)
    source_edges = np.stack([sources[:, 1] - sources[:, 0], sources[:, 2] - sources[:, 0]], 2)
    areas = double_areas(targets)
    usable = np.abs(areas) > MIN_DOUBLE_AREA
    safe_areas = np.where(usable, areas, 1.0)
    # Inverse of the 2x2 matrix whose columns are the target edges.
    inverse = np.stack([
        np.stack([target_edges[:, 1, 1], -target_edges[:, 0, 1]], 1),
        np.stack([-target_edges[:, 1, 0], target_edges[:, 0, 0]], 1),
    ], 1) / safe_areas[:, None, None]
    linear = source_edges @ inverse
    offset = sources[:, 0] - np.einsum("tij,tj->ti", linear, targets[:, 0])
    coefficients = np.concatenate([linear, offset[:, :, None]], axis=2).reshape(-1, 6)
    coefficients[~usable] = IDENTITY
    return coefficients, areas


def drawing_order(target_areas: np.ndarray, source_areas: np.ndarray) -> np.ndarray:
    """Indices of the triangles to draw, in order: turned-over triangles first, then the
    well-oriented ones from the smallest to the largest (a shared edge pixel goes to the last
    drawn, the better conditioned neighbour); collapsed triangles are left out."""
    usable = np.abs(target_areas) > MIN_DOUBLE_AREA
    turned = usable & (np.sign(target_areas) != np.sign(source_areas))
    upright = usable & ~turned
    by_size = np.argsort(np.abs(target_areas), kind="stable")
    return np.concatenate([np.flatnonzero(turned), by_size[upright[by_size]]])


def fill_uncovered(index_map: np.ndarray, fallback: int) -> np.ndarray:
    """Give every uncovered pixel (index < 0) the index of the nearest covered pixel, or
    ``fallback`` when no pixel is covered."""
    uncovered = index_map < 0
    if not uncovered.any():
        return index_map
    if uncovered.all():
        index_map[:] = fallback
        return index_map
    rows, columns = ndimage.distance_transform_edt(uncovered, return_distances=False,
                                                   return_indices=True)
    return index_map[rows, columns]


class PiecewiseAffineWarp:
    """Warps one source image so that its landmarks move to target landmarks.

    Built once per source (e.g. an avatar's enrollment crop) from its landmarks, float (N, 2)
    pixel coordinates of the square ``size`` x ``size`` image; the triangulation of those
    points and the border points is computed here (or taken from ``triangles``, vertex
    indices into the landmarks followed by :func:`border_points`) and reused for every target.
    """

    def __init__(self, source_points: np.ndarray, size: int,
                 triangles: np.ndarray | None = None,
                 border_divisions: int = BORDER_DIVISIONS) -> None:
        points = check_points(source_points)
        self.size = size
        self.num_points = len(points)
        self.border = border_points(size, border_divisions).astype(np.float64)
        self.source_vertices = np.concatenate([points, self.border])
        self.triangles = (triangulate(self.source_vertices) if triangles is None
                          else np.asarray(triangles, np.int32))
        if self.triangles.ndim != 2 or self.triangles.shape[1] != 3:
            raise ValueError(f"triangles must be (T, 3) vertex indices, got "
                             f"{self.triangles.shape}")
        self.source_corners = self.source_vertices[self.triangles]
        self.source_areas = double_areas(self.source_corners)
        columns, rows = np.meshgrid(np.arange(size, dtype=np.float32),
                                    np.arange(size, dtype=np.float32))
        self._columns, self._rows = columns, rows

    def target_vertices(self, target_points: np.ndarray) -> np.ndarray:
        """The target landmarks (clipped to a sane range) followed by the fixed border."""
        points = check_points(target_points)
        if len(points) != self.num_points:
            raise ValueError(f"expected {self.num_points} target points, got {len(points)}")
        reach = MAX_REACH * self.size
        return np.concatenate([np.clip(points, -reach, self.size + reach), self.border])

    def triangle_index_map(self, target_corners: np.ndarray,
                           target_areas: np.ndarray) -> np.ndarray:
        """int32 (size, size): the triangle each output pixel takes its affine from; the
        identity row (index T) where no triangle is usable."""
        index_map = np.full((self.size, self.size), -1, np.int32)
        fixed = np.round(target_corners * (1 << SHIFT)).astype(np.int32)
        for triangle in drawing_order(target_areas, self.source_areas):
            cv2.fillConvexPoly(index_map, fixed[triangle], int(triangle), cv2.LINE_8, SHIFT)
        return fill_uncovered(index_map, len(self.triangles))

    def sample_map(self, target_points: np.ndarray) -> np.ndarray:
        """The dense backward map, float32 (size, size, 2): for every output pixel the (x, y)
        source pixel to sample, ready for ``cv2.remap`` (see :func:`to_grid_sample` for
        ``torch.nn.functional.grid_sample``)."""
        target_corners = self.target_vertices(target_points)[self.triangles]
        coefficients, target_areas = triangle_affines(target_corners, self.source_corners)
        table = np.concatenate([coefficients, IDENTITY[None]]).astype(np.float32)
        # np.take is several times faster than fancy indexing for this gather.
        per_pixel = np.take(table, self.triangle_index_map(target_corners, target_areas), 0)
        columns, rows = self._columns, self._rows
        sample = np.empty((self.size, self.size, 2), np.float32)
        sample[..., 0] = per_pixel[..., 0] * columns + per_pixel[..., 1] * rows + per_pixel[..., 2]
        sample[..., 1] = per_pixel[..., 3] * columns + per_pixel[..., 4] * rows + per_pixel[..., 5]
        return sample

    def warp(self, source_image: np.ndarray, target_points: np.ndarray) -> np.ndarray:
        """``source_image`` (size, size[, C], any dtype ``cv2.remap`` takes) warped so that
        its landmarks land on ``target_points``; bilinear, border pixels repeat outside."""
        if source_image.shape[:2] != (self.size, self.size):
            raise ValueError(f"expected a {self.size}x{self.size} image, got "
                             f"{source_image.shape}")
        return remap(source_image, self.sample_map(target_points))


def remap(image: np.ndarray, sample_map: np.ndarray) -> np.ndarray:
    """Sample ``image`` at the (x, y) positions of ``sample_map`` (H, W, 2), bilinearly."""
    return cv2.remap(image, sample_map, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def to_grid_sample(sample_map: np.ndarray, align_corners: bool = False) -> np.ndarray:
    """A pixel sample map (H, W, 2) in the normalised [-1, 1] coordinates of
    ``torch.nn.functional.grid_sample`` with the same ``align_corners`` (add a batch axis
    with ``torch.from_numpy(grid)[None]``)."""
    height, width = sample_map.shape[:2]
    extent = np.array([width, height], np.float32)
    if align_corners:
        return (2 * sample_map / (extent - 1) - 1).astype(np.float32)
    return ((2 * sample_map + 1) / extent - 1).astype(np.float32)


def check_points(points: np.ndarray) -> np.ndarray:
    """Landmarks as float64 (N, 2); raises ValueError for another shape or a non-finite value."""
    array = np.asarray(points, np.float64)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"expected points of shape (N, 2), got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("points must be finite")
    return array


def nearest_frame(landmarks: np.ndarray, target_points: np.ndarray,
                  exclude: int | None = None) -> int:
    """Index of the landmark set of ``landmarks`` (T, 68, 2) closest to ``target_points``
    (mean absolute difference of the points), never ``exclude`` unless it is the only one:
    the enrollment frame the warp starts from."""
    target = np.asarray(target_points, np.float32)
    distances = np.abs(np.asarray(landmarks, np.float32) - target).mean(axis=(1, 2))
    if exclude is not None and len(distances) > 1:
        distances[exclude] = np.inf
    return int(np.argmin(distances))


# iBUG 300-W indices: the points that move with the head but not with the mouth, the mouth,
# and the outer lip (whose hull, grown, is the mouth region of a region-aware warp).
HEAD_POINTS = slice(0, 48)
MOUTH_POINTS = slice(48, 68)
OUTER_LIP = slice(48, 60)
# The mouth region: the outer lip's hull grown about its centre by this factor, its edge
# feathered over this fraction of the mouth's width (no seam where the two warps meet).
MOUTH_REGION_GROWTH = 1.6
MOUTH_REGION_FEATHER = 0.25
# How the warp source is chosen: "nearest" (one frame, nearest by all landmarks) or
# "regions" (the mouth from the frame nearest in mouth shape, the rest from the frame
# nearest in head pose, blended).
SOURCE_CHOICES = ("nearest", "regions")
# The choice the avatar uses when it renders (and `vcam eval` by default). Measured with the
# shipped model on its validation identities (vcam/weights/MODEL_CARD.md): "regions" is the
# same as "nearest" at K = 1 and better at K = 8 on every subset (mouth-region PSNR +0.4 dB on
# all frames, +1.8 dB where the mouth opens beyond the enrollment).
RUNTIME_WARP_SOURCE = "regions"


def mouth_shape(points: np.ndarray) -> np.ndarray:
    """The mouth's points (48-67) about their centre, over the outer eye corners' distance:
    the mouth's opening and width, whatever the head's position and scale."""
    points = np.asarray(points, np.float64)
    mouth = points[..., MOUTH_POINTS, :]
    scale = np.linalg.norm(points[..., 36, :] - points[..., 45, :], axis=-1)
    centred = mouth - mouth.mean(axis=-2, keepdims=True)
    return centred / np.maximum(scale, 1e-6)[..., None, None]


def nearest_by_mouth(landmarks: np.ndarray, target_points: np.ndarray,
                     exclude: int | None = None) -> int:
    """Index of the landmark set whose :func:`mouth_shape` is closest to the target's."""
    distances = np.abs(mouth_shape(landmarks) - mouth_shape(target_points)).mean(axis=(1, 2))
    if exclude is not None and len(distances) > 1:
        distances[exclude] = np.inf
    return int(np.argmin(distances))


def mouth_region_mask(target_points: np.ndarray, size: int) -> np.ndarray:
    """float32 (size, size, 1) in [0, 1]: 1 inside the target's mouth region, falling
    smoothly to 0 outside it."""
    lip = np.asarray(target_points, np.float64)[OUTER_LIP]
    centre = lip.mean(axis=0)
    grown = centre + MOUTH_REGION_GROWTH * (lip - centre)
    mask = np.zeros((size, size), np.float32)
    hull = cv2.convexHull(np.round(grown).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1.0, cv2.LINE_AA)
    width = float(np.ptp(lip[:, 0]))
    sigma = max(MOUTH_REGION_FEATHER * width / 2, 1.0)
    return cv2.GaussianBlur(mask, (0, 0), sigma)[..., None]


# Where the warp cannot be right: the target's inner mouth when its lips part this much more
# than the mouth's source frame's (inner-lip gap over the inter-ocular distance; the paint
# region of the snapshot-like training episodes, vcam.train.snapshot.PAINT_STEP).
PAINT_OPENING = 0.03
# The painting fades in as the mouth opens further: none at PAINT_OPENING beyond the source,
# all of it from PAINT_FULL on. No pop where the rule switches on, and where the lips part only
# a little more than the source's, a mix of the warp's stretched lips and the painting.
# Chosen on training identities (both evaluation protocols, K = 1): the ramp 0.03-0.09 gave
# the painted frames' mouth +0.16 to +0.19 dB over the warp where a hard switch gave -0.01.
PAINT_FULL = 0.09
# The paint region grows by this fraction of the mouth's width, then is feathered by it.
PAINT_GROWTH = 0.12
# The dark hole :func:`mouth_cavity` cuts into a network's warp: this fraction of the lips'
# colour (a cavity in shadow, tinted like the person's mouth, grey in a black-and-white photo).
CAVITY_SHADE = 0.35
# The painting's chroma is capped at this percentile of the enrollment photos' (the network
# learnt red mouths from colour video and paints them into black-and-white photos too).
CHROMA_PERCENTILE = 99
# The network paints at half resolution (its output is a 2x2 pixel shuffle), so the edge of a
# painted cavity shows 2-pixel steps; its painting is smoothed by a Gaussian of this sigma
# (pixels) before it is blended in. Measured on the shipped model, K = 1, `first`, frames where
# the mouth opens beyond the snapshot's: mouth PSNR +0.02 dB, SSIM +0.001 and opening error
# 0.120 -> 0.118 on 40 clips of training identities (41 frames); on the validation ones (56
# frames) +0.08 dB, +0.003 and 0.015 -> 0.019. Sigma 0.7 and 1.4: the same within 0.01 dB.
PAINT_SMOOTHING = 1.0


def lip_gap(points: np.ndarray) -> np.ndarray | float:
    """Inner-lip gap (points 67-65 below 61-63) over the inter-ocular distance (36-45), for
    one landmark set (68, 2) or any stack of them (..., 68, 2); about 0 for a closed mouth."""
    points = np.asarray(points, np.float64)
    gap = (points[..., ibug.LOWER_INNER_LIP, 1] - points[..., ibug.UPPER_INNER_LIP, 1]).mean(-1)
    right, left = ibug.OUTER_EYE_CORNERS
    eyes = np.linalg.norm(points[..., right, :] - points[..., left, :], axis=-1)
    ratio = gap / np.maximum(eyes, 1e-6)
    return float(ratio) if np.ndim(ratio) == 0 else ratio


def paint_strength(opening: float) -> float:
    """How much of the painting shows (0 to 1) when the target's lips part ``opening``
    (inner-lip gap over the inter-ocular distance) more than the source's."""
    return float(np.clip((opening - PAINT_OPENING) / (PAINT_FULL - PAINT_OPENING), 0.0, 1.0))


def paint_region(target_points: np.ndarray, source_points: np.ndarray,
                 size: int) -> np.ndarray | None:
    """float32 (size, size, 1) in [0, 1]: the target's inner mouth, grown and feathered,
    when it opens beyond the source's by more than PAINT_OPENING (None otherwise), scaled by
    :func:`paint_strength`: the only place a warp-guided avatar shows its painting instead of
    the warp."""
    strength = paint_strength(lip_gap(target_points) - lip_gap(source_points))
    if strength <= 0.0:
        return None
    inner = np.asarray(target_points, np.float64)[ibug.INNER_LIP]
    margin = max(PAINT_GROWTH * float(np.ptp(inner[:, 0])), 1.0)
    mask = np.zeros((size, size), np.float32)
    cv2.fillPoly(mask, [np.round(inner).astype(np.int32)], 1.0, cv2.LINE_AA)
    grown = cv2.dilate(mask, cv2.getStructuringElement(
        cv2.MORPH_ELLIPSE, (2 * int(margin) + 1, 2 * int(margin) + 1)))
    return strength * cv2.GaussianBlur(grown, (0, 0), margin / 2)[..., None]


def mouth_cavity(warped: np.ndarray, target_points: np.ndarray,
                 source_points: np.ndarray) -> np.ndarray:
    """``warped`` (RGB uint8, S x S) with a dark hole where the target's mouth opens beyond
    the source's: the inner-lip polygon (points 60-67) filled with CAVITY_SHADE times the
    lips' median colour, blended in by :func:`paint_strength` (the warp itself where the mouth
    opens no further than the source's). The stretched closed lips a warp puts there would
    tell the network to draw lips; the hole asks it to paint the inside of a mouth. Only the
    box around the mouth is worked on (this runs for every painted frame)."""
    strength = paint_strength(lip_gap(target_points) - lip_gap(source_points))
    if strength <= 0.0:
        return warped
    points = np.round(np.asarray(target_points, np.float64)).astype(np.int32)
    box = mouth_box(points, warped.shape[0])
    if box is None:
        return warped
    rows, columns = box
    corner = np.array([columns.start, rows.start], np.int32)
    inner = np.zeros((rows.stop - rows.start, columns.stop - columns.start), np.float32)
    cv2.fillPoly(inner, [points[ibug.INNER_LIP] - corner], 1.0, cv2.LINE_AA)
    outer = np.zeros(inner.shape, np.uint8)
    cv2.fillPoly(outer, [points[OUTER_LIP] - corner], 1)
    lips = warped[box][(outer > 0) & (inner < 0.5)]
    colour = np.median(lips if len(lips) else warped.reshape(-1, 3), axis=0)
    weight = strength * inner[..., None]
    holed = warped.copy()
    holed[box] = np.clip(np.round((1 - weight) * warped[box] + weight * (CAVITY_SHADE * colour)),
                         0, 255).astype(np.uint8)
    return holed


def mouth_box(points: np.ndarray, size: int) -> tuple[slice, slice] | None:
    """The rows and columns of a ``size`` px image around the mouth points (48-67) of integer
    ``points``, with room for anti-aliased edges; None when the mouth is off the image."""
    x, y, width, height = cv2.boundingRect(points[OUTER_LIP.start:ibug.INNER_LIP.stop])
    pad = 2
    rows = slice(max(y - pad, 0), min(y + height + pad, size))
    columns = slice(max(x - pad, 0), min(x + width + pad, size))
    if rows.start >= rows.stop or columns.start >= columns.stop:
        return None
    return rows, columns


def chroma_limit(photos: np.ndarray) -> float:
    """How colourful the enrollment photos (..., S, S, 3) RGB uint8 are at most: the 99th
    percentile of their chroma (distance from grey in the YCrCb plane); about 0 for a
    black-and-white photo."""
    pixels = np.asarray(photos, np.uint8).reshape(-1, 1, 3)
    chroma = cv2.cvtColor(pixels, cv2.COLOR_RGB2YCrCb)[..., 1:].astype(np.float32) - 128
    return float(np.percentile(np.hypot(chroma[..., 0], chroma[..., 1]), CHROMA_PERCENTILE))


def limit_chroma(image: np.ndarray, limit: float) -> np.ndarray:
    """``image`` (RGB uint8) with its chroma scaled down wherever it exceeds ``limit``,
    brightness kept: a painting no more colourful than the photos it stands in for."""
    converted = cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    chroma = converted[..., 1:] - 128
    magnitude = np.hypot(chroma[..., 0], chroma[..., 1])
    scale = np.minimum(1.0, limit / np.maximum(magnitude, 1e-6))
    converted[..., 1:] = 128 + chroma * scale[..., None]
    limited = np.clip(np.round(converted), 0, 255).astype(np.uint8)
    return cv2.cvtColor(limited, cv2.COLOR_YCrCb2RGB)


def painted_box(region: np.ndarray) -> tuple[slice, slice] | None:
    """The rows and columns that hold every pixel of ``region`` above 0 (None: no pixel)."""
    rows = np.flatnonzero(region.any(axis=(1, 2)))
    if rows.size == 0:
        return None
    columns = np.flatnonzero(region.any(axis=(0, 2)))
    return slice(rows[0], rows[-1] + 1), slice(columns[0], columns[-1] + 1)


def paint_where_needed(rendered: np.ndarray, warped: np.ndarray, region: np.ndarray | None,
                       adjust=lambda painting: painting) -> np.ndarray:
    """The warp, with the rendered pixels inside ``region`` (the warp alone when None):
    RGB uint8 (S, S, 3). Only the box around the region is blended (and passed through
    ``adjust``, e.g. :func:`limit_chroma`); the rest is the warp's pixels, copied."""
    box = None if region is None else painted_box(region)
    if box is None:
        return warped
    weight = region[box]
    painting = adjust(rendered[box]).astype(np.float32)
    mixed = weight * painting + (1 - weight) * warped[box].astype(np.float32)
    result = warped.copy()
    result[box] = np.clip(np.round(mixed), 0, 255).astype(np.uint8)
    return result


class WarpGuide:
    """The warp-guided generator's second input: an enrollment frame warped to the target.

    Built from one person's enrollment crops (T, S, S, 3) and their landmarks (T, 68, 2).
    ``source="nearest"``: for each target it warps the enrollment frame whose landmarks are
    closest (mean absolute difference), so a few-shot avatar warps from its most similar pose.
    ``source="regions"``: the mouth region comes from the frame nearest in mouth shape
    (:func:`nearest_by_mouth`), the rest from the frame nearest in head pose (points 0-47),
    both warped to the target and blended with a feathered mask (:func:`mouth_region_mask`).
    ``cavity``: the network's copy of the warp has a dark hole where the mouth opens beyond
    its source (:meth:`network_image`, for models with ``mouth_input="cavity"``).
    """

    def __init__(self, crops: np.ndarray, landmarks: np.ndarray, source: str = "nearest",
                 cavity: bool = False) -> None:
        if len(crops) != len(landmarks) or len(crops) == 0:
            raise ValueError("need as many enrollment crops as landmark sets, at least one")
        if source not in SOURCE_CHOICES:
            raise ValueError(f"source must be one of {SOURCE_CHOICES}, got {source!r}")
        self.crops = crops
        self.landmarks = np.asarray(landmarks, np.float32)
        self.source = source
        self.cavity = cavity
        self._warps: dict[int, PiecewiseAffineWarp] = {}

    @cached_property
    def chroma_cap(self) -> float:
        """The enrollment's :func:`chroma_limit`, worked out when a painting first needs it."""
        return chroma_limit(self.crops)

    def warp_from(self, index: int) -> PiecewiseAffineWarp:
        """The warp of enrollment frame ``index``, triangulated on first use."""
        if index not in self._warps:
            self._warps[index] = PiecewiseAffineWarp(self.landmarks[index], self.crops.shape[1])
        return self._warps[index]

    def nearest(self, target_points: np.ndarray, exclude: int | None = None) -> int:
        """Index of the enrollment frame closest to the target (never ``exclude``, unless
        it is the only one)."""
        return nearest_frame(self.landmarks, target_points, exclude)

    def warped(self, index: int, target_points: np.ndarray) -> np.ndarray:
        return self.warp_from(index).warp(self.crops[index], target_points)

    def mouth_source(self, target_points: np.ndarray, exclude: int | None = None) -> int:
        """The enrollment frame the target's mouth is warped from (as :meth:`image_for`)."""
        if self.source == "nearest":
            return self.nearest(target_points, exclude)
        return nearest_by_mouth(self.landmarks, target_points, exclude)

    def network_image(self, target_points: np.ndarray, warped: np.ndarray,
                      exclude: int | None = None) -> np.ndarray:
        """What the network is given of ``warped`` (:meth:`image_for` of the same target):
        the warp itself, or with ``cavity`` the warp with :func:`mouth_cavity` cut in."""
        if not self.cavity:
            return warped
        source = self.landmarks[self.mouth_source(target_points, exclude)]
        return mouth_cavity(warped, target_points, source)

    def paint_region(self, target_points: np.ndarray) -> np.ndarray | None:
        """Where the warp cannot show the target (see :func:`paint_region`)."""
        source = self.landmarks[self.mouth_source(target_points)]
        return paint_region(target_points, source, self.crops.shape[1])

    def paint(self, rendered: np.ndarray, warped: np.ndarray,
              region: np.ndarray | None) -> np.ndarray:
        """The warp with the network's painting inside ``region`` (see
        :func:`paint_where_needed`), the painting smoothed (:data:`PAINT_SMOOTHING`) and no
        more colourful than the enrollment."""
        return paint_where_needed(rendered, warped, region, self.finish_painting)

    def finish_painting(self, painting: np.ndarray) -> np.ndarray:
        """The network's painting (RGB uint8) as it is blended in: smoothed over its 2x2
        blocks and no more colourful than the enrollment."""
        smooth = cv2.GaussianBlur(painting, (0, 0), PAINT_SMOOTHING)
        return limit_chroma(smooth, self.chroma_cap)

    def image_for(self, target_points: np.ndarray, exclude: int | None = None) -> np.ndarray:
        """The enrollment frame(s) chosen for the target, warped to ``target_points``: RGB
        uint8 (S, S, 3)."""
        if self.source == "nearest":
            return self.warped(self.nearest(target_points, exclude), target_points)
        head = nearest_frame(self.landmarks[:, HEAD_POINTS],
                             np.asarray(target_points)[HEAD_POINTS], exclude)
        mouth = nearest_by_mouth(self.landmarks, target_points, exclude)
        base = self.warped(head, target_points)
        if mouth == head:
            return base
        mask = mouth_region_mask(target_points, self.crops.shape[1])
        blended = mask * self.warped(mouth, target_points) + (1 - mask) * base
        return np.clip(np.round(blended), 0, 255).astype(np.uint8)
