"""Episodes drawn the way vcam is used: one snapshot, and targets that move away from it.

The K-shot episodes of :mod:`vcam.train.episodes` warp the enrollment frame *nearest* the
target, a frame of the same short clip, so the warp is already almost right and the
warp-guided generator learns to copy it. A user enrolls from one snapshot and then opens the
mouth, shuts the eyes and turns the head. These episodes rebuild that situation:

* the **source** (the snapshot, and what the target is warped from) is one frame of another
  clip of the same person (``cross_clip`` of the time, where the corpus has one) or a frame
  of the target's clip far from it in time; most sources have a closed mouth, as a snapshot
  does;
* the **target** is, ``hard_targets`` of the time, a frame where the warp is wrong: the mouth
  opens beyond the source's, the eyes open or close, or the head turns (all measured from
  landmarks, see :func:`warp_difficulty`);
* every episode carries **region maps** for the losses: the mouth box and eye boxes (where a
  wrong warp shows) and the target's inner-mouth polygon when the mouth opens beyond the
  source's (where the warp can only stretch closed lips, so the generator must paint).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from calibration import ibug
from vcam.data.clips import Clip
from vcam.eval.motion import procrustes_residual
from vcam.eval.regions import MOUTH_POINTS, region_box
from vcam.images import to_tensor
from vcam.landmarks.raster import rasterise
from vcam.train.episodes import load_frame
from vcam.warp import PAINT_OPENING, PiecewiseAffineWarp, lip_gap, mouth_cavity

EYES = tuple(tuple(range(eye.start, eye.stop)) for eye in (ibug.RIGHT_EYE, ibug.LEFT_EYE))
# A source counts as a closed-mouth snapshot below this inner-lip gap (inter-ocular units).
CLOSED_MOUTH = 0.05
# The warp is wrong when the target moves this far from the source (inter-ocular units):
# the mouth opens by MOUTH_STEP more, an eye aperture changes by EYE_STEP, or the rigid
# points leave POSE_STEP of Procrustes residual (the eval's large-pose threshold).
MOUTH_STEP, EYE_STEP, POSE_STEP = 0.08, 0.04, 0.07
# The inner-mouth polygon is painted where the mouth opens by at least this much more: the
# same rule as the region where the runtime shows the painting (vcam.warp.paint_region).
PAINT_STEP = PAINT_OPENING
# Region boxes (vcam.eval.regions.region_box, as the evaluation measures them): at least this
# fraction of the image a side for the mouth, half of it for each eye.
MIN_BOX_FRACTION = 0.19
# Same-clip sources are at least this fraction of the clip away from the target.
FAR_FRACTION = 1 / 3
REGION_CHANNELS = ("mouth", "eyes", "paint")


@dataclass(frozen=True)
class FaceStates:
    """Per-frame measures of one clip's landmarks (T, 68, 2), in inter-ocular units."""

    mouth: np.ndarray
    eyes: np.ndarray
    iod: np.ndarray

    @classmethod
    def of(cls, landmarks: np.ndarray) -> FaceStates:
        points = np.asarray(landmarks, np.float64)
        right, left = ibug.OUTER_EYE_CORNERS
        iod = np.maximum(np.linalg.norm(points[:, right] - points[:, left], axis=1), 1e-6)
        lids = points[:, ibug.LOWER_LIDS, 1] - points[:, ibug.UPPER_LIDS, 1]
        return cls(np.atleast_1d(lip_gap(points)), lids.mean(1) / iod, iod)


def warp_difficulty(source_points: np.ndarray, source_state: tuple[float, float],
                    targets: np.ndarray, states: FaceStates) -> np.ndarray:
    """How wrong the source warped to each target would be, in units of the steps above:
    the largest of mouth opening beyond the source's, eye aperture change and pose change.
    Values of 1 and over are targets where the warp cannot be right."""
    mouth = (states.mouth - source_state[0]) / MOUTH_STEP
    eyes = np.abs(states.eyes - source_state[1]) / EYE_STEP
    pose = np.array([procrustes_residual(source_points[ibug.ABOVE_MOUTH], target[ibug.ABOVE_MOUTH])
                     for target in np.asarray(targets, np.float64)]) / states.iod / POSE_STEP
    return np.maximum(np.maximum(mouth, eyes), pose)


def region_maps(target: np.ndarray, paint: bool, size: int) -> np.ndarray:
    """(3, S, S) float32: the mouth box, the eye boxes and (when ``paint``) the target's
    inner-mouth polygon, slightly dilated."""
    maps = np.zeros((3, size, size), np.float32)
    x0, y0, x1, y1 = region_box(target, MOUTH_POINTS, (size, size),
                                min_side=round(MIN_BOX_FRACTION * size))
    maps[0, y0:y1, x0:x1] = 1
    for eye in EYES:
        x0, y0, x1, y1 = region_box(target, eye, (size, size),
                                    min_side=round(MIN_BOX_FRACTION * size / 2))
        maps[1, y0:y1, x0:x1] = 1
    if paint:
        polygon = np.round(target[ibug.INNER_LIP]).astype(np.int32)
        cv2.fillPoly(maps[2], [polygon], 1.0)
        maps[2] = cv2.dilate(maps[2], np.ones((3, 3), np.uint8))
    return maps


