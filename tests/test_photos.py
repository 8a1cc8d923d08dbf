"""Photos from the user: truncated, damaged or absurdly large files are one-line errors, and
large photos are scaled down before faces are looked for."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import write_rgb
from vcam.cli import main
from vcam.errors import UserError
from vcam.photos import DETECTION_SIDE, read_image


def png_header_claiming(path: Path, width: int, height: int) -> Path:
    """A PNG whose (valid) header claims ``width`` x ``height`` and holds almost no data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    ihdr = struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    data = b"IDAT" + zlib.compress(b"\0" * 64)
    idat = struct.pack(">I", len(data) - 4) + data + struct.pack(">I", zlib.crc32(data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + ihdr + idat)
    return path


@pytest.fixture
def truncated_jpeg(astronaut_image, tmp_path) -> Path:
    whole = write_rgb(tmp_path / "whole.jpg", astronaut_image)
    path = tmp_path / "truncated.jpg"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return path


def test_a_truncated_jpeg_is_reported_as_damaged_not_as_faceless(truncated_jpeg, tiny_model,
                                                                  vcam_home, capsys):
    before = truncated_jpeg.read_bytes()
    assert cv2.imread(str(truncated_jpeg)) is not None  # OpenCV alone would half-decode it
    assert main(["enroll", str(truncated_jpeg), "--name", "me",
                 "--model", str(tiny_model)]) == 2
    error = capsys.readouterr().err
    assert "truncated or damaged" in error and "no face" not in error
    assert error.count("\n") == 1
    assert truncated_jpeg.read_bytes() == before
    assert not (vcam_home / "avatars").exists() or not any((vcam_home / "avatars").iterdir())


def test_an_absurdly_large_image_is_refused_from_its_header(tmp_path):
    path = png_header_claiming(tmp_path / "huge.png", 12_000, 10_000)
    with pytest.raises(UserError, match="12000x10000 \\(120 megapixels\\), over the 100"):
        read_image(path, "photo")
    path = png_header_claiming(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(UserError, match="over the 100 megapixels"):
        read_image(path, "photo")


def test_a_large_photo_is_scaled_down_before_detection(astronaut_image, tmp_path,
                                                       dlib_detector):
    from vcam.enroll import read_photo

    big = cv2.resize(astronaut_image, (4608, 4608), interpolation=cv2.INTER_CUBIC)
    photo = read_photo(write_rgb(tmp_path / "big.jpg", big))
    assert max(photo.image.shape[:2]) == DETECTION_SIDE and photo.image.dtype == np.uint8
    assert len(dlib_detector.detect(photo.image)) == 1
    small = read_image(write_rgb(tmp_path / "small.png", astronaut_image), "photo")
    assert np.array_equal(small, astronaut_image)  # small photos pass unchanged


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\xff\xd8\xff" + bytes(50)],
                         ids=["empty", "text", "jpeg-magic-only"])
def test_unreadable_photos_are_one_line_errors(tmp_path, content):
    path = tmp_path / "photo.jpg"
    path.write_bytes(content)
    with pytest.raises(UserError) as refused:
        read_image(path, "photo")
    assert "\n" not in str(refused.value) and str(path) in str(refused.value)
