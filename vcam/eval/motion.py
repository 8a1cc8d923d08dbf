"""Kind of motion of an evaluated frame, from landmarks alone.

Each target frame gets one label, so the report can say where each method wins:

* ``large pose``: the head pose differs from every enrollment frame. :func:`pose_change` is
  the residual left after a similarity alignment (Procrustes: translation, rotation, scale)
  of the non-mouth points onto the closest enrollment frame, over the inter-ocular
  distance. A shift, in-plane roll or zoom of the same face leaves no residual; a turn, a
  nod or a different face shape does.
* ``open mouth``: :func:`mouth_opening` (inner-lip gap over the inter-ocular distance) is
  above :data:`OPEN_MOUTH_THRESHOLD`.
* ``small motion``: anything else (near-frontal to the enrollment, mouth about closed).

Large pose takes precedence over open mouth.

Beside the labels, :func:`mouth_opens_beyond_enrollment` marks the frames no enrollment frame
can show by warping: the target's mouth is open (inner-lip gap above
:data:`BEYOND_TARGET_OPENING`) while the enrollment frame the warp starts from (the nearest by
landmarks, :func:`vcam.warp.nearest_frame`) has it about closed (below
:data:`BEYOND_SOURCE_OPENING`). Landmarks are (68, 2) pixel coordinates in
iBUG 300-W order; both measures are scale-free, so any crop size works.
"""

from __future__ import annotations

import numpy as np

from calibration.ibug import ABOVE_MOUTH, OUTER_EYE_CORNERS
from vcam.warp import lip_gap, nearest_frame

SMALL_MOTION, LARGE_POSE, OPEN_MOUTH = "small motion", "large pose", "open mouth"
MOTIONS = (SMALL_MOTION, LARGE_POSE, OPEN_MOUTH)
# Inner-lip gap / inter-ocular distance. Closed lips measure about 0 to 0.05 (the detector
# rarely makes the inner lips touch), a wide-open mouth 0.25 to 0.4; 0.12 means lips clearly
# parted, about a third of the way to wide open. The values are spread with no gap to cut at:
# over the 17,290 target frames of the preprocessed corpus (351 clips of ../shared/data, the
# frames `vcam eval` would score) the median is 0.056, the 75th percentile 0.107, and 21% of
# frames lie above 0.12.
OPEN_MOUTH_THRESHOLD = 0.12
# Procrustes residual / inter-ocular distance against the closest enrollment frame. On the
# same frames, K = 1: median 0.046, 75th percentile 0.078, 30% above 0.07; K = 8: median
# 0.035, 75th percentile 0.058, 18% above 0.07; both pooled, 24% above 0.07. Consecutive
# frames differ by 0.014 (median; 90th percentile 0.034), so 0.07 is well above landmark
# jitter. On the synthetic face of calibration.sets it is a turn of about 17 degrees of yaw
# or pitch.
LARGE_POSE_THRESHOLD = 0.07
# "Mouth opens beyond every enrollment frame": the target's inner-lip gap above 0.10
# inter-ocular distances (lips clearly apart) while the warp source's is below 0.05 (closed).
BEYOND_TARGET_OPENING = 0.10
BEYOND_SOURCE_OPENING = 0.05
# Subsets of the target frames the report gives figures for, beside all frames.
ALL_FRAMES, MOUTH_BEYOND = "all", "mouth opens beyond enrollment"
SUBSETS = (ALL_FRAMES, MOUTH_BEYOND, LARGE_POSE)


def inter_ocular(points: np.ndarray) -> float:
    """Distance between the outer eye corners (36 and 45); must be positive."""
    right, left = OUTER_EYE_CORNERS
    distance = float(np.linalg.norm(points[right] - points[left]))
    if distance <= 0:
        raise ValueError("the landmarks' outer eye corners coincide")
    return distance


def mouth_opening(points: np.ndarray) -> float:
    """Mean vertical gap between the upper (61-63) and lower (67-65) inner lip, over the
    inter-ocular distance; about 0 for a closed mouth."""
    points = checked(points)
    inter_ocular(points)  # refuses coincident eye corners
    return lip_gap(points)


def procrustes_residual(source: np.ndarray, target: np.ndarray) -> float:
    """Mean point distance left after the best similarity transform of ``source`` onto
    ``target`` (both (N, 2)), in ``target``'s pixels; reflections are not allowed."""
    source_centred = source - source.mean(axis=0)
    target_centred = target - target.mean(axis=0)
    left, singular, right = np.linalg.svd(target_centred.T @ source_centred)
    sign = np.sign(np.linalg.det(left @ right)) or 1.0
    correction = np.diag([1.0, sign])
    rotation = left @ correction @ right
    norm = float((source_centred ** 2).sum())
    scale = float((singular * np.diag(correction)).sum()) / norm if norm > 0 else 0.0
    aligned = scale * source_centred @ rotation.T
    return float(np.linalg.norm(aligned - target_centred, axis=1).mean())


def pose_change(target: np.ndarray, enrollment: np.ndarray) -> float:
    """The smallest Procrustes residual of the non-mouth points (0-47) between the target
    and any of the K enrollment landmark sets (K, 68, 2), over the target's inter-ocular
    distance."""
    target = checked(target)
    sets = np.asarray(enrollment, np.float64).reshape(-1, *target.shape)
    residual = min(procrustes_residual(points[ABOVE_MOUTH], target[ABOVE_MOUTH])
                   for points in sets)
    return residual / inter_ocular(target)


def motion_label(target: np.ndarray, enrollment: np.ndarray) -> str:
    """``large pose``, ``open mouth`` or ``small motion`` (in that precedence) for a target
    frame's landmarks against the enrollment landmarks (K, 68, 2)."""
    if pose_change(target, enrollment) > LARGE_POSE_THRESHOLD:
        return LARGE_POSE
    if mouth_opening(target) > OPEN_MOUTH_THRESHOLD:
        return OPEN_MOUTH
    return SMALL_MOTION


def motion_labels(targets: list[np.ndarray], enrollment: np.ndarray) -> list[str]:
    """:func:`motion_label` of every target frame's landmarks."""
    return [motion_label(points, enrollment) for points in targets]


def checked(points: np.ndarray) -> np.ndarray:
    """``points`` as float64 (68, 2)."""
    points = np.asarray(points, np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {points.shape}")
    return points


def mouth_opens_beyond_enrollment(target: np.ndarray, enrollment: np.ndarray) -> bool:
    """Whether the target's mouth is open (gap > :data:`BEYOND_TARGET_OPENING`) while the
    enrollment frame nearest by landmarks (the warp source) has it closed (gap <
    :data:`BEYOND_SOURCE_OPENING`); ``enrollment`` is (K, 68, 2)."""
    target = checked(target)
    if mouth_opening(target) <= BEYOND_TARGET_OPENING:
        return False
    sets = np.asarray(enrollment, np.float64).reshape(-1, *target.shape)
    return mouth_opening(sets[nearest_frame(sets, target)]) < BEYOND_SOURCE_OPENING


def frame_subsets(target: np.ndarray, enrollment: np.ndarray) -> list[str]:
    """The :data:`SUBSETS` a target frame belongs to (always ``all``)."""
    subsets = [ALL_FRAMES]
    if mouth_opens_beyond_enrollment(target, enrollment):
        subsets.append(MOUTH_BEYOND)
    if pose_change(target, enrollment) > LARGE_POSE_THRESHOLD:
        subsets.append(LARGE_POSE)
    return subsets
