"""Between two runs of the network, a live avatar shows its last painting, warped to the face.

On a CPU the generator network takes longer than a frame interval: about 55 ms at 256 px on
one core of a 2-core Xeon, against 33 ms between the frames of a 30 frames/s camera. A live
input then drops frames exactly while the mouth is open, the moments the painting is for:
the live pipeline bench on a real talking face dropped 13 of 200 frames, all of them in the
render stage or behind it.

So for a live input the render stage runs the network on one painted frame in ``N`` (``N``
from the network's recent time over the frame interval, at most :data:`MAX_REUSED` + 1) and,
on the frames between, warps the last painting from the landmarks it was made for to the new
ones (about 2 ms): the mouth moves at the camera's rate, its inside is refreshed at the
network's. A file (every frame rendered, no clock) always runs the network, and so does the
first frame of every opening, a change of avatar, and any frame after one with nothing to
paint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vcam.warp import PiecewiseAffineWarp

# At most this many frames in a row show a reused painting (a network slower than four frame
# intervals still refreshes the mouth at a quarter of the camera's rate and drops frames).
MAX_REUSED = 3
# The part of a frame interval the network may take on average: the render stage also blends
# the painting in, and the other stages share the CPU.
BUDGET_FRACTION = 0.75
# Weight of the newest time in the network's running mean.
NEWEST_WEIGHT = 0.25


@dataclass(frozen=True)
class Painting:
    """What the network rendered (RGB uint8, S x S) for ``points`` of avatar ``avatar``."""

    image: np.ndarray
    points: np.ndarray
    avatar: int


class PaintingReuse:
    """Decides, frame by frame, whether the network runs or its last painting is reused
    (see the module's text). ``frame_interval_ms``: the live input's; None for a file."""

    def __init__(self, frame_interval_ms: float | None) -> None:
        self.frame_interval_ms = frame_interval_ms
        self.network_ms: float | None = None
        self.last: Painting | None = None
        self.reused_in_a_row = 0
        self.frames_reused = 0

    def runs_every(self) -> int:
        """The network runs on one painted frame in this many."""
        if self.frame_interval_ms is None or self.network_ms is None:
            return 1
        frames = math.ceil(self.network_ms / (BUDGET_FRACTION * self.frame_interval_ms))
        return int(min(max(frames, 1), MAX_REUSED + 1))

    def network_due(self, avatar: int) -> bool:
        """Whether the network must run for the next painted frame of ``avatar``."""
        if self.last is None or self.last.avatar != avatar:
            return True
        return self.reused_in_a_row + 1 >= self.runs_every()

    def remember(self, painting: Painting, network_ms: float) -> None:
        """The network just painted ``painting`` in ``network_ms``."""
        self.last = painting
        self.reused_in_a_row = 0
        self.network_ms = network_ms if self.network_ms is None else (
            NEWEST_WEIGHT * network_ms + (1 - NEWEST_WEIGHT) * self.network_ms)

    def reuse(self, points: np.ndarray) -> np.ndarray:
        """The last painting warped so that its landmarks land on ``points``."""
        if self.last is None:
            raise RuntimeError("there is no painting to reuse")
        size = self.last.image.shape[0]
        warped = PiecewiseAffineWarp(self.last.points, size).warp(self.last.image, points)
        self.reused_in_a_row += 1
        self.frames_reused += 1
        return warped

    def forget(self) -> None:
        """A frame with nothing to paint: the next opening starts with the network."""
        self.last = None
