"""Retargeting: the driver's motion applied to the avatar's own face shape.

The driver's neutral face ``D0`` is captured over the first second the face is seen (or again
on request). For a current driver face ``D``:

* head pose ``P``: the similarity (scale, rotation, translation) taking ``D0`` to ``D``,
  fitted on points that expressions barely move (eye corners, nose, jaw ends);
* expression: ``P^-1(D) - D0``, each point's displacement from the neutral with the head
  motion removed;
* alignment ``Q``: the similarity taking ``D0`` onto the avatar's neutral ``A0``.

The avatar's landmarks are ``Q P Q^-1 (A0 + Q_lin(expression))``: the expression rotated and
scaled into the avatar's frame, then the head pose conjugated into it. A neutral driver gives
exactly ``A0``; the avatar keeps its own face shape whoever drives it. The pose is clamped
(scale range, centroid shift) so the head stays inside the crop.

``raw`` mode skips all of this and crops the driver's own landmarks the way enrollment crops
are made: the paper's self-reenactment, right when the driver is the avatar's person.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calibration.ibug import RIGID_POINTS
from vcam.landmarks.align import crop_transform_for

RETARGET_MODES = ("relative", "raw")
# Driver landmarks that can be retargeted: within this many crop sizes of the crop, and with
# the rigid points spread over at least this fraction of it (a face collapsed onto a point
# has no scale to fit).
MAX_OUTSIDE_CROPS = 1.0
MIN_RIGID_SPREAD = 1e-3


@dataclass(frozen=True)
class RetargetSettings:
    """How driver landmarks become avatar landmarks.

    Attributes:
        mode: ``relative`` (motion on the avatar's shape) or ``raw`` (driver's own shape).
        neutral_seconds: how long the driver's neutral face is averaged once a face is seen.
        min_scale, max_scale: bounds of the head's scale relative to its neutral.
        max_shift: largest centroid shift of the avatar's face, as a fraction of the crop.
        move_in_crop: carry the head's movement across the image into the crop; off when
            the compositor moves the crop with the head instead (rotation and scale stay).
    """

    mode: str = "relative"
    neutral_seconds: float = 1.0
    min_scale: float = 0.8
    max_scale: float = 1.25
    max_shift: float = 0.15
    move_in_crop: bool = True

    def __post_init__(self) -> None:
        if self.mode not in RETARGET_MODES:
            raise ValueError(f"retarget mode must be one of {RETARGET_MODES}, got {self.mode!r}")
        if self.neutral_seconds < 0 or not 0 < self.min_scale <= 1 <= self.max_scale:
            raise ValueError("need neutral_seconds >= 0 and 0 < min_scale <= 1 <= max_scale")


@dataclass(frozen=True)
class Similarity:
    """``x -> scale * rotation @ x + translation`` for row vectors of 2-D points."""

    scale: float
    rotation: np.ndarray
    translation: np.ndarray

    @classmethod
    def identity(cls) -> Similarity:
        return cls(1.0, np.eye(2), np.zeros(2))

    @property
    def angle(self) -> float:
        """Rotation angle in radians (counter-clockwise in x-right, y-up axes)."""
        return float(np.arctan2(self.rotation[1, 0], self.rotation[0, 0]))

    def apply(self, points: np.ndarray) -> np.ndarray:
        return self.scale * np.asarray(points, np.float64) @ self.rotation.T + self.translation

    def apply_linear(self, vectors: np.ndarray) -> np.ndarray:
        """Rotate and scale displacement vectors (no translation)."""
        return self.scale * np.asarray(vectors, np.float64) @ self.rotation.T

    def inverse(self) -> Similarity:
        rotation = self.rotation.T
        scale = 1.0 / self.scale
        return Similarity(scale, rotation, -scale * rotation @ self.translation)

    def then(self, other: Similarity) -> Similarity:
        """The similarity applying ``self`` first, then ``other``."""
        return Similarity(other.scale * self.scale, other.rotation @ self.rotation,
                          other.scale * other.rotation @ self.translation + other.translation)


def fit_similarity(source: np.ndarray, target: np.ndarray) -> Similarity:
    """The least-squares similarity taking ``source`` points onto ``target`` (Umeyama 1991)."""
    source = np.asarray(source, np.float64)
    target = np.asarray(target, np.float64)
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    centred_source, centred_target = source - source_mean, target - target_mean
    covariance = centred_target.T @ centred_source / len(source)
    left, singular, right = np.linalg.svd(covariance)
    reflection = np.diag([1.0, np.sign(np.linalg.det(left @ right)) or 1.0])
    rotation = left @ reflection @ right
    variance = float((centred_source**2).sum() / len(source))
    scale = float(np.trace(np.diag(singular) @ reflection) / max(variance, 1e-12))
    return Similarity(scale, rotation, target_mean - scale * rotation @ source_mean)


def pinned(motion: Similarity, centre: np.ndarray) -> Similarity:
    """``motion``'s rotation and scale about ``centre``, without moving ``centre``."""
    return Similarity(motion.scale, motion.rotation,
                      centre - motion.scale * motion.rotation @ centre)


