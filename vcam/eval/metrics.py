"""Per-frame and per-clip metrics of self-reenactment, and their aggregation.

Frames are RGB uint8 arrays (H, W, 3); landmarks are float (68, 2) pixel coordinates in iBUG
300-W order. The protocol (../shared/docs/METHOD.md, "Evaluation protocol used by this project")
compares every rendered frame with the real frame it re-enacts:

* :func:`ssim`, :func:`psnr`: fidelity of the pixels (scikit-image's implementations);
* :class:`IdentityScorer`: CSIM, the cosine similarity of dlib's face descriptors;
* :func:`pose_error` with :func:`redetect_landmarks`: does the rendered face take the driving
  pose (normalised mean landmark error); :func:`mouth_opening_error`: does its mouth open as
  far as the driving landmarks say (lip sync);
* :func:`temporal_flicker`: per clip, how much less steady the rendering is than reality.

:func:`clip_means` and :func:`overall_means` average per-frame rows into per-clip and overall
figures; every clip counts once whatever its length.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

import dlib
import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from calibration.ibug import OUTER_EYE_CORNERS
from vcam.landmarks.detector import LandmarkDetector, create_detector
from vcam.landmarks.face import Box, box_overlap, check_image, points_box
from vcam.landmarks.models import model_file
from vcam.warp import lip_gap

PIXEL_RANGE = 255.0
# Identical frames have an infinite PSNR; averages count it as this many dB.
PSNR_CAP_DB = 100.0
# Metrics whose values are clipped to a ceiling before averaging.
METRIC_CAPS: Mapping[str, float] = {"psnr": PSNR_CAP_DB}
FACE_DESCRIPTOR_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
# dlib's defaults for compute_face_descriptor: no jittering, the 150x150 chip's padding.
DESCRIPTOR_JITTERS = 0
DESCRIPTOR_PADDING = 0.25


def ssim(rendered: np.ndarray, real: np.ndarray) -> float:
    """Structural similarity of two RGB uint8 frames, in [-1, 1] (1: identical).

    scikit-image's mean SSIM over the three channels with its defaults (uniform 7x7 window)
    and a data range of 255.
    """
    rendered, real = check_pair(rendered, real)
    return float(structural_similarity(rendered, real, channel_axis=2, data_range=PIXEL_RANGE))


def psnr(rendered: np.ndarray, real: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two RGB uint8 frames in dB (peak 255).

    ``inf`` for identical frames; the averages of :func:`clip_means` and :func:`overall_means`
    count it as ``PSNR_CAP_DB`` (100 dB, beyond any real rendering: one grey level of error
    on a single pixel of a 256 px frame is about 106 dB).
    """
    rendered, real = check_pair(rendered, real)
    if np.array_equal(rendered, real):
        return math.inf
    return float(peak_signal_noise_ratio(real, rendered, data_range=PIXEL_RANGE))


