"""K-shot episodes drawn from preprocessed clips, and the identity-level split.

Episodes are a pure function of (seed, step, rank): resuming a run at step N draws exactly the
batches an uninterrupted run would have drawn, and each process of a distributed run draws
its own.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from vcam.data.clips import Clip
from vcam.images import to_tensor
from vcam.landmarks.raster import rasterise
from vcam.warp import WarpGuide


@dataclass(frozen=True)
class Split:
    """Which identities train and which are held out for validation."""

    train: tuple[str, ...]
    validation: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"train": list(self.train), "validation": list(self.validation)}

    @classmethod
    def from_dict(cls, data: dict) -> Split:
        return cls(tuple(data["train"]), tuple(data["validation"]))


def split_identities(identities: list[str], validation_fraction: float = 0.1,
                     seed: int = 0) -> Split:
    """Hold out about ``validation_fraction`` of the identities (at least one when there are
    two or more), chosen reproducibly by ``seed``."""
    ordered = sorted(set(identities))
    random.Random(seed).shuffle(ordered)
    held = 0 if len(ordered) < 2 else max(1, math.floor(validation_fraction * len(ordered)))
    return Split(tuple(sorted(ordered[held:])), tuple(sorted(ordered[:held])))


def load_frame(clip: Clip, index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One frame of a clip (RGB uint8, resized to ``size``) and its landmarks, scaled too."""
    frame = clip.frame(index)
    points = clip.landmarks[index]
    if frame.shape[0] != size:
        points = points * (size / frame.shape[0])
        frame = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)
    return frame, points.astype(np.float32)


def load_example(clip: Clip, index: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One frame of a clip and its landmark image, both (3, size, size) in [-1, 1]."""
    frame, points = load_frame(clip, index, size)
    return to_tensor(frame), to_tensor(rasterise(points, size))


@dataclass(frozen=True)
class Episodes:
    """Batches of K-shot episodes from the training clips (``clips[i]`` is W's column i)."""

    clips: tuple[Clip, ...]
    shots: int
    size: int
    batch: int
    seed: int = 0
    warp: bool = False
    cavity: bool = False

    def draw(self, step: int, rank: int = 0) -> dict[str, torch.Tensor]:
        """The batch for ``step`` on process ``rank``:

        - ``frames``, ``landmarks``: (B, K, 3, S, S) enrollment frames and landmark images
        - ``target``, ``target_landmarks``: (B, 3, S, S)
        - ``video``: (B,) the clip's column in W
        - ``target_warp`` (with ``warp``): (B, 3, S, S) the nearest enrollment frame warped
          to the target landmarks (the warp-guided generator's second input; with ``cavity``
          a dark hole where the mouth opens beyond that frame's, see ``WarpGuide``)
        """
        rng = np.random.default_rng([self.seed, step, rank])
        videos = rng.integers(0, len(self.clips), self.batch)
        episodes = [self.episode(self.clips[video], rng) for video in videos]
        batch = {key: torch.stack([episode[key] for episode in episodes])
                 for key in episodes[0]}
        batch["video"] = torch.from_numpy(videos.astype(np.int64))
        return batch

    def episode(self, clip: Clip, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        target, shots = pick_frames(len(clip), self.shots, rng)
        pairs = [load_frame(clip, index, self.size) for index in shots]
        target_frame, target_points = load_frame(clip, target, self.size)
        episode = {
            "frames": torch.stack([to_tensor(frame) for frame, _ in pairs]),
            "landmarks": torch.stack([to_tensor(rasterise(p, self.size)) for _, p in pairs]),
            "target": to_tensor(target_frame),
            "target_landmarks": to_tensor(rasterise(target_points, self.size))}
        if self.warp:
            guide = WarpGuide(np.stack([frame for frame, _ in pairs]),
                              np.stack([points for _, points in pairs]), cavity=self.cavity)
            warped = guide.image_for(target_points)
            episode["target_warp"] = to_tensor(guide.network_image(target_points, warped))
        return episode


def pick_frames(count: int, shots: int, rng: np.random.Generator) -> tuple[int, list[int]]:
    """A target frame and ``shots`` other frames of a clip with ``count`` frames (repeating
    frames only when the clip is too short to avoid it)."""
    target = int(rng.integers(count))
    others = [index for index in range(count) if index != target] or [target]
    replace = len(others) < shots
    return target, [int(i) for i in rng.choice(others, shots, replace=replace)]
