"""The output canvas: the rendered avatar crop in its photo (paste-back) or as a tile, mirror.

The canvas is RGB uint8 at the output size and is reused from frame to frame (the sinks
copy or encode it before the next frame is composed). Two layouts:

* ``paste`` (default): the crop pasted back into the avatar's enrollment photo
  (:mod:`vcam.runtime.paste_back`); an avatar without a photo (format 1) falls back to a tile;
* ``tile``: the crop on a background at a fixed position and scale (centred,
  ``face_fraction`` of the canvas height), or following the driver's head smoothly when
  ``follow_head`` is set; its border is feathered into the background.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from vcam.errors import UserError
from vcam.landmarks.align import crop_mask, crop_window
from vcam.photos import read_image
from vcam.runtime.frames import Frame, FrameKind
from vcam.runtime.paste_back import PasteBack

if TYPE_CHECKING:
    from vcam.avatar import Avatar

BACKGROUND_KINDS = ("colour", "blur", "image")
LAYOUTS = ("paste", "tile")
# The blurred background is computed at 1/BLUR_SHRINK of the canvas size (cheap and soft).
BLUR_SHRINK = 16
CARD_COLOUR = (24, 24, 28)


@dataclass(frozen=True)
class Background:
    """A solid ``colour`` (RGB), the driver's frame ``blur``-red, or an ``image`` file."""

    kind: str = "colour"
    colour: tuple[int, int, int] = (32, 32, 32)
    image_path: Path | None = None

    def __post_init__(self) -> None:
        if self.kind not in BACKGROUND_KINDS:
            raise ValueError(f"background must be one of {BACKGROUND_KINDS}, got {self.kind!r}")
        if self.kind == "image" and self.image_path is None:
            raise ValueError("an image background needs image_path")

    @classmethod
    def parse(cls, text: str) -> Background:
        """``blur``, a colour ``#RRGGBB`` or an image file."""
        if text == "blur":
            return cls("blur")
        if text.startswith("#") and len(text) == 7:
            try:
                return cls("colour", tuple(int(text[i:i + 2], 16) for i in (1, 3, 5)))
            except ValueError:
                pass
        path = Path(text)
        if not path.is_file():
            raise UserError(f"--background {text}: expected 'blur', a colour like '#202020' "
                            "or an image file")
        return cls("image", image_path=path)


@dataclass(frozen=True)
class CompositorSettings:
    """Output size, layout, background, placement and mirroring.

    Attributes:
        width, height: the canvas in pixels.
        layout: ``paste`` (the crop in the avatar's photo) or ``tile``; the background's
            colour also fills any bars beside a photo.
        face_fraction: the avatar crop's side as a fraction of the canvas height.
        follow_head: move the crop with the driver's head (smoothed) instead of keeping it
            centred.
        follow_seconds: time constant of that smoothing.
        feather: fraction of the crop's side blended into the background at its border.
        mirror: flip the output left-right (as a selfie view).
    """

    width: int = 1280
    height: int = 720
    background: Background = Background()
    face_fraction: float = 0.9
    follow_head: bool = False
    follow_seconds: float = 0.3
    feather: float = 0.06
    mirror: bool = False
    layout: str = "paste"

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.width < 16 or self.height < 16:
            raise ValueError(f"output size {self.width}x{self.height} is too small")
        if not 0 < self.face_fraction <= 1:
            raise ValueError("face_fraction must be in (0, 1]")

    @property
    def crop_side(self) -> int:
        return max(8, min(round(self.face_fraction * self.height), self.width))


def read_background(path: Path, width: int, height: int) -> np.ndarray:
    # Four times the output's side leaves enough of any aspect ratio to cover it sharply.
    image = read_image(path, "--background", longest_side=4 * max(width, height))
    return cover(image, width, height)


def cover_region(source_width: int, source_height: int, width: int, height: int
                 ) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the largest centred part of the source with the target's aspect."""
    scale = max(width / source_width, height / source_height)
    keep_width = min(source_width, round(width / scale))
    keep_height = min(source_height, round(height / scale))
    x0, y0 = (source_width - keep_width) // 2, (source_height - keep_height) // 2
    return x0, y0, x0 + keep_width, y0 + keep_height


