"""Which enrollment frames to keep: frames that cover the face's range, sharp and well lit.

A few-shot avatar can only warp from what its enrollment frames show: a set of eight nearly
identical frames is no better than one. The chooser measures every candidate frame from its
normalised landmarks (:class:`FaceFeatures`: mouth opening and width, eye opening, head yaw and
pitch, all scale-free), drops frames that are blurred or badly exposed (:func:`frame_quality`),
then keeps ``K`` frames by farthest-point sampling in feature space, starting from the most
neutral frame (the avatar's first enrollment frame is its neutral face).

:func:`coverage_summary` and :func:`coverage_advice` describe what a set of enrollment
landmarks covers, for ``vcam avatars`` and for enrollment's warnings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from vcam.eval.motion import checked, inter_ocular, mouth_opening

# iBUG 300-W indices.
RIGHT_EYE = (36, 37, 38, 39, 40, 41)
LEFT_EYE = (42, 43, 44, 45, 46, 47)
MOUTH_CORNERS = (48, 54)
JAW_ENDS = (0, 16)
NOSE_TIP = 30
CHIN = 8

FEATURES = ("mouth_open", "mouth_width", "eye_open", "yaw", "pitch")
# One unit of chooser distance per feature: a clearly parted mouth (0.1 inter-ocular
# distances), a smile's widening, half the way from open to shut eyes, a small turn or nod.
FEATURE_SCALES = {"mouth_open": 0.10, "mouth_width": 0.06, "eye_open": 0.10, "yaw": 0.08,
                  "pitch": 0.05}

# Quality, measured on the face crop in grey levels resized to QUALITY_SIZE px. Sharpness is
# the variance of the Laplacian; a frame is blurred when it is below SHARPNESS_FLOOR or below
# RELATIVE_SHARPNESS times the median of the candidates (motion blur in a clip of sharp
# frames). Measured on the 9 validation clips of the shipped model (256 px crops): the
# per-clip median is 70 to 1,800 (a dark, soft clip at the low end), and 9 to 69 once the
# crops are blurred with a 2.5 px Gaussian. Badly exposed: mean grey level outside
# EXPOSURE_RANGE (those clips: 43 to 138) or more than MAX_CLIPPED of the pixels at 0-5 or
# 250-255 (those clips: at most 0.10).
QUALITY_SIZE = 128
SHARPNESS_FLOOR = 20.0
RELATIVE_SHARPNESS = 0.4
EXPOSURE_RANGE = (40.0, 215.0)
MAX_CLIPPED = 0.2

# What a well-covering set reaches (coverage_advice): an open mouth, closed or half-closed
# eyes, turns and nods both ways (ranges of the features over the set).
OPEN_MOUTH_COVERED = 0.20
EYES_CLOSING_COVERED = 0.5  # the least eye opening over the most
YAW_RANGE_COVERED = 0.10
PITCH_RANGE_COVERED = 0.06


@dataclass(frozen=True)
class FaceFeatures:
    """Scale-free measures of one face's landmarks.

    ``mouth_open``: inner-lip gap over the inter-ocular distance (vcam.eval.motion);
    ``mouth_width``: mouth-corner distance over the inter-ocular distance (a smile widens it);
    ``eye_open``: mean eyelid gap over eye width of both eyes (about 0.3 open, under 0.1 shut);
    ``yaw``: the nose tip's horizontal offset from the jaw's middle over the jaw width,
    positive when the nose points to the image's right; ``pitch``: the nose tip's height
    below the eye line over the eye-to-chin height, smaller when the chin goes up. Both pose
    measures are taken with the eye line turned level, so in-plane roll does not count."""

    mouth_open: float
    mouth_width: float
    eye_open: float
    yaw: float
    pitch: float

    def vector(self) -> np.ndarray:
        """The features in :data:`FEATURES` order, each over its :data:`FEATURE_SCALES`."""
        return np.array([getattr(self, name) / FEATURE_SCALES[name] for name in FEATURES])


def eye_opening(points: np.ndarray, eye: Sequence[int]) -> float:
    corner_a, top_a, top_b, corner_b, bottom_b, bottom_a = (points[i] for i in eye)
    gap = (np.linalg.norm(top_a - bottom_a) + np.linalg.norm(top_b - bottom_b)) / 2
    width = float(np.linalg.norm(corner_b - corner_a))
    return float(gap / width) if width > 0 else 0.0


def levelled(points: np.ndarray) -> np.ndarray:
    """``points`` rotated about their mean so that the outer eye corners are level."""
    right, left = points[36], points[45]
    angle = np.arctan2(left[1] - right[1], left[0] - right[0])
    cos, sin = np.cos(-angle), np.sin(-angle)
    centred = points - points.mean(axis=0)
    return centred @ np.array([[cos, sin], [-sin, cos]])


def face_features(points: np.ndarray) -> FaceFeatures:
    """:class:`FaceFeatures` of (68, 2) landmarks in any pixel scale."""
    points = checked(points)
    distance = inter_ocular(points)
    level = levelled(points)
    jaw_left, jaw_right = level[JAW_ENDS[0]], level[JAW_ENDS[1]]
    jaw_width = max(abs(float(jaw_right[0] - jaw_left[0])), 1e-6)
    eye_line = float(level[list(RIGHT_EYE + LEFT_EYE), 1].mean())
    face_height = max(float(level[CHIN, 1]) - eye_line, 1e-6)
    return FaceFeatures(
        mouth_open=mouth_opening(points),
        mouth_width=float(np.linalg.norm(points[MOUTH_CORNERS[1]] - points[MOUTH_CORNERS[0]]))
        / distance,
        eye_open=(eye_opening(points, RIGHT_EYE) + eye_opening(points, LEFT_EYE)) / 2,
        yaw=float(level[NOSE_TIP, 0] - (jaw_left[0] + jaw_right[0]) / 2) / jaw_width,
        pitch=(float(level[NOSE_TIP, 1]) - eye_line) / face_height)


@dataclass(frozen=True)
class FrameQuality:
    """Sharpness (variance of the Laplacian), mean grey level and clipped fraction of a face
    crop, measured at :data:`QUALITY_SIZE` px."""

    sharpness: float
    brightness: float
    clipped: float

    def exposure_problem(self) -> str | None:
        low, high = EXPOSURE_RANGE
        if self.brightness < low:
            return "too dark"
        if self.brightness > high:
            return "too bright"
        if self.clipped > MAX_CLIPPED:
            return "over- or under-exposed"
        return None


def frame_quality(crop: np.ndarray) -> FrameQuality:
    """:class:`FrameQuality` of an RGB uint8 face crop."""
    grey = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
    grey = cv2.resize(grey, (QUALITY_SIZE, QUALITY_SIZE), interpolation=cv2.INTER_AREA)
    laplacian = cv2.Laplacian(grey, cv2.CV_64F)
    clipped = float(((grey <= 5) | (grey >= 250)).mean())
    return FrameQuality(float(laplacian.var()), float(grey.mean()), clipped)


def quality_problems(qualities: Sequence[FrameQuality]) -> list[str | None]:
    """For each frame, why it is unfit (blurred, too dark, ...) or None when it is fit."""
    if not qualities:
        return []
    median = float(np.median([quality.sharpness for quality in qualities]))
    floor = max(SHARPNESS_FLOOR, RELATIVE_SHARPNESS * median)
    return [("blurred" if quality.sharpness < floor else quality.exposure_problem())
            for quality in qualities]


@dataclass(frozen=True)
class Choice:
    """The chosen frames' indices (the most neutral first) and why others were dropped."""

    indices: list[int]
    rejected: dict[int, str]


