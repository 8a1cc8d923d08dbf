"""The demo input: a procedural talking head that is plausible and stays in the crop."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from vcam.data.synthetic import astronaut
from vcam.landmarks.align import crop_transform_for
from vcam.runtime.demo import DemoAnimation, DemoSource
from vcam.runtime.retarget import fit_similarity

CROP = 256


@pytest.fixture(scope="module")
def neutral(dlib_detector) -> np.ndarray:
    points = dlib_detector.detect(astronaut())[0].points
    return crop_transform_for(points, CROP).to_crop(points)


@pytest.fixture(scope="module")
def clip(neutral) -> np.ndarray:
    """Ten seconds of the animation at 30 frames/s: (300, 68, 2)."""
    animation = DemoAnimation(neutral, CROP)
    return np.stack([animation.points_at(index / 30) for index in range(300)])


def eye_opening(points: np.ndarray) -> float:
    return float(np.mean(points[[41, 40, 47, 46], 1] - points[[37, 38, 43, 44], 1]))


def mouth_gap(points: np.ndarray) -> float:
    return float(points[66, 1] - points[62, 1])


def test_landmarks_are_finite_and_inside_the_crop(clip):
    assert clip.dtype == np.float32 and clip.shape == (300, 68, 2)
    assert np.isfinite(clip).all()
    assert clip.min() >= 0 and clip.max() <= CROP - 1


def test_face_shape_stays_plausible(clip, neutral):
    """Up to pose, every frame stays close to the neutral face (no exploding points)."""
    size = np.ptp(neutral, axis=0).max()
    for points in clip[::10]:
        aligned = fit_similarity(points, neutral).apply(points)
        assert np.abs(aligned - neutral).max() < 0.2 * size
    steps = np.abs(np.diff(clip, axis=0)).max()
    assert steps < 0.06 * size  # smooth motion: no jumps between frames


def test_head_turns_nods_and_tilts(clip, neutral):
    poses = [fit_similarity(neutral, points) for points in clip]
    angles = np.array([pose.angle for pose in poses])
    assert angles.max() > 0.04 and angles.min() < -0.04  # tilts both ways
    nose_offset = clip[:, 30, 0] - clip[:, [0, 16], 0].mean(axis=1)
    assert np.ptp(nose_offset) > 0.1 * np.ptp(neutral[:, 0])  # the nose swings: head turns
    nose_height = clip[:, 30, 1] - clip[:, [36, 45], 1].mean(axis=1)
    assert np.ptp(nose_height) > 0.02 * np.ptp(neutral[:, 1])  # nods


def test_eyes_blink_and_mouth_moves_like_speech(clip, neutral):
    openings = np.array([eye_opening(points) for points in clip])
    assert openings.min() < 0.35 * eye_opening(neutral)  # a blink
    assert np.mean(openings > 0.8 * eye_opening(neutral)) > 0.8  # eyes mostly open
    gaps = np.array([mouth_gap(points) for points in clip])
    assert gaps.max() > mouth_gap(neutral) + 0.05 * np.ptp(neutral[:, 1])
    assert gaps.min() >= mouth_gap(neutral) - 1.0  # the lips never cross
    opening_changes = np.sum(np.diff(np.sign(np.diff(gaps))) != 0)
    assert opening_changes > 20  # many syllables in ten seconds


def test_the_animation_is_reproducible(neutral):
    first = DemoAnimation(neutral, CROP, seed=3).points_at(1.234)
    again = DemoAnimation(neutral, CROP, seed=3).points_at(1.234)
    np.testing.assert_array_equal(first, again)


def test_the_source_yields_landmarks_until_stopped(neutral):
    source = DemoSource(DemoAnimation(neutral, CROP), fps=200)
    stop = threading.Event()
    items = []
    with source:
        for item in source.frames(stop):
            items.append(item)
            if len(items) == 5:
                stop.set()
    assert len(items) == 5
    assert all(item.image is None and item.points.shape == (68, 2) for item in items)
