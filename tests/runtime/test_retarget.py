"""Retargeting keeps the avatar's face shape while following the driver's motion."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vcam.data.synthetic import astronaut
from vcam.landmarks.align import crop_transform_for
from vcam.runtime.retarget import (
    NeutralCapture,
    Retargeter,
    RetargetSettings,
    Similarity,
    can_drive,
    fit_similarity,
)

CROP = 256
INNER_UPPER_LIP, INNER_LOWER_LIP = 62, 66
LOWER_LIP = [56, 57, 58, 65, 66, 67]


@pytest.fixture(scope="module")
def avatar_neutral(dlib_detector) -> np.ndarray:
    """The astronaut's landmarks in a 256 px avatar crop (a real face shape)."""
    points = dlib_detector.detect(astronaut())[0].points
    return crop_transform_for(points, CROP).to_crop(points)


def rotation(angle: float) -> np.ndarray:
    return np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])


def someone_else(avatar_neutral: np.ndarray) -> np.ndarray:
    """A differently shaped face (wider, shorter chin) at another place, size and tilt in a
    640x480 camera frame."""
    face = avatar_neutral - avatar_neutral.mean(axis=0)
    face = face * np.array([1.25, 0.9])
    return (1.4 * face @ rotation(0.1).T + np.array([300.0, 260.0])).astype(np.float32)


def mouth_gap(points: np.ndarray) -> float:
    return float(points[INNER_LOWER_LIP, 1] - points[INNER_UPPER_LIP, 1])


def test_fit_similarity_recovers_a_known_transform(avatar_neutral):
    known = Similarity(1.7, rotation(0.3), np.array([12.0, -5.0]))
    fitted = fit_similarity(avatar_neutral, known.apply(avatar_neutral))
    assert fitted.scale == pytest.approx(1.7)
    assert fitted.angle == pytest.approx(0.3)
    np.testing.assert_allclose(fitted.translation, known.translation, atol=1e-6)
    round_trip = fitted.then(fitted.inverse()).apply(avatar_neutral)
    np.testing.assert_allclose(round_trip, avatar_neutral, atol=1e-4)


def test_neutral_driver_gives_exactly_the_avatars_neutral(avatar_neutral):
    driver = someone_else(avatar_neutral)
    retarget = Retargeter(avatar_neutral, CROP, driver_neutral=driver)
    result = retarget(driver, 0.0)
    np.testing.assert_allclose(result, avatar_neutral, atol=1e-3)
    # ... and not the driver's shape: the face width ratio is the avatar's.
    assert np.ptp(result[:, 0]) / np.ptp(result[:, 1]) == pytest.approx(
        np.ptp(avatar_neutral[:, 0]) / np.ptp(avatar_neutral[:, 1]), rel=1e-3)


def test_drivers_mouth_opening_opens_the_avatars_mouth(avatar_neutral):
    driver = someone_else(avatar_neutral)
    retarget = Retargeter(avatar_neutral, CROP, driver_neutral=driver)
    opened = driver.copy()
    opened[LOWER_LIP] += rotation(0.1)[:, 1] * 20  # 20 px down the driver's face axis
    result = retarget(opened, 0.0)
    assert mouth_gap(result) > mouth_gap(avatar_neutral) + 8
    # The rest of the face stays the avatar's.
    untouched = [i for i in range(68) if i not in LOWER_LIP]
    np.testing.assert_allclose(result[untouched], avatar_neutral[untouched], atol=1.0)


def test_head_rotation_and_scale_are_carried_over(avatar_neutral):
    driver = someone_else(avatar_neutral)
    retarget = Retargeter(avatar_neutral, CROP, driver_neutral=driver)
    centre = driver.mean(axis=0)
    turned = ((driver - centre) @ rotation(0.2).T * 1.1 + centre).astype(np.float32)
    motion = fit_similarity(avatar_neutral, retarget(turned, 0.0))
    assert motion.angle == pytest.approx(0.2, abs=1e-3)
    assert motion.scale == pytest.approx(1.1, abs=1e-3)


