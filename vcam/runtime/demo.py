"""``--input demo``: a procedural talking head made from the avatar's own neutral landmarks.

No camera and no media: the neutral face is given speech-like mouth motion, blinks and a
head that turns, nods and tilts. Head rotation is a 3-D rotation of the 2-D landmarks given a
depth from a simple head model (an ellipsoid with the nose standing out), then an
orthographic projection, so a turned head foreshortens as a real one does.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from calibration.ibug import (
    CHIN,
    LOWER_LIDS,
    LOWER_LIP,
    MOUTH_CORNERS,
    NOSE_BASE,
    NOSE_BRIDGE,
    UPPER_INNER_LIP,
    UPPER_LIDS,
)
from vcam.runtime.capture import Captured

# The jaw points an open mouth drops (the chin most).
LOWER_JAW = np.arange(3, 14)


@dataclass(frozen=True)
class DemoMotion:
    """Amplitudes (radians, fractions of the face height) and the blink rhythm."""

    yaw: float = 0.35
    pitch: float = 0.15
    roll: float = 0.08
    mouth: float = 0.12
    sway: float = 0.02
    blink_every: float = 3.3
    blink_seconds: float = 0.22


class DemoAnimation:
    """Landmarks over time, in the same pixels as ``neutral`` (an avatar crop of ``size``)."""

    def __init__(self, neutral: np.ndarray, size: int, motion: DemoMotion = DemoMotion(),
                 seed: int = 0) -> None:
        self.neutral = np.asarray(neutral, np.float64)
        self.size = size
        self.motion = motion
        phases = np.random.default_rng(seed).uniform(0, 2 * math.pi, 6)
        self._phases = phases
        self._centre = self.neutral.mean(axis=0)
        self._height = float(np.ptp(self.neutral[:, 1]))
        self._depth = head_depth(self.neutral)

    def points_at(self, seconds: float) -> np.ndarray:
        """(68, 2) float32 landmarks ``seconds`` into the animation, inside the crop."""
        face = self.neutral.copy()
        close_eyes(face, self.blink_closure(seconds))
        open_mouth(face, self.mouth_opening(seconds) * self.motion.mouth * self._height)
        posed = self._posed(face, seconds)
        return np.clip(posed, 0, self.size - 1).astype(np.float32)

    def blink_closure(self, seconds: float) -> float:
        """0 (open) .. 1 (shut): a quick triangular blink every ``blink_every`` seconds."""
        into_cycle = (seconds + self._phases[0]) % self.motion.blink_every
        half = self.motion.blink_seconds / 2
        return max(0.0, 1 - abs(into_cycle - half) / half)

    def mouth_opening(self, seconds: float) -> float:
        """0 (closed) .. 1: syllables at about 4 Hz in phrases, with pauses between them."""
        syllables = 0.5 + 0.5 * math.sin(2 * math.pi * 4.1 * seconds + self._phases[1])
        phrase = math.sin(2 * math.pi * 0.23 * seconds + self._phases[2])
        return syllables * max(0.0, phrase) ** 0.5

    def _posed(self, face: np.ndarray, seconds: float) -> np.ndarray:
        motion, phases = self.motion, self._phases
        yaw = motion.yaw * math.sin(2 * math.pi * seconds / 6.1 + phases[3])
        pitch = motion.pitch * math.sin(2 * math.pi * seconds / 4.3 + phases[4])
        roll = motion.roll * math.sin(2 * math.pi * seconds / 7.7 + phases[5])
        relative = face - self._centre
        x, y, z = relative[:, 0], relative[:, 1], self._depth
        x, z = x * math.cos(yaw) + z * math.sin(yaw), z * math.cos(yaw) - x * math.sin(yaw)
        y = y * math.cos(pitch) - z * math.sin(pitch)
        cos, sin = math.cos(roll), math.sin(roll)
        x, y = x * cos - y * sin, x * sin + y * cos
        sway = motion.sway * self._height * math.sin(2 * math.pi * seconds / 5.3)
        return np.stack([x + self._centre[0] + sway, y + self._centre[1]], axis=1)


def head_depth(neutral: np.ndarray) -> np.ndarray:
    """A depth for each landmark (towards the camera): an ellipsoid head, the nose in front."""
    centre = neutral.mean(axis=0)
    half_width = max(float(np.ptp(neutral[:, 0])) / 2, 1.0)
    half_height = max(float(np.ptp(neutral[:, 1])) / 2, 1.0)
    across = ((neutral[:, 0] - centre[0]) / half_width) ** 2
    down = ((neutral[:, 1] - centre[1]) / (1.6 * half_height)) ** 2
    depth = 0.6 * half_width * np.sqrt(np.clip(1 - across - down, 0, 1))
    bridge_to_tip = np.linspace(0.1, 0.45, 4)
    depth[NOSE_BRIDGE] += bridge_to_tip * half_width
    depth[NOSE_BASE] += 0.25 * half_width
    return depth


def close_eyes(face: np.ndarray, closure: float) -> None:
    """Move the upper lids (and a little of the lower) towards each other, in place."""
    gap = face[LOWER_LIDS] - face[UPPER_LIDS]
    face[UPPER_LIDS] += 0.8 * closure * gap
    face[LOWER_LIDS] -= 0.15 * closure * gap


def open_mouth(face: np.ndarray, opening: float) -> None:
    """Drop the lower lip and the jaw by ``opening`` pixels, in place."""
    face[LOWER_LIP, 1] += opening
    face[UPPER_INNER_LIP, 1] -= 0.1 * opening
    face[MOUTH_CORNERS, 1] += 0.4 * opening
    chin_x = face[CHIN, 0]
    jaw_width = max(float(np.ptp(face[LOWER_JAW, 0])), 1.0)
    falloff = np.clip(1 - np.abs(face[LOWER_JAW, 0] - chin_x) / (0.6 * jaw_width), 0, 1)
    face[LOWER_JAW, 1] += 0.7 * opening * falloff


class DemoSource:
    """Demo landmarks at ``fps``: live (paced in real time, endless) or, given ``frames``,
    a clip of that many frames made as fast as the pipeline takes them (for file output)."""

    def __init__(self, animation: DemoAnimation, fps: float, frames: int | None = None) -> None:
        self.animation = animation
        self.fps = fps
        self.frames_to_make = frames
        self.live = frames is None

    def __enter__(self) -> DemoSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def frames(self, stop: threading.Event) -> Iterator[Captured]:
        """Landmarks at each frame time until ``stop`` is set (or the clip ends)."""
        if self.frames_to_make is not None:
            for index in range(self.frames_to_make):
                if stop.is_set():
                    return
                yield Captured(points=self.animation.points_at(index / self.fps))
            return
        started = time.perf_counter()
        interval = 1.0 / self.fps
        index = 0
        while not stop.is_set():
            due = started + index * interval
            delay = due - time.perf_counter()
            if delay > 0 and stop.wait(delay):
                return
            yield Captured(points=self.animation.points_at(index * interval))
            index += 1
