"""Calibration sets: landmark images that cover the head poses and expressions a call shows.

A set is built from one neutral 68-point face (iBUG 300-W order, crop pixel coordinates)
moved through a sweep of head poses and expressions, optionally mixed with landmarks taken
from preprocessed clips. Poses are 2-D approximations good enough for calibration: yaw
compresses the face horizontally about its centre (and slides the nose, which stands out of
the face plane, towards the turn), pitch does the same vertically, roll rotates, and a shift
and scale move the whole face. Expressions open the mouth, close the eyes and raise the brows.

This package imports neither ``vcam`` nor ``engines``; the caller injects the rasteriser
(``vcam.landmarks.raster.rasterise``) that turns 68 points into an RGB uint8 image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from calibration.ibug import (
    BROWS,
    INNER_LIP,
    JAW,
    LEFT_EYE,
    LEFT_EYE_CORNERS,
    LOWER_LIP,
    NOSE_BASE,
    NOSE_BRIDGE,
    NOSE_TIP,
    NUM_LANDMARKS,
    OUTER_LIP,
    RIGHT_EYE,
    RIGHT_EYE_CORNERS,
    UPPER_LIP,
)

# (points, size) -> RGB uint8 (size, size, 3) landmark image.
Rasteriser = Callable[[np.ndarray, int], np.ndarray]

# The jaw points around the chin that an open mouth drops.
CHIN_CURVE = np.arange(5, 12)
# Eyelid points of each eye (iBUG): upper 37, 38 / 43, 44; lower 40, 41 / 46, 47.
EYELIDS = np.array([37, 38, 40, 41, 43, 44, 46, 47])
# Each eye's corner points, paired with the lids above: the lids collapse onto their line.
EYE_CORNERS = np.array([RIGHT_EYE_CORNERS] * 4 + [LEFT_EYE_CORNERS] * 4)

# How far each point stands out of the face plane, in face widths (nose tip highest).
DEPTH_BY_GROUP = (
    (JAW, -0.25), (BROWS, 0.05), (NOSE_BRIDGE, 0.15), (NOSE_BASE, 0.2),
    (RIGHT_EYE, 0.0), (LEFT_EYE, 0.0), (OUTER_LIP, 0.1), (INNER_LIP, 0.1),
)
NOSE_TIP_DEPTH = 0.3
# Neutral face width as a fraction of the crop (matches an alignment margin of about 1.8).
NEUTRAL_FACE_WIDTH = 0.5


@dataclass(frozen=True)
class HeadPose:
    """A head pose: angles in degrees, shift as a fraction of the crop side, scale factor."""

    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    shift_x: float = 0.0
    shift_y: float = 0.0
    scale: float = 1.0


@dataclass(frozen=True)
class Expression:
    """Expression strengths, each 0 (neutral) to 1 (mouth wide open, eyes shut, brows up)."""

    mouth_open: float = 0.0
    blink: float = 0.0
    brow_raise: float = 0.0


@dataclass(frozen=True)
class SweepRanges:
    """The largest pose and expression a random calibration sample may take."""

    max_yaw: float = 35.0
    max_pitch: float = 20.0
    max_roll: float = 15.0
    max_shift: float = 0.05
    min_scale: float = 0.9
    max_scale: float = 1.1
    max_mouth_open: float = 1.0
    max_blink: float = 1.0
    max_brow_raise: float = 1.0


@dataclass(frozen=True)
class CalibrationSetSpec:
    """What to build: ``count`` images of ``size`` px from the sweep, seeded; and, when clip
    landmarks are given, ``clip_count`` more sampled from them."""

    size: int
    count: int = 64
    seed: int = 0
    ranges: SweepRanges = SweepRanges()
    clip_count: int = 0

    def __post_init__(self) -> None:
        if self.size <= 0 or self.count < 0 or self.clip_count < 0:
            raise ValueError("size must be positive, count and clip_count non-negative")


def neutral_face(size: int) -> np.ndarray:
    """A synthetic frontal neutral face, (68, 2) float32 crop pixels, for when no real one is
    at hand (tests, benchmarks). Proportions follow a typical aligned face crop."""
    unit = np.concatenate([
        _jaw(), _brow(-1), _brow(1), _nose_bridge(), _nose_base(),
        _ellipse((-0.2, -0.15), (0.1, 0.035), _EYE_ANGLES),
        _ellipse((0.2, -0.15), (0.1, 0.035), _EYE_ANGLES),
        _ellipse((0.0, 0.3), (0.2, 0.07), _OUTER_LIP_ANGLES),
        _ellipse((0.0, 0.3), (0.14, 0.015), _INNER_LIP_ANGLES),
    ])
    return (size * (0.5 + NEUTRAL_FACE_WIDTH * unit)).astype(np.float32)


# iBUG order runs clockwise in the image from the left corner: top edge first, then bottom.
_EYE_ANGLES = np.concatenate([np.linspace(np.pi, 0, 4), np.linspace(0, -np.pi, 4)[1:-1]])
_OUTER_LIP_ANGLES = np.concatenate([np.linspace(np.pi, 0, 7), np.linspace(0, -np.pi, 7)[1:-1]])
_INNER_LIP_ANGLES = np.concatenate([np.linspace(np.pi, 0, 5), np.linspace(0, -np.pi, 5)[1:-1]])


def _ellipse(centre: tuple[float, float], radii: tuple[float, float],
             angles: np.ndarray) -> np.ndarray:
    """Points on an ellipse, angle 0 to the right and positive angles upwards (image y down)."""
    return np.stack([centre[0] + radii[0] * np.cos(angles),
                     centre[1] - radii[1] * np.sin(angles)], axis=1)


def _jaw() -> np.ndarray:
    """17 jaw points from the right ear (image left) round the chin to the left ear."""
    t = np.linspace(0.0, np.pi, 17)
    cos_t = np.cos(t)
    x = -0.5 * np.sign(cos_t) * np.abs(cos_t) ** 0.8
    return np.stack([x, -0.12 + 0.62 * np.sin(t)], axis=1)


def _brow(side: int) -> np.ndarray:
    """Five brow points on a shallow arch; side -1 is image left (the subject's right)."""
    x = np.linspace(0.08, 0.4, 5) if side > 0 else np.linspace(-0.4, -0.08, 5)
    arch = np.sin(np.linspace(0.15, np.pi - 0.15, 5)) * 0.05
    return np.stack([x, -0.27 - arch], axis=1)


def _nose_bridge() -> np.ndarray:
    return np.stack([np.zeros(4), np.linspace(-0.15, 0.06, 4)], axis=1)


def _nose_base() -> np.ndarray:
    x = np.linspace(-0.09, 0.09, 5)
    return np.stack([x, 0.12 + 0.02 * (1 - np.abs(x) / 0.09)], axis=1)


def point_depths() -> np.ndarray:
    """Out-of-plane depth of each of the 68 points, in face widths (used for yaw and pitch)."""
    depth = np.zeros(NUM_LANDMARKS)
    for group, value in DEPTH_BY_GROUP:
        depth[group] = value
    depth[NOSE_TIP] = NOSE_TIP_DEPTH
    return depth


def apply_expression(points: np.ndarray, expression: Expression) -> np.ndarray:
    """A copy of a frontal face with the expression applied (before any pose)."""
    moved = np.asarray(points, np.float64).copy()
    width = _face_width(moved)
    drop = expression.mouth_open * 0.15 * width
    moved[LOWER_LIP, 1] += drop * _mouth_profile(moved, LOWER_LIP)
    moved[UPPER_LIP, 1] -= 0.15 * drop * _mouth_profile(moved, UPPER_LIP)
    moved[CHIN_CURVE, 1] += 0.8 * drop * np.sin(np.linspace(0.3, np.pi - 0.3, len(CHIN_CURVE)))
    corners = moved[EYE_CORNERS].mean(axis=1)
    moved[EYELIDS, 1] = corners[:, 1] + (1 - expression.blink) * (moved[EYELIDS, 1] - corners[:, 1])
    moved[BROWS, 1] -= expression.brow_raise * 0.08 * width
    return moved


def _mouth_profile(points: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """How far each lip point moves as the mouth opens: fully in the middle, not at all at
    the corners (a parabola across the mouth's width)."""
    left, right = points[48, 0], points[54, 0]
    middle, half_width = (left + right) / 2, max((right - left) / 2, 1e-6)
    return np.clip(1 - ((points[indices, 0] - middle) / half_width) ** 2, 0, 1)


def apply_pose(points: np.ndarray, pose: HeadPose, size: int) -> np.ndarray:
    """A copy of a frontal face turned, tilted, rolled, scaled and shifted about its centre."""
    points = np.asarray(points, np.float64)
    centre = points.mean(axis=0)
    offsets = points - centre
    depth = point_depths() * _face_width(points)
    yaw, pitch, roll = np.radians([pose.yaw, pose.pitch, pose.roll])
    turned = np.stack([offsets[:, 0] * np.cos(yaw) + depth * np.sin(yaw),
                       offsets[:, 1] * np.cos(pitch) + depth * np.sin(pitch)], axis=1)
    rotation = np.array([[np.cos(roll), -np.sin(roll)], [np.sin(roll), np.cos(roll)]])
    shift = np.array([pose.shift_x, pose.shift_y]) * size
    return centre + shift + pose.scale * turned @ rotation.T


def _face_width(points: np.ndarray) -> float:
    return float(np.ptp(points[JAW, 0]))


def extreme_sweep(ranges: SweepRanges) -> list[tuple[HeadPose, Expression]]:
    """Neutral, then each pose angle and each expression alone at its extremes."""
    neutral = Expression()
    return [
        (HeadPose(), neutral),
        *[(HeadPose(yaw=sign * ranges.max_yaw), neutral) for sign in (-1, 1)],
        *[(HeadPose(pitch=sign * ranges.max_pitch), neutral) for sign in (-1, 1)],
        *[(HeadPose(roll=sign * ranges.max_roll), neutral) for sign in (-1, 1)],
        (HeadPose(), Expression(mouth_open=ranges.max_mouth_open)),
        (HeadPose(), Expression(blink=ranges.max_blink)),
        (HeadPose(), Expression(brow_raise=ranges.max_brow_raise)),
    ]


def random_pose_and_expression(rng: np.random.Generator,
                               ranges: SweepRanges) -> tuple[HeadPose, Expression]:
    """One pose and expression drawn uniformly within ``ranges``."""
    def symmetric(limit: float) -> float:
        return float(rng.uniform(-limit, limit))

    pose = HeadPose(
        yaw=symmetric(ranges.max_yaw), pitch=symmetric(ranges.max_pitch),
        roll=symmetric(ranges.max_roll), shift_x=symmetric(ranges.max_shift),
        shift_y=symmetric(ranges.max_shift),
        scale=float(rng.uniform(ranges.min_scale, ranges.max_scale)),
    )
    expression = Expression(
        mouth_open=float(rng.uniform(0, ranges.max_mouth_open)),
        blink=float(rng.uniform(0, ranges.max_blink)),
        brow_raise=float(rng.uniform(0, ranges.max_brow_raise)),
    )
    return pose, expression


def sweep(count: int, seed: int, ranges: SweepRanges) -> list[tuple[HeadPose, Expression]]:
    """``count`` poses and expressions: the extremes first, then seeded random mixtures."""
    rng = np.random.default_rng(seed)
    chosen = extreme_sweep(ranges)[:count]
    while len(chosen) < count:
        chosen.append(random_pose_and_expression(rng, ranges))
    return chosen


def sweep_landmarks(neutral: np.ndarray, spec: CalibrationSetSpec) -> np.ndarray:
    """(count, 68, 2) float32 landmarks: the neutral face moved through the sweep."""
    _check_landmarks(neutral)
    faces = [apply_pose(apply_expression(neutral, expression), pose, spec.size)
             for pose, expression in sweep(spec.count, spec.seed, spec.ranges)]
    return np.asarray(faces, np.float32).reshape(-1, NUM_LANDMARKS, 2)


def sample_clip_landmarks(clips: Sequence[np.ndarray], count: int, seed: int,
                          scale: float = 1.0) -> np.ndarray:
    """(count, 68, 2) float32 landmarks drawn without replacement (while frames last) from
    clips of (T, 68, 2) crop-pixel landmarks; ``scale`` maps their crop size to the target."""
    frames = [np.asarray(clip, np.float32).reshape(-1, NUM_LANDMARKS, 2) for clip in clips]
    pool = np.concatenate(frames) if frames else np.zeros((0, NUM_LANDMARKS, 2), np.float32)
    if count and not len(pool):
        raise ValueError("clip landmarks were requested but the clips hold no frames")
    rng = np.random.default_rng(seed)
    picks = rng.permutation(len(pool))[:count]
    if len(picks) < count:
        picks = np.concatenate([picks, rng.integers(0, len(pool), count - len(picks))])
    return pool[np.sort(picks)] * np.float32(scale)


def landmark_images(landmarks: np.ndarray, size: int, rasterise: Rasteriser) -> np.ndarray:
    """(K, 68, 2) landmarks -> (K, 3, size, size) float32 landmark images in [-1, 1]."""
    images = np.empty((len(landmarks), 3, size, size), np.float32)
    for index, points in enumerate(landmarks):
        rgb = np.asarray(rasterise(points, size))
        if rgb.shape != (size, size, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"the rasteriser returned {rgb.shape} {rgb.dtype}, "
                             f"expected ({size}, {size}, 3) uint8")
        images[index] = rgb.transpose(2, 0, 1) / np.float32(127.5) - 1
    return images


def build_calibration_set(neutral: np.ndarray, rasterise: Rasteriser, spec: CalibrationSetSpec,
                          clips: Sequence[np.ndarray] = (), clip_scale: float = 1.0) -> np.ndarray:
    """The calibration set: (count + clip_count, 3, S, S) float32 landmark images in [-1, 1],
    the same for the same arguments. ``clips`` are (T, 68, 2) landmark arrays from
    preprocessed clips; ``clip_count`` of their frames are added when ``clips`` is given."""
    landmarks = sweep_landmarks(neutral, spec)
    if clips and spec.clip_count:
        sampled = sample_clip_landmarks(clips, spec.clip_count, spec.seed, clip_scale)
        landmarks = np.concatenate([landmarks, sampled])
    return landmark_images(landmarks, spec.size, rasterise)


def iterate_batches(images: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Contiguous float32 batches of exactly ``batch_size`` images (calibrators need a fixed
    batch size); a short remainder is left out."""
    if batch_size <= 0:
        raise ValueError("batch_size must be positive")
    for start in range(0, len(images) - batch_size + 1, batch_size):
        yield np.ascontiguousarray(images[start:start + batch_size], np.float32)


def _check_landmarks(points: np.ndarray) -> None:
    if np.shape(points) != (NUM_LANDMARKS, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {np.shape(points)}")