def can_drive(points: np.ndarray, crop_size: int) -> bool:
    """Whether ``points`` (68, 2), in a crop of ``crop_size`` pixels, can be retargeted: all
    finite, none far outside the crop, the rigid points not collapsed. Landmarks from
    elsewhere (a call's peer) are checked with this first, as retargeting others raises."""
    points = np.asarray(points)
    if points.shape != (68, 2) or not np.isfinite(points).all():
        return False
    margin = MAX_OUTSIDE_CROPS * crop_size
    if points.min() < -margin or points.max() > crop_size + margin:
        return False
    return float(points[RIGID_POINTS].std(axis=0).sum()) > MIN_RIGID_SPREAD * crop_size


class NeutralCapture:
    """Averages the driver's landmarks over the first ``seconds`` after a face is seen."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.reset()

    def reset(self) -> None:
        """Start over: the next faces seen become the neutral."""
        self._sum: np.ndarray | None = None
        self._count = 0
        self._started = 0.0
        self.complete = False

    def observe(self, points: np.ndarray, timestamp: float) -> None:
        """Add a face to the average while the capture window is open."""
        if self.complete:
            return
        if self._sum is None:
            self._sum, self._started = np.zeros((len(points), 2)), timestamp
        self._sum += points
        self._count += 1
        self.complete = timestamp - self._started >= self.seconds

    @property
    def neutral(self) -> np.ndarray | None:
        """The average so far (final once ``complete``); None before any face."""
        return None if self._sum is None else self._sum / self._count


class Retargeter:
    """Maps driver landmarks onto the current avatar's neutral landmarks (see module doc)."""

    def __init__(self, avatar_neutral: np.ndarray, crop_size: int,
                 settings: RetargetSettings = RetargetSettings(),
                 driver_neutral: np.ndarray | None = None) -> None:
        """``driver_neutral`` fixes the driver's neutral face (the demo input knows it);
        without it the neutral is captured from the first second of faces."""
        self.settings = settings
        self.crop_size = crop_size
        self._fixed_neutral = driver_neutral
        self._capture = NeutralCapture(settings.neutral_seconds)
        self.set_avatar(avatar_neutral)

    def set_avatar(self, avatar_neutral: np.ndarray, crop_size: int | None = None) -> None:
        """Retarget onto another avatar's neutral landmarks (and crop size) from now on."""
        self._avatar_neutral = np.asarray(avatar_neutral, np.float64)
        if crop_size is not None:
            self.crop_size = crop_size

    def reset_neutral(self) -> None:
        """Capture the driver's neutral face again from the next frames."""
        self._capture.reset()

    @property
    def neutral_captured(self) -> bool:
        return self._fixed_neutral is not None or self._capture.complete

    def __call__(self, driver_points: np.ndarray, timestamp: float) -> np.ndarray:
        """The avatar's (68, 2) float32 landmarks, in avatar-crop pixels."""
        if self.settings.mode == "raw":
            return crop_transform_for(driver_points, self.crop_size).to_crop(driver_points)
        driver_neutral = self._driver_neutral(driver_points, timestamp)
        return self.relative(driver_neutral, np.asarray(driver_points, np.float64))

    def _driver_neutral(self, driver_points: np.ndarray, timestamp: float) -> np.ndarray:
        if self._fixed_neutral is not None:
            return np.asarray(self._fixed_neutral, np.float64)
        self._capture.observe(driver_points, timestamp)
        neutral = self._capture.neutral
        assert neutral is not None  # observe() has just added a face
        return neutral

    def relative(self, driver_neutral: np.ndarray, driver_points: np.ndarray) -> np.ndarray:
        """``driver_points``' pose and expression relative to ``driver_neutral``, applied to
        the avatar's neutral."""
        avatar_neutral = self._avatar_neutral
        rigid_neutral = driver_neutral[RIGID_POINTS]
        pose = fit_similarity(rigid_neutral, driver_points[RIGID_POINTS])
        alignment = fit_similarity(driver_neutral, avatar_neutral)
        expression = pose.inverse().apply(driver_points) - driver_neutral
        expressive = avatar_neutral + alignment.apply_linear(expression)
        kept_pose = self._clamped(pose, rigid_neutral.mean(axis=0))
        avatar_pose = alignment.inverse().then(kept_pose).then(alignment)
        if not self.settings.move_in_crop:
            avatar_pose = pinned(avatar_pose, avatar_neutral.mean(axis=0))
        return self._kept_in_crop(avatar_pose.apply(expressive)).astype(np.float32)

    def _clamped(self, pose: Similarity, centre: np.ndarray) -> Similarity:
        """``pose`` with its scale kept in range, still taking ``centre`` where it did."""
        scale = float(np.clip(pose.scale, self.settings.min_scale, self.settings.max_scale))
        if scale == pose.scale:
            return pose
        moved_centre = pose.apply(centre[None])[0]
        return Similarity(scale, pose.rotation, moved_centre - scale * pose.rotation @ centre)

    def _kept_in_crop(self, points: np.ndarray) -> np.ndarray:
        """Shift the face back if its centroid moved more than ``max_shift`` of the crop."""
        shift = points.mean(axis=0) - self._avatar_neutral.mean(axis=0)
        limit = self.settings.max_shift * self.crop_size
        length = float(np.hypot(*shift))
        if length <= limit:
            return points
        return points - shift * (1 - limit / length)
