import cv2
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vcam.landmarks.align import (
    CropTransform,
    crop_face,
    crop_transform_for,
    crop_window,
    paste_back,
)


def dot_centre(image: np.ndarray) -> np.ndarray:
    """Intensity-weighted centre of a bright dot on black."""
    weights = image.astype(np.float64).sum(axis=2)
    ys, xs = np.mgrid[: weights.shape[0], : weights.shape[1]]
    return np.array([(xs * weights).sum(), (ys * weights).sum()]) / weights.sum()


def test_crop_then_paste_back_lands_within_a_pixel():
    canvas = np.zeros((480, 640, 3), np.uint8)
    spot = np.array([371.3, 212.6])
    cv2.circle(canvas, (round(spot[0] * 16), round(spot[1] * 16)), 3 * 16, (255, 255, 255),
               -1, cv2.LINE_AA, 4)
    transform = CropTransform.from_window(360.0, 200.0, 150.0, size=256)
    crop = crop_face(canvas, transform)
    np.testing.assert_allclose(dot_centre(crop), transform.to_crop(spot[None])[0], atol=1.0)
    pasted = paste_back(np.zeros_like(canvas), crop, transform)
    np.testing.assert_allclose(dot_centre(pasted), spot, atol=1.0)


def test_pasted_crop_reproduces_the_frame(astronaut_image, dlib_detector):
    face = dlib_detector.detect(astronaut_image)[0]
    transform = crop_transform_for(face.points, size=256)
    crop = crop_face(astronaut_image, transform)
    pasted = paste_back(np.zeros_like(astronaut_image), crop, transform)
    x0, y0 = transform.to_source(np.array([[8.0, 8.0]]))[0].astype(int)
    x1, y1 = transform.to_source(np.array([[248.0, 248.0]]))[0].astype(int)
    region = (slice(y0, y1), slice(x0, x1))
    error = np.abs(pasted[region].astype(int) - astronaut_image[region].astype(int)).mean()
    assert error < 4  # two bilinear resamplings of a photo


def test_crop_holds_the_whole_face_with_a_margin(astronaut_image, dlib_detector):
    face = dlib_detector.detect(astronaut_image)[0]
    transform = crop_transform_for(face.points, size=256)
    inside = transform.to_crop(face.points)
    assert inside.min() > 256 * 0.15 and inside.max() < 256 * 0.85
    extent = np.ptp(inside, axis=0).max()
    assert 256 / 1.8 - 1 < extent < 256 / 1.8 + 1


def test_strong_downscale_matches_a_direct_warp(astronaut_image):
    frame = cv2.resize(astronaut_image, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    transform = CropTransform.from_window(900.0, 520.0, 1400.0, size=256)
    crop = crop_face(frame, transform).astype(int)
    reference = cv2.warpAffine(cv2.resize(frame, (512, 512), interpolation=cv2.INTER_AREA),
                               CropTransform.from_window(225.0, 130.0, 350.0, 256).matrix,
                               (256, 256), borderMode=cv2.BORDER_REPLICATE).astype(int)
    assert np.abs(crop - reference)[16:-16, 16:-16].mean() < 5


@settings(max_examples=60, deadline=None)
@given(st.floats(-500, 2000), st.floats(-500, 2000), st.floats(20, 3000),
       st.sampled_from([64, 128, 256, 512]))
def test_points_round_trip_through_a_crop(centre_x, centre_y, side, size):
    transform = CropTransform.from_window(centre_x, centre_y, side, size)
    points = np.random.default_rng(0).uniform(-100, 2100, (68, 2)).astype(np.float32)
    back = transform.to_source(transform.to_crop(points))
    np.testing.assert_allclose(back, points, atol=2e-3 * max(1.0, side / size), rtol=1e-5)
    centre = transform.to_crop(np.array([[centre_x, centre_y]]))[0]
    np.testing.assert_allclose(centre, [size / 2, size / 2], atol=1e-3)


def test_crop_window_is_square_and_covers_the_points():
    points = np.array([[10.0, 20.0], [110.0, 20.0], [60.0, 180.0]])
    centre_x, centre_y, side = crop_window(points, margin=1.5, lift=0.0)
    assert (centre_x, centre_y) == (60.0, 100.0)
    assert side == 1.5 * 160