def test_pose_is_clamped_to_stay_in_the_crop(avatar_neutral):
    driver = someone_else(avatar_neutral)
    settings = RetargetSettings(max_shift=0.1, max_scale=1.2)
    retarget = Retargeter(avatar_neutral, CROP, settings, driver_neutral=driver)
    far = (driver - driver.mean(axis=0)) * 2.0 + driver.mean(axis=0) + np.array([400.0, 0.0])
    result = retarget(far.astype(np.float32), 0.0)
    shift = np.hypot(*(result.mean(axis=0) - avatar_neutral.mean(axis=0)))
    assert shift <= 0.1 * CROP + 1e-3
    assert fit_similarity(avatar_neutral, result).scale == pytest.approx(1.2, abs=1e-3)


def test_neutral_is_captured_over_the_first_second_and_can_be_reset(avatar_neutral):
    driver = someone_else(avatar_neutral)
    retarget = Retargeter(avatar_neutral, CROP, RetargetSettings(neutral_seconds=1.0))
    for step in range(6):  # 1.25 s of a still, neutral face
        retarget(driver, step * 0.25)
    assert retarget.neutral_captured
    opened = driver.copy()
    opened[LOWER_LIP, 1] += 15
    assert mouth_gap(retarget(opened, 2.0)) > mouth_gap(avatar_neutral) + 5
    # The user resets while the mouth is open: that becomes the new neutral.
    retarget.reset_neutral()
    assert not retarget.neutral_captured
    np.testing.assert_allclose(retarget(opened, 3.0), avatar_neutral, atol=1e-3)


def test_neutral_capture_averages():
    capture = NeutralCapture(seconds=0.5)
    capture.observe(np.zeros((68, 2)), 0.0)
    capture.observe(np.full((68, 2), 2.0), 0.6)
    capture.observe(np.full((68, 2), 100.0), 0.7)  # after the window: ignored
    assert capture.complete
    np.testing.assert_allclose(capture.neutral, 1.0)


def test_raw_mode_crops_the_drivers_own_landmarks(avatar_neutral):
    driver = someone_else(avatar_neutral)
    retarget = Retargeter(avatar_neutral, CROP, RetargetSettings(mode="raw"))
    result = retarget(driver, 0.0)
    expected = crop_transform_for(driver, CROP).to_crop(driver)
    np.testing.assert_allclose(result, expected)
    assert np.ptp(result[:, 0]) / np.ptp(result[:, 1]) == pytest.approx(
        np.ptp(driver[:, 0]) / np.ptp(driver[:, 1]), rel=1e-3)


def test_switching_avatar_retargets_onto_the_new_shape(avatar_neutral):
    driver = someone_else(avatar_neutral)
    retarget = Retargeter(avatar_neutral, CROP, driver_neutral=driver)
    other = (avatar_neutral - 128) * np.array([0.8, 1.1]) + 128
    retarget.set_avatar(other)
    np.testing.assert_allclose(retarget(driver, 0.0), other, atol=1e-3)


def test_with_the_crop_following_the_head_the_face_stays_put_in_the_crop(avatar_neutral):
    driver = someone_else(avatar_neutral)
    settings = RetargetSettings(move_in_crop=False)
    retarget = Retargeter(avatar_neutral, CROP, settings, driver_neutral=driver)
    moved = driver + np.array([60.0, -25.0], np.float32)
    np.testing.assert_allclose(retarget(moved, 0.0), avatar_neutral, atol=1e-3)
    centre = driver.mean(axis=0)
    turned = ((driver - centre) @ rotation(0.2).T + centre + 40).astype(np.float32)
    result = retarget(turned, 0.0)
    assert fit_similarity(avatar_neutral, result).angle == pytest.approx(0.2, abs=1e-3)
    np.testing.assert_allclose(result.mean(axis=0), avatar_neutral.mean(axis=0), atol=0.5)


def test_landmarks_that_would_break_retargeting_are_recognised(avatar_neutral):
    retarget = Retargeter(avatar_neutral, CROP, driver_neutral=avatar_neutral)
    collapsed = np.full((68, 2), CROP / 2)
    with pytest.raises(ZeroDivisionError):  # why landmarks from elsewhere are checked first
        retarget(collapsed, 0.0)
    assert can_drive(avatar_neutral, CROP)
    assert can_drive(avatar_neutral + CROP * 0.9, CROP)  # partly outside the crop
    with_nan = avatar_neutral.copy()
    with_nan[5, 1] = np.nan
    for unusable in (collapsed, with_nan, avatar_neutral * 100, avatar_neutral[:60],
                     np.full((68, 2), np.inf)):
        assert not can_drive(unusable, CROP)