@dataclass(frozen=True)
class SnapshotEpisodes:
    """Batches of snapshot-like episodes (same ``draw`` contract as ``Episodes``, plus
    ``regions`` (B, 3, S, S): mouth box, eye boxes, paint polygon). With ``cavity`` the
    target's warp has a dark hole where the mouth opens beyond the source's
    (:func:`vcam.warp.mouth_cavity`), as a ``mouth_input="cavity"`` model is given it."""

    clips: tuple[Clip, ...]
    shots: int
    size: int
    batch: int
    seed: int = 0
    cross_clip: float = 0.25
    hard_targets: float = 0.7
    closed_source: float = 0.7
    cavity: bool = False

    def draw(self, step: int, rank: int = 0) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, step, rank, 1])
        videos = rng.integers(0, len(self.clips), self.batch)
        episodes = [self.episode(int(video), rng) for video in videos]
        batch = {key: torch.stack([episode[key] for episode in episodes])
                 for key in episodes[0]}
        batch["video"] = torch.from_numpy(videos.astype(np.int64))
        return batch

    def siblings(self, video: int) -> list[int]:
        """Other clips of the same person."""
        identity = self.clips[video].identity
        return [i for i, clip in enumerate(self.clips) if clip.identity == identity
                and i != video and len(clip) > 0]

    def episode(self, video: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        clip = self.clips[video]
        others = self.siblings(video)
        if others and rng.random() < self.cross_clip:
            source_clip = self.clips[int(rng.choice(others))]
            source = self.pick_source(source_clip, rng)
            target = self.pick_target(clip, source_clip.landmarks[source],
                                      np.arange(len(clip)), rng)
        else:
            source_clip = clip
            source = self.pick_source(clip, rng)
            target = self.pick_target(clip, clip.landmarks[source],
                                      far_frames(len(clip), source), rng)
        return self.build(source_clip, source, clip, target, rng)

    def pick_source(self, clip: Clip, rng: np.random.Generator) -> int:
        states = FaceStates.of(clip.landmarks)
        closed = np.flatnonzero(states.mouth < CLOSED_MOUTH)
        if len(closed) and rng.random() < self.closed_source:
            return int(rng.choice(closed))
        return int(rng.integers(len(clip)))

    def pick_target(self, clip: Clip, source_points: np.ndarray, candidates: np.ndarray,
                    rng: np.random.Generator) -> int:
        if rng.random() >= self.hard_targets:
            return int(rng.choice(candidates))
        source_state = FaceStates.of(source_points[None])
        states = FaceStates.of(clip.landmarks[candidates])
        difficulty = warp_difficulty(np.asarray(source_points, np.float64),
                                     (source_state.mouth[0], source_state.eyes[0]),
                                     clip.landmarks[candidates], states)
        hard = candidates[difficulty >= 1]
        return int(rng.choice(hard if len(hard) else candidates))

    def build(self, source_clip: Clip, source: int, clip: Clip, target: int,
              rng: np.random.Generator) -> dict[str, torch.Tensor]:
        extra = [int(i) for i in rng.choice(len(source_clip), self.shots - 1)] \
            if self.shots > 1 else []
        shots = [load_frame(source_clip, index, self.size) for index in [source, *extra]]
        source_frame, source_points = shots[0]
        target_frame, target_points = load_frame(clip, target, self.size)
        warped = PiecewiseAffineWarp(source_points, self.size).warp(source_frame, target_points)
        if self.cavity:
            warped = mouth_cavity(warped, target_points, source_points)
        opens = (FaceStates.of(target_points[None]).mouth[0]
                 - FaceStates.of(source_points[None]).mouth[0]) > PAINT_STEP
        return {
            "frames": torch.stack([to_tensor(frame) for frame, _ in shots]),
            "landmarks": torch.stack([to_tensor(rasterise(p, self.size)) for _, p in shots]),
            "target": to_tensor(target_frame),
            "target_landmarks": to_tensor(rasterise(target_points, self.size)),
            "target_warp": to_tensor(warped),
            "regions": torch.from_numpy(region_maps(target_points, bool(opens), self.size)),
        }


def far_frames(count: int, source: int) -> np.ndarray:
    """Frames of a ``count``-frame clip at least FAR_FRACTION of it away from ``source``
    (the farthest half when none is that far)."""
    distance = np.abs(np.arange(count) - source)
    far = np.flatnonzero(distance >= max(1, FAR_FRACTION * count))
    if len(far):
        return far
    return np.flatnonzero(distance >= np.median(distance)) if count > 1 else np.arange(count)
