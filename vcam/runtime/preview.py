"""The preview window's picture: driver | landmarks | avatar side by side, with the stats.

Composed in RGB into buffers reused from frame to frame.
"""

from __future__ import annotations

import cv2
import numpy as np

from vcam.landmarks.raster import rasterise
from vcam.runtime.compositor import cover
from vcam.runtime.frames import Frame
from vcam.runtime.stats import StatsSnapshot

PANEL_HEIGHT = 360
DRIVER_ASPECT = 4 / 3
POINT_COLOUR = (0, 255, 0)
TEXT_COLOUR = (255, 255, 255)
SHADOW_COLOUR = (0, 0, 0)


class PreviewLayout:
    """Three panels of ``height`` pixels; the avatar panel has the output's aspect ratio."""

    def __init__(self, output_width: int, output_height: int, height: int = PANEL_HEIGHT
                 ) -> None:
        self.height = height
        self.driver_width = round(height * DRIVER_ASPECT)
        self.avatar_width = round(height * output_width / output_height)
        width = self.driver_width + height + self.avatar_width
        self.image = np.zeros((height, width, 3), np.uint8)
        self._driver = self.image[:, :self.driver_width]
        self._landmarks = np.zeros((height, height, 3), np.uint8)
        self._avatar = self.image[:, self.driver_width + height:]

    def compose(self, frame: Frame, canvas: np.ndarray, lines: list[str], crop_size: int,
                demo_crop_size: int) -> np.ndarray:
        """The preview for ``frame`` and its output ``canvas`` (RGB, reused buffer).

        ``crop_size``: the side of the crop the avatar's landmarks are in; ``demo_crop_size``:
        the same for the demo input's driver landmarks (the first avatar's crop).
        """
        self._draw_driver(frame, demo_crop_size)
        self._draw_landmarks(frame, crop_size)
        cv2.resize(canvas, (self.avatar_width, self.height), dst=self._avatar,
                   interpolation=cv2.INTER_AREA)
        for number, text in enumerate(lines):
            put_text(self.image, text, (10, 24 + 22 * number))
        return self.image

    def _draw_driver(self, frame: Frame, demo_crop_size: int) -> None:
        panel = self._driver
        if frame.image is None:
            panel[:] = 0
            if frame.driver_points is not None:  # the demo: its landmarks stand in
                scale = self.height / demo_crop_size
                offset = (self.driver_width - self.height) / 2
                draw_points(panel, frame.driver_points * scale + (offset, 0))
            return
        source_height, source_width = frame.image.shape[:2]
        cover(frame.image, self.driver_width, self.height, out=panel)
        if frame.driver_points is not None:
            scale = max(self.driver_width / source_width, self.height / source_height)
            shift = ((source_width * scale - self.driver_width) / 2,
                     (source_height * scale - self.height) / 2)
            draw_points(panel, frame.driver_points * scale - shift)

    def _draw_landmarks(self, frame: Frame, crop_size: int) -> None:
        start = self.driver_width
        if frame.avatar_points is None:
            self._landmarks[:] = 0
        else:
            rasterise(frame.avatar_points * (self.height / crop_size), self.height,
                      out=self._landmarks)
        self.image[:, start:start + self.height] = self._landmarks


def draw_points(panel: np.ndarray, points: np.ndarray) -> None:
    for x, y in np.round(points).astype(int):
        cv2.circle(panel, (int(x), int(y)), 2, POINT_COLOUR, -1)


def put_text(image: np.ndarray, text: str, origin: tuple[int, int]) -> None:
    """White text with a dark outline, readable on any background."""
    for colour, thickness in ((SHADOW_COLOUR, 3), (TEXT_COLOUR, 1)):
        cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.55, colour, thickness,
                    cv2.LINE_AA)


def overlay_lines(stats: StatsSnapshot, frame: Frame, avatar_name: str) -> list[str]:
    """The stats and state shown on the preview."""
    stages = "  ".join(f"{name} {ms:.0f}" for name, ms in stats.stage_ms.items())
    return [f"{stats.fps:.1f} fps  latency {stats.latency_median_ms:.0f} ms "
            f"(p95 {stats.latency_p95_ms:.0f})  dropped {stats.dropped}",
            f"ms: {stages}",
            f"avatar: {avatar_name}  face: {frame.face_state.value}"]
