import numpy as np
import pytest

from calibration.sets import (
    INNER_LIP,
    NUM_LANDMARKS,
    OUTER_LIP,
    CalibrationSetSpec,
    Expression,
    HeadPose,
    apply_expression,
    apply_pose,
    build_calibration_set,
    extreme_sweep,
    iterate_batches,
    landmark_images,
    neutral_face,
    sample_clip_landmarks,
    sweep,
    sweep_landmarks,
)
from vcam.landmarks.raster import rasterise

SIZE = 64


def mouth_box(points: np.ndarray, size: int, pad: int = 4) -> tuple[slice, slice]:
    """Rows and columns around the lips of ``points``, padded."""
    lips = np.concatenate([points[OUTER_LIP], points[INNER_LIP]])
    low = np.clip(np.floor(lips.min(axis=0)).astype(int) - pad, 0, size)
    high = np.clip(np.ceil(lips.max(axis=0)).astype(int) + pad, 0, size)
    return slice(low[1], high[1]), slice(low[0], high[0])


def test_set_has_the_shape_dtype_and_range_the_networks_take():
    spec = CalibrationSetSpec(size=SIZE, count=12, seed=3)
    images = build_calibration_set(neutral_face(SIZE), rasterise, spec)
    assert images.shape == (12, 3, SIZE, SIZE) and images.dtype == np.float32
    assert images.min() == -1.0 and images.max() <= 1.0 and images.max() > 0.9


def test_same_seed_same_set_other_seed_other_set():
    spec = CalibrationSetSpec(size=SIZE, count=16, seed=7)
    first = build_calibration_set(neutral_face(SIZE), rasterise, spec)
    again = build_calibration_set(neutral_face(SIZE), rasterise, spec)
    other = build_calibration_set(neutral_face(SIZE), rasterise,
                                  CalibrationSetSpec(size=SIZE, count=16, seed=8))
    np.testing.assert_array_equal(first, again)
    fixed = len(extreme_sweep(spec.ranges))
    np.testing.assert_array_equal(first[:fixed], other[:fixed])  # the extremes are fixed
    assert not np.array_equal(first[fixed:], other[fixed:])  # the random mixtures are not


def test_sweep_starts_with_neutral_and_every_extreme():
    chosen = sweep(20, seed=0, ranges=CalibrationSetSpec(size=SIZE).ranges)
    poses = [pose for pose, _ in chosen[:10]]
    expressions = [expression for _, expression in chosen[:10]]
    assert chosen[0] == (HeadPose(), Expression())
    for axis in ("yaw", "pitch", "roll"):
        values = [getattr(pose, axis) for pose in poses]
        assert min(values) < 0 < max(values), axis
    for part in ("mouth_open", "blink", "brow_raise"):
        assert max(getattr(expression, part) for expression in expressions) == 1.0, part


def test_open_mouth_changes_the_mouth_and_nothing_above_the_eyes():
    neutral = neutral_face(SIZE)
    opened = apply_expression(neutral, Expression(mouth_open=1.0))
    neutral_image = landmark_images(neutral[None], SIZE, rasterise)[0]
    open_image = landmark_images(opened[None], SIZE, rasterise)[0]
    changed = np.abs(open_image - neutral_image).sum(axis=0) > 0
    rows, cols = mouth_box(opened, SIZE)
    assert changed[rows, cols].sum() > 20
    below_the_eyes = int(neutral[36:48, 1].max()) + 2
    assert not changed[:below_the_eyes].any()


def test_blink_collapses_the_eyelids_onto_the_eye_corners():
    neutral = neutral_face(SIZE)
    closed = apply_expression(neutral, Expression(blink=1.0))
    for eye in (slice(36, 42), slice(42, 48)):
        assert np.ptp(closed[eye, 1]) < 1e-6 < np.ptp(neutral[eye, 1])
    np.testing.assert_array_equal(closed[:36], neutral[:36])


def test_brow_raise_moves_only_the_brows_up():
    neutral = neutral_face(SIZE)
    raised = apply_expression(neutral, Expression(brow_raise=1.0))
    assert (raised[17:27, 1] < neutral[17:27, 1]).all()
    np.testing.assert_array_equal(np.delete(raised, np.s_[17:27], 0),
                                  np.delete(neutral, np.s_[17:27], 0))


@pytest.mark.parametrize("pose", [HeadPose(yaw=30), HeadPose(pitch=-20), HeadPose(roll=15),
                                  HeadPose(shift_x=0.05, scale=1.1)])
def test_poses_move_the_face_but_keep_it_in_the_crop(pose):
    neutral = neutral_face(SIZE)
    moved = apply_pose(neutral, pose, SIZE)
    assert moved.shape == (NUM_LANDMARKS, 2)
    assert np.abs(moved - neutral).max() > 1.0
    assert moved.min() >= 0 and moved.max() < SIZE


def test_yaw_narrows_the_face_and_slides_the_nose_towards_the_turn():
    neutral = neutral_face(SIZE)
    turned = apply_pose(neutral, HeadPose(yaw=30), SIZE)
    assert np.ptp(turned[:17, 0]) < np.ptp(neutral[:17, 0])
    nose_offset = turned[30, 0] - turned[:17, 0].mean()
    assert nose_offset > neutral[30, 0] - neutral[:17, 0].mean()


def test_clip_landmarks_are_added_and_rescaled():
    rng = np.random.default_rng(0)
    clips = [rng.uniform(40, 200, (5, 68, 2)).astype(np.float32),
             rng.uniform(40, 200, (3, 68, 2)).astype(np.float32)]
    sampled = sample_clip_landmarks(clips, 6, seed=1, scale=0.25)
    pool = np.concatenate(clips) * 0.25
    assert sampled.shape == (6, 68, 2)
    assert all(any(np.array_equal(face, candidate) for candidate in pool) for face in sampled)
    spec = CalibrationSetSpec(size=SIZE, count=4, seed=0, clip_count=6)
    images = build_calibration_set(neutral_face(SIZE), rasterise, spec, clips, clip_scale=0.25)
    assert images.shape == (10, 3, SIZE, SIZE)


def test_sweep_landmarks_reject_a_wrong_shape_and_batches_are_full():
    with pytest.raises(ValueError, match="68, 2"):
        sweep_landmarks(np.zeros((5, 2)), CalibrationSetSpec(size=SIZE))
    images = np.zeros((7, 3, 4, 4), np.float32)
    batches = list(iterate_batches(images, 3))
    assert [len(batch) for batch in batches] == [3, 3]
