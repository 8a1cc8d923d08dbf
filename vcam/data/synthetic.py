"""Synthetic footage made from scikit-image's public-domain astronaut photo, for benchmarks,
tests and demos on machines without a camera or clips."""

from __future__ import annotations

import math
from collections.abc import Iterator

import cv2
import numpy as np


def astronaut() -> np.ndarray:
    """The astronaut portrait (RGB uint8, 512 x 512), public domain, shipped by scikit-image."""
    from skimage import data

    return data.astronaut()


# Where the astronaut's face is in the 512 x 512 photo (centre x, centre y) and its size (px).
ASTRONAUT_FACE_CENTRE = (224.0, 128.0)
ASTRONAUT_FACE_SIZE = 90.0


def moving_face_frames(count: int, width: int = 640, height: int = 480,
                       face_size: float = 140.0) -> Iterator[np.ndarray]:
    """``count`` RGB frames of the astronaut's face (about ``face_size`` px) drifting, zooming
    and tilting slightly over a grey background, like a person in front of a webcam."""
    source = astronaut()
    for index in range(count):
        phase = 2 * math.pi * index / max(count, 1)
        scale = face_size / ASTRONAUT_FACE_SIZE * (1 + 0.08 * math.sin(2 * phase))
        angle = 6 * math.sin(phase)
        target = (width / 2 + 0.12 * width * math.sin(phase),
                  height / 2 + 0.05 * height * math.cos(3 * phase))
        matrix = cv2.getRotationMatrix2D(ASTRONAUT_FACE_CENTRE, angle, scale)
        matrix[:, 2] += np.array(target) - ASTRONAUT_FACE_CENTRE
        yield cv2.warpAffine(source, matrix, (width, height), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=(96, 96, 96))


def write_video(path: str, frames: Iterator[np.ndarray], fps: float = 25.0) -> int:
    """Write RGB frames to an mp4 (mp4v) file; returns the number written."""
    writer = None
    written = 0
    try:
        for frame in frames:
            if writer is None:
                height, width = frame.shape[:2]
                writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                         (width, height))
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            written += 1
    finally:
        if writer is not None:
            writer.release()
    return written
