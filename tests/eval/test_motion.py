"""The kind of motion of an evaluated frame, from constructed landmark sets."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.ibug import LOWER_INNER_LIP
from calibration.sets import Expression, HeadPose, apply_expression, apply_pose, neutral_face
from vcam.eval.motion import (
    LARGE_POSE,
    LARGE_POSE_THRESHOLD,
    OPEN_MOUTH,
    OPEN_MOUTH_THRESHOLD,
    SMALL_MOTION,
    motion_label,
    motion_labels,
    mouth_opening,
    pose_change,
    procrustes_residual,
)

SIZE = 256


@pytest.fixture(scope="module")
def neutral() -> np.ndarray:
    return neutral_face(SIZE).astype(np.float64)


def with_open_mouth(points: np.ndarray, gap: float) -> np.ndarray:
    """The lower inner lip moved down by ``gap`` inter-ocular distances."""
    moved = points.copy()
    moved[list(LOWER_INNER_LIP), 1] += gap * np.linalg.norm(points[36] - points[45])
    return moved


def similar(points: np.ndarray, degrees: float, scale: float, shift: tuple) -> np.ndarray:
    angle = np.radians(degrees)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return scale * points @ rotation.T + np.array(shift)


def test_the_neutral_face_is_small_motion_against_itself(neutral):
    assert mouth_opening(neutral) < OPEN_MOUTH_THRESHOLD
    assert pose_change(neutral, neutral[None]) == pytest.approx(0.0, abs=1e-9)
    assert motion_label(neutral, neutral[None]) == SMALL_MOTION


def test_rotating_scaling_and_shifting_in_the_image_plane_is_small_motion(neutral):
    moved = similar(neutral, 25.0, 0.8, (30.0, -12.0))
    assert pose_change(moved, neutral[None]) == pytest.approx(0.0, abs=1e-6)
    assert motion_label(moved, neutral[None]) == SMALL_MOTION
    rolled = apply_pose(neutral, HeadPose(roll=15, scale=1.1, shift_x=0.05), SIZE)
    assert motion_label(rolled, neutral[None]) == SMALL_MOTION


def test_procrustes_never_reflects(neutral):
    mirrored = neutral * np.array([-1.0, 1.0])
    assert procrustes_residual(mirrored[:48], neutral[:48]) > 1.0


def test_opening_the_mouth_is_open_mouth(neutral):
    opened = with_open_mouth(neutral, OPEN_MOUTH_THRESHOLD + 0.1)
    assert mouth_opening(opened) == pytest.approx(mouth_opening(neutral) + 0.1
                                                  + OPEN_MOUTH_THRESHOLD)
    assert motion_label(opened, neutral[None]) == OPEN_MOUTH
    assert motion_label(with_open_mouth(neutral, 0.02), neutral[None]) == SMALL_MOTION


def test_an_open_jaw_is_not_mistaken_for_a_pose_change(neutral):
    opened = apply_expression(neutral, Expression(mouth_open=1.0))
    assert motion_label(opened, neutral[None]) == OPEN_MOUTH


@pytest.mark.parametrize("pose", [HeadPose(yaw=30), HeadPose(yaw=-25), HeadPose(pitch=25)])
def test_turning_the_head_is_large_pose(neutral, pose):
    turned = apply_pose(neutral, pose, SIZE)
    assert pose_change(turned, neutral[None]) > LARGE_POSE_THRESHOLD
    assert motion_label(turned, neutral[None]) == LARGE_POSE
    assert motion_label(with_open_mouth(turned, 0.3), neutral[None]) == LARGE_POSE


def test_a_different_face_shape_is_large_pose(neutral):
    wider = neutral.copy()
    wider[:17, 0] = neutral[:17, 0].mean() + 1.5 * (neutral[:17, 0] - neutral[:17, 0].mean())
    assert motion_label(wider, neutral[None]) == LARGE_POSE


def test_the_closest_enrollment_frame_decides(neutral):
    turned = apply_pose(neutral, HeadPose(yaw=30), SIZE)
    enrollment = np.stack([neutral, similar(turned, 10.0, 1.2, (5.0, 5.0))])
    assert pose_change(turned, enrollment) == pytest.approx(0.0, abs=1e-6)
    assert motion_labels([turned, neutral], enrollment) == [SMALL_MOTION, SMALL_MOTION]
    assert motion_labels([turned], neutral[None]) == [LARGE_POSE]


def test_landmarks_of_the_wrong_shape_are_refused(neutral):
    with pytest.raises(ValueError, match="68, 2"):
        motion_label(neutral[:60], neutral[None])


def test_a_mouth_opening_beyond_the_nearest_enrollment_frame_is_its_own_subset(neutral):
    from vcam.eval.motion import (
        ALL_FRAMES,
        BEYOND_SOURCE_OPENING,
        BEYOND_TARGET_OPENING,
        MOUTH_BEYOND,
        frame_subsets,
        mouth_opens_beyond_enrollment,
    )

    closed = with_open_mouth(neutral, -mouth_opening(neutral))  # gap 0
    target = with_open_mouth(closed, BEYOND_TARGET_OPENING + 0.05)
    assert mouth_opens_beyond_enrollment(target, closed[None])
    assert frame_subsets(target, closed[None]) == [ALL_FRAMES, MOUTH_BEYOND]
    # Barely parted lips are not "open"; a source that is itself half open is not "closed".
    assert not mouth_opens_beyond_enrollment(with_open_mouth(closed, 0.09), closed[None])
    half_open = with_open_mouth(closed, BEYOND_SOURCE_OPENING + 0.01)
    assert not mouth_opens_beyond_enrollment(target, half_open[None])
    # The nearest enrollment frame decides, as for the warp's source: an open-mouthed frame
    # that is far away in pose does not rescue the target.
    turned_open = apply_pose(with_open_mouth(closed, 0.3), HeadPose(yaw=30), SIZE)
    assert mouth_opens_beyond_enrollment(target, np.stack([closed, turned_open]))
    wide = with_open_mouth(closed, 0.2)
    assert not mouth_opens_beyond_enrollment(target, np.stack([closed, wide]))
    assert frame_subsets(closed, closed[None]) == [ALL_FRAMES]


def test_a_turned_head_is_in_the_large_pose_subset(neutral):
    from vcam.eval.motion import ALL_FRAMES, frame_subsets

    turned = apply_pose(neutral, HeadPose(yaw=30), SIZE)
    assert frame_subsets(turned, neutral[None]) == [ALL_FRAMES, LARGE_POSE]