def cover(image: np.ndarray, width: int, height: int, out: np.ndarray | None = None,
          interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """``image`` scaled and centre-cropped to fill ``width`` x ``height``."""
    x0, y0, x1, y1 = cover_region(image.shape[1], image.shape[0], width, height)
    return cv2.resize(image[y0:y1, x0:x1], (width, height), dst=out, interpolation=interpolation)


def draw_card(canvas: np.ndarray, lines: tuple[str, ...]) -> None:
    """Fill ``canvas`` with a dark card showing ``lines`` centred, in place."""
    canvas[:] = CARD_COLOUR
    height, width = canvas.shape[:2]
    scale = max(0.5, height / 720 * 1.2)
    thickness = max(1, round(scale * 2))
    line_height = round(40 * scale)
    top = height // 2 - line_height * (len(lines) - 1) // 2
    for number, text in enumerate(lines):
        (text_width, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        origin = ((width - text_width) // 2, top + number * line_height)
        cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (235, 235, 235),
                    thickness, cv2.LINE_AA)


CAMERA_LOST_CARD = ("camera lost", "reconnecting...")


def paste_back_for(avatar: Avatar, settings: CompositorSettings) -> PasteBack | None:
    """The avatar's paste-back, or None (tile layout, or an avatar without a photo)."""
    if settings.layout != "paste" or avatar.backdrop is None:
        return None
    return PasteBack(avatar.backdrop, avatar.config.image_size, avatar.neutral_landmarks,
                     settings.width, settings.height, settings.background.colour)


def check_layout(settings: CompositorSettings) -> None:
    """``UserError`` for options that only the tile layout uses, given with paste-back."""
    if settings.layout == "tile":
        return
    if settings.follow_head:
        raise UserError("--follow-head moves the avatar's tile: add --layout tile (the default "
                        "layout pastes the avatar back into its photo, which moves by itself)")
    if settings.background.kind != "colour":
        raise UserError(f"--background {settings.background.kind} goes behind the avatar's "
                        "tile: add --layout tile, or give a colour (the default layout shows "
                        "the avatar's photo)")


class Compositor:
    """Turns a rendered frame into the output canvas (RGB uint8, reused between frames).
    ``avatars``: the run's, by index (paste-back needs their photos)."""

    def __init__(self, settings: CompositorSettings, avatars: Sequence[Avatar] = ()) -> None:
        self.settings = settings
        self._pastes = [paste_back_for(avatar, settings) for avatar in avatars]
        width, height, side = settings.width, settings.height, settings.crop_side
        self.canvas = np.empty((height, width, 3), np.uint8)
        self._mirrored = np.empty_like(self.canvas)
        self._crop = np.empty((side, side, 3), np.uint8)
        self._weight = crop_mask(side, round(settings.feather * side))
        self._inverse_weight = 1.0 - self._weight
        self._small = np.empty((max(1, height // BLUR_SHRINK), max(1, width // BLUR_SHRINK), 3),
                               np.uint8)
        self._still = self._still_background()
        self._centre = np.array([width / 2, height / 2])
        self._centre_time: float | None = None

    def _still_background(self) -> np.ndarray:
        """The background when it does not change: the image, or the colour (also behind a
        blurred background when there is no driver frame). Copying it is far cheaper than
        filling the canvas with a colour every frame."""
        background, settings = self.settings.background, self.settings
        if background.kind == "image" and background.image_path is not None:
            return read_background(background.image_path, settings.width, settings.height)
        still = np.empty((settings.height, settings.width, 3), np.uint8)
        still[:] = background.colour
        return still

    @property
    def side(self) -> int:
        return self._crop.shape[0]

    def compose(self, frame: Frame) -> np.ndarray:
        """The canvas for ``frame`` (a view of a reused buffer: valid until the next call)."""
        if frame.kind is FrameKind.CAMERA_LOST:
            draw_card(self.canvas, CAMERA_LOST_CARD)
            return self.canvas
        paste = self._paste_for(frame.avatar_index)
        if paste is not None:
            paste.compose(self.canvas, frame.rendered, frame.avatar_points)
        else:
            self._paint_background(frame.image)
            if frame.rendered is not None:
                self._place(frame.rendered, self._crop_centre(frame))
        if not self.settings.mirror:
            return self.canvas
        return cv2.flip(self.canvas, 1, dst=self._mirrored)

    def _paste_for(self, index: int) -> PasteBack | None:
        return self._pastes[index] if index < len(self._pastes) else None

    def _paint_background(self, driver: np.ndarray | None) -> None:
        if self.settings.background.kind == "blur" and driver is not None:
            small_height, small_width = self._small.shape[:2]
            cover(driver, small_width, small_height, out=self._small)
            cv2.GaussianBlur(self._small, (0, 0), 1.5, dst=self._small)
            cv2.resize(self._small, (self.settings.width, self.settings.height),
                       dst=self.canvas, interpolation=cv2.INTER_LINEAR)
        else:
            np.copyto(self.canvas, self._still)

    def _crop_centre(self, frame: Frame) -> np.ndarray:
        """Where the crop's centre goes: the canvas centre, or the smoothed head position."""
        if not self.settings.follow_head or frame.image is None or frame.driver_points is None:
            return self._centre
        target = self._head_on_canvas(frame.driver_points, frame.image.shape)
        if self._centre_time is None:
            self._centre = target
        else:
            elapsed = max(frame.media_time - self._centre_time, 0.0)
            weight = 1 - math.exp(-elapsed / max(self.settings.follow_seconds, 1e-6))
            self._centre = self._centre + weight * (target - self._centre)
        self._centre_time = frame.media_time
        return self._centre

    def _head_on_canvas(self, points: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """The driver's crop centre mapped onto the canvas (cover scaling), kept so the whole
        crop stays on the canvas."""
        width, height = self.settings.width, self.settings.height
        x0, y0, x1, y1 = cover_region(shape[1], shape[0], width, height)
        centre_x, centre_y, _ = crop_window(points)
        x = (centre_x - x0) * width / (x1 - x0)
        y = (centre_y - y0) * height / (y1 - y0)
        half = self.side / 2
        return np.array([min(max(x, half), width - half), min(max(y, half), height - half)])

    def _place(self, rendered: np.ndarray, centre: np.ndarray) -> None:
        side = self.side
        cv2.resize(rendered, (side, side), dst=self._crop, interpolation=cv2.INTER_LINEAR)
        x0 = min(max(round(centre[0] - side / 2), 0), self.settings.width - side)
        y0 = min(max(round(centre[1] - side / 2), 0), self.settings.height - side)
        region = self.canvas[y0:y0 + side, x0:x0 + side]
        cv2.blendLinear(region, self._crop, self._inverse_weight, self._weight, dst=region)
