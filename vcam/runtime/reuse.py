"""Between two runs of the network, a live avatar shows its last painting, warped to the face.

On a CPU the generator network takes longer than a frame interval: about 55 ms at 256 px on
one core of a 2-core Xeon, against 33 ms between the frames of a 30 frames/s camera. A live
input then drops frames exactly while the mouth is open, the moments the painting is for:
the live pipeline bench on a real talking face dropped 13 of 200 frames, all of them in the
render stage or behind it.

So for a live input the render stage runs the network on one painted frame in ``N`` (``N``
from the network's recent time over the frame interval, at most
:data:`MAX_REUSED_IN_A_ROW` + 1) and, on the frames between, warps the last painting from the
landmarks it was made for to the new ones (about 2 ms): the mouth moves at the camera's rate,
its inside is refreshed at the network's. A file (every frame rendered, no clock) always runs
the network, and so does the first frame of every opening, a change of avatar, any frame
after one with nothing to paint and any frame more than ``N`` intervals after the painting.
The frame interval is the pipeline's output rate (``PipelineSettings.fps``), not a measured
camera rate. A direct (not warp-guided) avatar paints the whole face on every frame: there
the whole face is reused, warped, in the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vcam.warp import PiecewiseAffineWarp

# At most this many frames in a row show a reused painting (a network slower than four frame
# intervals still refreshes the mouth at a quarter of the camera's rate and drops frames).
MAX_REUSED_IN_A_ROW = 3
# The part of a frame interval the network may take on average: the render stage also blends
# the painting in, and the other stages share the CPU.
BUDGET_FRACTION = 0.75
# Weight of the newest time in the network's running mean.
NEWEST_WEIGHT = 0.25


@dataclass
class Painting:
    """What the network rendered (RGB uint8, S x S) for ``points`` (avatar-crop pixels) of
    avatar ``avatar_index``, on a frame of the input's time ``media_time`` (seconds)."""

    image: np.ndarray
    points: np.ndarray
    avatar_index: int
    media_time: float
    warp: PiecewiseAffineWarp | None = None

    def warped_to(self, points: np.ndarray) -> np.ndarray:
        """The painting warped so that its landmarks land on ``points``."""
        if self.warp is None:  # triangulated once, for all the frames that reuse it
            self.warp = PiecewiseAffineWarp(self.points, self.image.shape[0])
        return self.warp.warp(self.image, points)


class PaintingReuse:
    """Decides, frame by frame, whether the network runs or its last painting is reused
    (see the module's text). ``frame_interval_ms``: the live input's; None for a file."""

    def __init__(self, frame_interval_ms: float | None) -> None:
        self.frame_interval_ms = frame_interval_ms
        self.network_ms: float | None = None
        self.last: Painting | None = None
        self.reused_in_a_row = 0
        self.frames_reused = 0

    def network_period(self) -> int:
        """The network runs on one painted frame in this many."""
        if self.frame_interval_ms is None or self.network_ms is None:
            return 1
        frames = math.ceil(self.network_ms / (BUDGET_FRACTION * self.frame_interval_ms))
        return int(min(max(frames, 1), MAX_REUSED_IN_A_ROW + 1))

    def network_due(self, avatar_index: int, media_time: float) -> bool:
        """Whether the network must run for a painted frame of ``avatar_index`` at
        ``media_time``: always, unless the last painting is of the same avatar, was reused
        fewer times in a row than the network's period allows, and is no older than that
        period (a stalled camera or a pause in a call's landmarks brings the network back)."""
        last, period = self.last, self.network_period()
        if last is None or last.avatar_index != avatar_index or self.frame_interval_ms is None:
            return True
        too_old = media_time - last.media_time > period * self.frame_interval_ms / 1000
        return too_old or self.reused_in_a_row + 1 >= period

    def remember(self, painting: Painting, network_ms: float) -> None:
        """The network just painted ``painting`` in ``network_ms``."""
        self.last = painting
        self.reused_in_a_row = 0
        self.network_ms = network_ms if self.network_ms is None else (
            NEWEST_WEIGHT * network_ms + (1 - NEWEST_WEIGHT) * self.network_ms)

    def reuse(self, points: np.ndarray) -> np.ndarray:
        """The last painting, warped to ``points``, for a frame the network skips."""
        if self.last is None:
            raise RuntimeError("there is no painting to reuse")
        self.reused_in_a_row += 1
        self.frames_reused += 1
        return self.last.warped_to(points)

    def forget(self) -> None:
        """A frame with nothing to paint: the next opening starts with the network."""
        self.last = None