def check_pair(rendered: np.ndarray, real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both frames validated as RGB uint8 of the same shape."""
    rendered, real = check_image(rendered), check_image(real)
    if rendered.shape != real.shape:
        raise ValueError(f"frames differ in shape: {rendered.shape} and {real.shape}")
    return rendered, real


def pose_error(driving_points: np.ndarray, rendered_points: np.ndarray) -> float:
    """Normalised mean error between the driving landmarks and those found on the rendering.

    The mean Euclidean distance over the 68 points divided by the inter-ocular distance (the
    outer eye corners, indices 36 and 45) of the driving landmarks; 0 is a perfect pose.
    """
    driving = np.asarray(driving_points, np.float64)
    rendered = np.asarray(rendered_points, np.float64)
    if driving.shape != rendered.shape or driving.ndim != 2 or driving.shape[1] != 2:
        raise ValueError(f"expected two (68, 2) landmark arrays, got {driving.shape} and "
                         f"{rendered.shape}")
    right, left = OUTER_EYE_CORNERS
    inter_ocular = float(np.linalg.norm(driving[right] - driving[left]))
    if inter_ocular <= 0:
        raise ValueError("the driving landmarks' outer eye corners coincide")
    return float(np.linalg.norm(driving - rendered, axis=1).mean() / inter_ocular)


def mouth_opening_error(driving_points: np.ndarray, rendered_points: np.ndarray) -> float:
    """How far the mouth found on the rendering opens more or less than the driving mouth:
    the absolute difference of their inner-lip gaps (:func:`vcam.warp.lip_gap`, inter-ocular
    distances); 0 when the rendered lips part exactly as driven. A painter that draws closed
    lips over an opening mouth, or a warp that stretches them, scores high."""
    return abs(lip_gap(rendered_points) - lip_gap(driving_points))


@dataclass(frozen=True)
class Redetection:
    """Landmarks found on a rendered frame; ``detected`` is False when no face was detected
    and the points were fitted inside the driving landmarks' box instead."""

    points: np.ndarray
    detected: bool


def redetect_landmarks(detector: LandmarkDetector, rendered: np.ndarray,
                       driving_points: np.ndarray) -> Redetection:
    """The landmarks of the face on ``rendered`` that best overlaps the driving landmarks.

    When the detector finds no face (a poor rendering often has none), the landmarks are
    fitted inside the bounding box of the driving landmarks, so the pose error stays defined
    (and is large when the rendering is poor); ``Redetection.detected`` tells the two apart.
    """
    expected = points_box(driving_points)
    faces = detector.detect(rendered)
    if not faces:
        return Redetection(detector.fit(rendered, expected), detected=False)
    best = max(faces, key=lambda face: box_overlap(face.box, expected))
    return Redetection(best.points, detected=True)


@dataclass(frozen=True)
class FaceDescriptor:
    """dlib's 128-d descriptor of the face in one frame, the face box it was computed in and
    whether that box was detected (False: a fallback box)."""

    vector: np.ndarray
    box: Box
    detected: bool


class IdentityScorer:
    """CSIM: cosine similarity of dlib's 128-d face descriptors of a rendered and a real frame.

    dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) runs on the
    face chip that dlib aligns from 68 landmarks. The landmarks come from ``detector`` (dlib's
    own HOG detector and 68-point predictor by default; pass the one you already have to avoid
    loading the predictor twice): the largest face detected in each frame. When no face is
    detected in the rendered frame, the landmarks are fitted inside the real frame's face box;
    when none is detected in the real frame either, inside ``fallback_box`` or, without one,
    the whole frame. So the score is always defined, and low for a rendering without a face.

    A descriptor costs about 0.15 s on a CPU: when several renderings of one real frame are
    scored (the model and the warping baseline), describe the real frame once with
    :meth:`describe` and use :meth:`similarity_to`.
    """

    def __init__(self, detector: LandmarkDetector | None = None) -> None:
        self.detector = detector if detector is not None else create_detector("dlib")
        self._recogniser = dlib.face_recognition_model_v1(str(model_file(FACE_DESCRIPTOR_MODEL)))

    def similarity(self, rendered: np.ndarray, real: np.ndarray,
                   fallback_box: Box | None = None) -> float:
        """CSIM of ``rendered`` against ``real`` (RGB uint8), in [-1, 1]; 1: same descriptor."""
        check_pair(rendered, real)
        return self.similarity_to(rendered, self.describe(real, fallback_box))

    def similarity_to(self, rendered: np.ndarray, real_face: FaceDescriptor) -> float:
        """CSIM of ``rendered`` against a real frame described by :meth:`describe`."""
        rendered_face = self.describe(rendered, real_face.box)
        return cosine_similarity(rendered_face.vector, real_face.vector)

    def describe(self, image: np.ndarray, fallback_box: Box | None = None) -> FaceDescriptor:
        """The descriptor of the largest face detected in ``image`` (RGB uint8), or of the
        face fitted inside ``fallback_box`` (default: the whole frame) when none is."""
        image = check_image(image)
        faces = self.detector.detect(image)
        if faces:
            points, box, detected = faces[0].points, faces[0].box, True
        else:
            height, width = image.shape[:2]
            box = fallback_box or (0.0, 0.0, width - 1.0, height - 1.0)
            points, detected = self.detector.fit(image, box), False
        return FaceDescriptor(self.descriptor(image, points), box, detected)

    def descriptor(self, image: np.ndarray, points: np.ndarray) -> np.ndarray:
        """dlib's 128-d descriptor (float64) of the face with these 68 landmarks."""
        shape = dlib.full_object_detection(
            to_rectangle(points_box(points)),
            [dlib.point(round(float(x)), round(float(y))) for x, y in points])
        vector = self._recogniser.compute_face_descriptor(
            check_image(image), shape, DESCRIPTOR_JITTERS, DESCRIPTOR_PADDING)
        return np.asarray(vector, np.float64)


def to_rectangle(box: Box) -> dlib.rectangle:
    x0, y0, x1, y1 = (round(value) for value in box)
    return dlib.rectangle(x0, y0, x1, y1)


def cosine_similarity(first: np.ndarray, second: np.ndarray) -> float:
    """Cosine of the angle between two vectors (0 when either is zero)."""
    norms = float(np.linalg.norm(first) * np.linalg.norm(second))
    return float(np.dot(first, second) / norms) if norms > 0 else 0.0


def temporal_flicker(rendered_frames: Sequence[np.ndarray],
                     real_frames: Sequence[np.ndarray]) -> float:
    """How unsteady a rendered clip is compared with the real clip it re-enacts.

    The mean absolute change between consecutive rendered frames (over all pixels, channels
    and frame pairs) divided by the same for the real frames: 1.0 is as steady as reality,
    above 1 flickers more. ``nan`` (skipped by the averages) when there are fewer than two
    frames or the real clip does not change at all.
    """
    if len(rendered_frames) != len(real_frames):
        raise ValueError(f"clips differ in length: {len(rendered_frames)} rendered and "
                         f"{len(real_frames)} real frames")
    real_change = mean_frame_change(real_frames)
    if not real_change > 0:
        return math.nan
    return mean_frame_change(rendered_frames) / real_change


def mean_frame_change(frames: Sequence[np.ndarray]) -> float:
    """Mean absolute difference between consecutive frames (``nan`` for fewer than two)."""
    if len(frames) < 2:
        return math.nan
    changes = [np.abs(after.astype(np.int16) - before.astype(np.int16)).mean()
               for before, after in pairwise(frames)]
    return float(np.mean(changes))


Row = Mapping[str, object]


def clip_means(rows: Iterable[Row], clip_key: str = "clip",
               metrics: Sequence[str] | None = None) -> dict[object, dict[str, float]]:
    """Per-clip means of per-frame rows.

    Each row is one frame's results, e.g. ``{"clip": "id001/abc", "ssim": 0.61, ...}``.
    ``metrics`` names the keys to average; by default every key of the first row whose value
    is a number, other than ``clip_key``. The means skip ``nan`` (a metric nowhere defined in
    a clip averages to ``nan``) and clip values at :data:`METRIC_CAPS` (infinite PSNR counts
    as ``PSNR_CAP_DB``). Clips keep the order they first appear in.
    """
    grouped: dict[object, list[Row]] = {}
    for row in rows:
        grouped.setdefault(row[clip_key], []).append(row)
    if not grouped:
        return {}
    names = metrics if metrics is not None else numeric_keys(
        next(iter(grouped.values()))[0], exclude=clip_key)
    return {clip: means_of(clip_rows, names) for clip, clip_rows in grouped.items()}


def overall_means(per_clip: Iterable[Mapping[str, float]],
                  metrics: Sequence[str] | None = None) -> dict[str, float]:
    """Means over clips of per-clip figures (e.g. ``clip_means(rows).values()``, to which
    per-clip metrics such as ``temporal_flicker`` may have been added): each clip counts
    once; ``nan`` skipped and caps applied as in :func:`clip_means`."""
    clips = list(per_clip)
    if not clips:
        return {}
    names = metrics if metrics is not None else numeric_keys(clips[0])
    return means_of(clips, names)


def means_of(rows: Sequence[Row], names: Sequence[str]) -> dict[str, float]:
    """The nan-skipping, capped mean of each named value over ``rows`` (missing = nan)."""
    return {name: nan_mean([capped(name, row.get(name, math.nan)) for row in rows])
            for name in names}


def capped(name: str, value: object) -> float:
    """``value`` as a float, clipped to the metric's cap in :data:`METRIC_CAPS` if any."""
    number = float(value)  # type: ignore[arg-type]
    cap = METRIC_CAPS.get(name)
    return min(number, cap) if cap is not None else number


def nan_mean(values: Sequence[float]) -> float:
    """Mean of the values that are not ``nan``; ``nan`` when there are none."""
    kept = [value for value in values if not math.isnan(value)]
    return float(np.mean(kept)) if kept else math.nan


def numeric_keys(row: Row, exclude: str | None = None) -> list[str]:
    """Keys of ``row`` with real-number values (numpy's included, booleans not), except
    ``exclude``."""
    return [key for key, value in row.items()
            if key != exclude and isinstance(value, numbers.Real) and not isinstance(value, bool)]
