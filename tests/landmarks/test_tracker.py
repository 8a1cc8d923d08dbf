import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vcam.data.synthetic import moving_face_frames
from vcam.landmarks.face import box_overlap
from vcam.landmarks.tracker import FaceTracker, OneEuroFilter, TrackerSettings


class CountingDetector:
    """The real detector, counting how often each of its methods runs."""

    def __init__(self, detector):
        self.detector = detector
        self.name = detector.name
        self.full = self.near = self.fits = 0

    def detect(self, image, near=None):
        if near is None:
            self.full += 1
        else:
            self.near += 1
        return self.detector.detect(image, near=near)

    def fit(self, image, box):
        self.fits += 1
        return self.detector.fit(image, box)


def test_tracker_detects_far_less_than_once_per_frame(dlib_detector):
    frames = list(moving_face_frames(60))
    counting = CountingDetector(dlib_detector)
    tracker = FaceTracker(counting, TrackerSettings(redetect_every=10, smooth=False))
    tracked = [tracker.update(frame, index / 30) for index, frame in enumerate(frames)]
    assert all(face is not None for face in tracked)
    assert counting.full == 1
    assert counting.full + counting.near <= 60 // 10 + 1
    assert tracker.detections == counting.full + counting.near
    # Tracked landmarks agree with a fresh detection on every frame.
    for frame, face in zip(frames[::7], tracked[::7]):
        detected = dlib_detector.detect(frame)[0]
        assert np.abs(detected.points - face.points).mean() < 2.0


def test_lost_face_returns_none_then_recovers(dlib_detector):
    frames = list(moving_face_frames(12))
    blank = np.full_like(frames[0], 96)
    counting = CountingDetector(dlib_detector)
    tracker = FaceTracker(counting, TrackerSettings(redetect_every=3))
    results = [tracker.update(frame, index / 30) for index, frame in enumerate(
        frames[:6] + [blank] * 5 + frames[6:])]
    assert all(face is not None for face in results[:6])
    # The face vanishes: within one re-detection interval the tracker says so.
    assert all(face is None for face in results[8:11])
    # As soon as it returns, a full detection finds it on that very frame.
    assert all(face is not None for face in results[11:])
    assert counting.full >= 4


def test_smoothing_steadies_a_still_face_and_follows_motion():
    rng = np.random.default_rng(1)
    still = np.full((68, 2), 100.0)
    smoother = OneEuroFilter(min_cutoff=1.0, beta=0.05)
    noisy = [still + rng.normal(0, 1.0, still.shape) for _ in range(90)]
    smoothed = np.array([smoother(value, index / 30) for index, value in enumerate(noisy)])
    assert smoothed[30:].std(axis=0).mean() < 0.5 * np.array(noisy[30:]).std(axis=0).mean()
    # A large, fast move is followed closely (beta raises the cutoff with speed).
    moved = [smoother(still + 60.0, (90 + step) / 30) for step in range(8)]
    assert np.abs(moved[-1] - (still + 60.0)).max() < 3.0


def test_filter_ignores_repeated_timestamps():
    smoother = OneEuroFilter()
    first = smoother(np.zeros(3), 1.0)
    again = smoother(np.ones(3), 1.0)
    np.testing.assert_array_equal(first, again)


@settings(max_examples=50, deadline=None)
@given(st.floats(0, 100), st.floats(0, 100), st.floats(1, 50), st.floats(1, 50))
def test_overlap_is_symmetric_and_bounded(x, y, width, height):
    a = (x, y, x + width, y + height)
    b = (x + width / 2, y, x + 1.5 * width, y + height)
    assert 0.0 <= box_overlap(a, b) <= 1.0
    assert box_overlap(a, b) == box_overlap(b, a)
    assert abs(box_overlap(a, a) - 1.0) < 1e-9
