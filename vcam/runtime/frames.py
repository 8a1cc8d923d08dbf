"""The packet that travels through the real-time pipeline, one per captured frame.

Each stage fills in its part and hands the packet on; a packet is owned by one stage at a
time, so no locking is needed. ``captured_at`` (``time.perf_counter`` seconds, taken when the
frame arrived) travels with it to the sinks, which measure capture-to-sink latency from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np


class FrameKind(Enum):
    """What a packet carries."""

    VIDEO = "video"  # a driver frame (or, for the demo input, driver landmarks)
    CAMERA_LOST = "camera lost"  # no frame: the camera is gone and being reconnected


class FaceState(Enum):
    """Where the avatar's landmarks came from on this frame."""

    TRACKING = "tracking"  # the driver's face, retargeted
    HOLDING = "holding"  # face lost moments ago: the last landmarks are held
    EASING = "easing"  # face lost for a while: easing towards the avatar's neutral face
    NEUTRAL = "neutral"  # no face (yet or for long): the avatar's neutral face


@dataclass(slots=True)
class Frame:
    """One frame's journey: capture -> landmarks -> render -> output.

    Attributes:
        index: capture order, from 0.
        captured_at: ``time.perf_counter()`` when the frame was captured.
        media_time: the frame's time in the input's own timeline (seconds): the position in
            a video file, else ``captured_at``. Smoothing, neutral capture and face-loss
            timing follow it, so a file gives the same result however fast it is processed.
        kind: a video frame, or a "camera lost" card.
        image: the driver's RGB frame; None for the demo input and for cards.
        driver_points: the driver's (68, 2) landmarks in ``image`` pixels (for the demo
            input: the animation's landmarks, in the first avatar's crop pixels).
        avatar_index: which enrolled avatar renders this frame.
        avatar_points: (68, 2) landmarks in avatar-crop pixels, what the generator draws.
        face_state: how ``avatar_points`` were obtained.
        network_input: the generator's (1, C, S, S) input, made from ``avatar_points``.
        warped: the warp-guided generator's warped enrollment (RGB uint8 (S, S, 3)).
        paint: where the rendered pixels replace the warp ((S, S, 1) in [0, 1], None: the
            warp everywhere; ``vcam.warp.paint_region``).
        rendered: the RGB uint8 (S, S, 3) crop shown.
    """

    index: int
    captured_at: float
    media_time: float
    kind: FrameKind = FrameKind.VIDEO
    image: np.ndarray | None = None
    driver_points: np.ndarray | None = None
    avatar_index: int = 0
    avatar_points: np.ndarray | None = None
    face_state: FaceState = FaceState.NEUTRAL
    network_input: np.ndarray | None = None
    warped: np.ndarray | None = None
    paint: np.ndarray | None = None
    rendered: np.ndarray | None = None


def check_canvas(canvas: np.ndarray, width: int, height: int) -> None:
    """ValueError unless ``canvas`` is an RGB uint8 ``height`` x ``width`` image."""
    if canvas.dtype != np.uint8 or canvas.shape != (height, width, 3):
        raise ValueError(f"expected an RGB uint8 frame of shape ({height}, {width}, 3), got "
                         f"{canvas.dtype} {canvas.shape}")