def neutral_index(vectors: np.ndarray) -> int:
    """The frame closest to a neutral face: mouth as closed as the set's 10th percentile,
    every other feature at the set's median."""
    reference = np.median(vectors, axis=0)
    reference[FEATURES.index("mouth_open")] = np.percentile(
        vectors[:, FEATURES.index("mouth_open")], 10)
    return int(np.argmin(np.linalg.norm(vectors - reference, axis=1)))


def farthest_points(vectors: np.ndarray, count: int, first: int) -> list[int]:
    """``count`` rows of ``vectors`` by farthest-point sampling from row ``first``: each next
    row is the one farthest from all rows taken so far (ties: the earliest)."""
    chosen = [first]
    nearest = np.linalg.norm(vectors - vectors[first], axis=1)
    nearest[first] = -1.0
    while len(chosen) < min(count, len(vectors)):
        candidate = int(np.argmax(nearest))
        chosen.append(candidate)
        nearest = np.minimum(nearest, np.linalg.norm(vectors - vectors[candidate], axis=1))
        nearest[chosen] = -1.0
    return chosen


def choose_frames(landmarks: Sequence[np.ndarray], count: int,
                  crops: Sequence[np.ndarray] | None = None) -> Choice:
    """Keep ``count`` frames that cover the face's range, the most neutral first.

    ``landmarks``: each candidate's (68, 2) points; ``crops``: their face crops, to drop
    blurred or badly exposed frames (when every frame is unfit, the fittest are used anyway,
    and all are still listed in ``rejected``)."""
    if count < 1 or not len(landmarks):
        raise ValueError("need at least one candidate frame and count >= 1")
    problems = (quality_problems([frame_quality(crop) for crop in crops])
                if crops is not None else [None] * len(landmarks))
    rejected = {index: problem for index, problem in enumerate(problems) if problem}
    usable = [index for index in range(len(landmarks)) if index not in rejected]
    if not usable:
        usable = list(range(len(landmarks)))
    vectors = np.stack([face_features(landmarks[index]).vector() for index in usable])
    picks = farthest_points(vectors, count, neutral_index(vectors))
    return Choice([usable[pick] for pick in picks], rejected)


