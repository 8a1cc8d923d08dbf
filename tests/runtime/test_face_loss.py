"""Face lost: hold, then ease to the avatar's neutral face; face back: recover at once."""

from __future__ import annotations

import numpy as np
import pytest

from vcam.runtime.face_loss import FaceLossPolicy, FaceLossSettings
from vcam.runtime.frames import FaceState

NEUTRAL = np.zeros((68, 2), np.float32)
FACE = np.full((68, 2), 10.0, np.float32)
OTHER_FACE = np.full((68, 2), 20.0, np.float32)


def run(policy: FaceLossPolicy, frames: list[tuple[float, np.ndarray | None]]):
    return [policy.update(points, time) for time, points in frames]


def test_before_any_face_the_avatar_shows_its_neutral_face():
    points, state = FaceLossPolicy(NEUTRAL).update(None, 0.0)
    assert state is FaceState.NEUTRAL
    np.testing.assert_array_equal(points, NEUTRAL)


def test_lost_face_is_held_then_eased_to_neutral_then_recovered_at_once():
    policy = FaceLossPolicy(NEUTRAL, FaceLossSettings(hold_seconds=0.5, ease_seconds=0.5))
    timeline = [(0.0, FACE), (0.1, None), (0.45, None), (0.6, None), (0.75, None),
                (0.9, None), (1.0, None), (2.0, None), (2.1, OTHER_FACE)]
    results = run(policy, timeline)
    states = [state for _, state in results]
    assert states == [FaceState.TRACKING, FaceState.HOLDING, FaceState.HOLDING,
                      FaceState.EASING, FaceState.EASING, FaceState.EASING,
                      FaceState.NEUTRAL, FaceState.NEUTRAL, FaceState.TRACKING]
    np.testing.assert_array_equal(results[2][0], FACE)  # held unchanged
    eased = [float(points[0, 0]) for points, _ in results[3:6]]
    assert 10 > eased[0] > eased[1] > eased[2] > 0  # moving steadily to neutral
    assert eased[1] == pytest.approx(5.0)  # halfway through the ease: halfway there
    np.testing.assert_array_equal(results[6][0], NEUTRAL)
    np.testing.assert_array_equal(results[8][0], OTHER_FACE)


def test_a_short_miss_goes_unnoticed_and_the_clock_restarts_when_seen():
    policy = FaceLossPolicy(NEUTRAL, FaceLossSettings(hold_seconds=0.5, ease_seconds=0.5))
    states = [state for _, state in run(policy, [(0.0, FACE), (0.3, None), (0.4, FACE),
                                                 (0.6, None), (0.85, None)])]
    assert states == [FaceState.TRACKING, FaceState.HOLDING, FaceState.TRACKING,
                      FaceState.HOLDING, FaceState.HOLDING]


def test_switching_avatar_eases_to_the_new_neutral():
    policy = FaceLossPolicy(NEUTRAL, FaceLossSettings(hold_seconds=0.0, ease_seconds=0.1))
    policy.update(FACE, 0.0)
    policy.set_neutral(OTHER_FACE)
    points, state = policy.update(None, 1.0)
    assert state is FaceState.NEUTRAL
    np.testing.assert_array_equal(points, OTHER_FACE)
