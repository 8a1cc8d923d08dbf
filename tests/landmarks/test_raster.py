import numpy as np
import pytest

from vcam.landmarks.raster import GROUPS, line_width, rasterise


def synthetic_face(size: int) -> np.ndarray:
    """68 points spread so no two groups touch: each group a half ellipse on its own row
    band, so the segment that closes a group runs away from the group's own line."""
    points = np.zeros((68, 2), np.float32)
    bands = np.linspace(0.06, 0.88, len(GROUPS)) * size
    for group, band in zip(GROUPS, bands):
        angles = np.linspace(0, np.pi, group.stop - group.start)
        xs = size * (0.5 + 0.35 * np.cos(angles))
        ys = band + 0.05 * size * np.sin(angles)
        points[group.start:group.stop] = np.stack([xs, ys], axis=1)
    return points


@pytest.mark.parametrize("size", [64, 256, 512])
def test_each_group_is_drawn_in_its_colour(size):
    points = synthetic_face(size)
    image = rasterise(points, size)
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    for group in GROUPS:
        a, b = points[group.start], points[group.start + 1]
        x, y = np.round((a + b) / 2).astype(int)
        patch = image[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3).astype(float)
        brightest = patch[patch.sum(axis=1).argmax()]
        assert brightest.max() >= 120, f"{group.name} not drawn at {(x, y)}"
        # Anti-aliasing dims thin lines; the hue (channel proportions) is the group's own.
        hue = brightest * 255 / brightest.max()
        assert np.abs(hue - np.array(group.colour)).max() <= 40, (group.name, brightest)


def test_background_stays_black_and_lines_scale_with_size():
    points = synthetic_face(256)
    image = rasterise(points, 256)
    assert image[0:8].max() == 0 and image[:, 0:8].max() == 0
    assert line_width(64) == 1 and line_width(256) == 2 and line_width(512) == 4
    coverage_small = (rasterise(points / 2, 128).max(axis=2) > 0).mean()
    coverage_large = (image.max(axis=2) > 0).mean()
    assert abs(coverage_small - coverage_large) < 0.3 * coverage_large


def test_closed_groups_are_closed_and_open_ones_are_not():
    points = synthetic_face(256)
    image = rasterise(points, 256)
    for group in GROUPS:
        first, last = points[group.start], points[group.stop - 1]
        x, y = np.round((first + last) / 2).astype(int)
        drawn = image[y - 1:y + 2, x - 1:x + 2].max() > 0
        assert drawn == group.closed, group.name


def test_drawing_into_a_buffer_clears_it():
    buffer = np.full((128, 128, 3), 200, np.uint8)
    result = rasterise(synthetic_face(128), 128, out=buffer)
    assert result is buffer
    assert buffer[0, 0].max() == 0
    np.testing.assert_array_equal(buffer, rasterise(synthetic_face(128), 128))