@dataclass(frozen=True)
class Coverage:
    """What a set of enrollment landmarks covers: ranges of the features over the set."""

    frames: int
    mouth_open: tuple[float, float]
    eye_open: tuple[float, float]
    yaw: tuple[float, float]
    pitch: tuple[float, float]

    def to_dict(self) -> dict:
        return {key: (list(value) if isinstance(value, tuple) else value)
                for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> Coverage:
        return cls(**{key: (tuple(value) if isinstance(value, list) else value)
                      for key, value in values.items()})

    def text(self) -> str:
        """One line: K, the mouth-opening range, the eye-opening and pose ranges."""
        def span(values: tuple[float, float]) -> str:
            return f"{values[0]:.2f}..{values[1]:.2f}"

        return (f"K={self.frames}, mouth opening {span(self.mouth_open)}, eye opening "
                f"{span(self.eye_open)}, yaw {span(self.yaw)}, pitch {span(self.pitch)}")


def coverage_summary(landmarks: np.ndarray) -> Coverage:
    """:class:`Coverage` of enrollment landmarks (K, 68, 2)."""
    features = [face_features(points) for points in np.asarray(landmarks)]

    def extent(name: str) -> tuple[float, float]:
        values = [getattr(feature, name) for feature in features]
        return round(min(values), 3), round(max(values), 3)

    return Coverage(len(features), extent("mouth_open"), extent("eye_open"), extent("yaw"),
                    extent("pitch"))


def coverage_advice(coverage: Coverage) -> list[str]:
    """What the set lacks, each as what to add (empty when it covers the face well)."""
    advice = []
    if coverage.mouth_open[1] < OPEN_MOUTH_COVERED:
        advice.append("no open mouth: add a frame saying 'aah' with the mouth wide open")
    low, high = coverage.eye_open
    if high <= 0 or low / high > EYES_CLOSING_COVERED:
        advice.append("no closed eyes: add a frame with the eyes shut")
    if coverage.yaw[1] - coverage.yaw[0] < YAW_RANGE_COVERED:
        advice.append("no head turn: add frames turned a little left and right")
    if coverage.pitch[1] - coverage.pitch[0] < PITCH_RANGE_COVERED:
        advice.append("no nod: add frames looking a little up and down")
    return advice
