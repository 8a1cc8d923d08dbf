"""Reading photos someone gave us: checked by their header before decoding, decoded whole or
refused, and never larger in memory than the work needs.

Pillow reads the size from the header first, so an absurd image (over
:data:`MAX_MEGAPIXELS`) is refused before a pixel is decoded; a JPEG is decoded at a reduced
scale when that still leaves the side asked for; a truncated or damaged file is an error
rather than a half-grey picture; the camera's EXIF orientation is applied (as OpenCV does).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vcam.errors import UserError

# Larger than any camera's photo (a 108 MP phone sensor bins to 12 MP by default).
MAX_MEGAPIXELS = 100
# Faces are found on photos scaled down to this longest side (a face of the 80 px vcam needs
# in the scaled photo is 4 % of its side); the face crop is taken from the same photo.
DETECTION_SIDE = 2048


def read_image(path: Path, what: str, longest_side: int = DETECTION_SIDE) -> np.ndarray:
    """RGB uint8 (H, W, 3), scaled down (never up) to at most ``longest_side``; one-line
    ``UserError`` for a missing, unreadable, truncated or absurdly large file. ``what``
    names the file in messages (e.g. the option it came from)."""
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    try:
        with warnings.catch_warnings():  # the size is checked below, in vcam's own words
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
        with image:
            check_size(image.size, what, path)
            image.draft("RGB", reduced_size(image.size, longest_side))
            image.load()
            rgb = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except Image.DecompressionBombError:  # Pillow's own limit, far above vcam's
        raise UserError(f"{what} {path} is over the {MAX_MEGAPIXELS} megapixels vcam reads: "
                        "use a smaller copy") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        reason = "truncated or damaged" if "truncated" in str(error) else "not a readable image"
        raise UserError(f"{what} {path} is {reason} (use a JPEG or PNG photo)") from None
    return scaled_down(rgb, longest_side)


def check_size(size: tuple[int, int], what: str, path: Path) -> None:
    width, height = size
    if width * height > MAX_MEGAPIXELS * 1_000_000:
        raise UserError(f"{what} {path} is {width}x{height} ({width * height / 1e6:.0f} "
                        f"megapixels), over the {MAX_MEGAPIXELS} megapixels vcam reads: use a "
                        "smaller copy")


def reduced_size(size: tuple[int, int], longest_side: int) -> tuple[int, int]:
    """The size to ask a JPEG decoder for: the image scaled to ``longest_side`` (the decoder
    picks the smallest of its scales at or above it)."""
    scale = min(1.0, longest_side / max(size))
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def scaled_down(rgb: np.ndarray, longest_side: int) -> np.ndarray:
    height, width = rgb.shape[:2]
    scale = longest_side / max(height, width)
    if scale >= 1:
        return np.ascontiguousarray(rgb)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
