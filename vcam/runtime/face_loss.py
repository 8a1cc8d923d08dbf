"""What the avatar shows when the driver's face disappears, and how it comes back.

Lost for up to ``hold_seconds``: the last landmarks are held (a blink of a detector miss
goes unnoticed). Then the landmarks ease to the avatar's neutral face over ``ease_seconds``
(smoothstep), and stay there. When a face is seen again it is used at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vcam.runtime.frames import FaceState


@dataclass(frozen=True)
class FaceLossSettings:
    hold_seconds: float = 0.5
    ease_seconds: float = 0.5

    def __post_init__(self) -> None:
        if self.hold_seconds < 0 or self.ease_seconds < 0:
            raise ValueError("hold_seconds and ease_seconds must be >= 0")


def smoothstep(fraction: float) -> float:
    fraction = min(max(fraction, 0.0), 1.0)
    return fraction * fraction * (3 - 2 * fraction)


class FaceLossPolicy:
    """Turns "face or no face" per frame into the landmarks to render and a state."""

    def __init__(self, neutral: np.ndarray, settings: FaceLossSettings = FaceLossSettings()
                 ) -> None:
        self.settings = settings
        self._last: np.ndarray | None = None
        self._last_seen = 0.0
        self.set_neutral(neutral)

    def set_neutral(self, neutral: np.ndarray) -> None:
        """The face to ease to (changes with the avatar)."""
        self._neutral = np.asarray(neutral, np.float32)

    def reset(self) -> None:
        """Forget the last face (e.g. after the camera was lost)."""
        self._last = None

    def update(self, points: np.ndarray | None, timestamp: float
               ) -> tuple[np.ndarray, FaceState]:
        """The landmarks to render for this frame and how they were chosen."""
        if points is not None:
            self._last, self._last_seen = points, timestamp
            return points, FaceState.TRACKING
        if self._last is None:
            return self._neutral, FaceState.NEUTRAL
        lost_for = timestamp - self._last_seen
        if lost_for < self.settings.hold_seconds:
            return self._last, FaceState.HOLDING
        easing = lost_for - self.settings.hold_seconds
        if easing >= self.settings.ease_seconds:
            return self._neutral, FaceState.NEUTRAL
        weight = smoothstep(easing / self.settings.ease_seconds)
        eased = (1 - weight) * self._last + weight * self._neutral
        return eased.astype(np.float32), FaceState.EASING


class FaceAbsence:
    """Warns once, through ``warn``, when the input has shown no face at all during its
    first ``after_seconds`` (a face-less video would otherwise just show the neutral avatar)."""

    def __init__(self, warn: Callable[[str], None], after_seconds: float = 2.0) -> None:
        self.warn = warn
        self.after_seconds = after_seconds
        self._started: float | None = None
        self._settled = False

    def note(self, face_seen: bool, media_time: float) -> None:
        if self._settled:
            return
        if self._started is None:
            self._started = media_time
        if face_seen or media_time - self._started >= self.after_seconds:
            self._settled = True
            if not face_seen:
                self.warn(f"no face seen in the first {self.after_seconds:g} s of the input: the "
                          "avatar shows its neutral face (is a face in view, lit and at least "
                          "80 px across?)")
