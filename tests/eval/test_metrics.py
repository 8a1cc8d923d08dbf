"""Per-frame metrics of self-reenactment and their aggregation."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from vcam.eval.metrics import (
    PSNR_CAP_DB,
    IdentityScorer,
    clip_means,
    mouth_opening_error,
    overall_means,
    pose_error,
    psnr,
    redetect_landmarks,
    ssim,
    temporal_flicker,
)

SIZE = 256


@pytest.fixture(scope="module")
def scorer(dlib_detector) -> IdentityScorer:
    return IdentityScorer(dlib_detector)


def with_noise(image: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def test_identical_frames_score_perfectly(face):
    image = face[0]
    assert ssim(image, image.copy()) == pytest.approx(1.0)
    assert psnr(image, image.copy()) == math.inf


def test_psnr_of_a_known_error():
    real = np.full((32, 32, 3), 128, np.uint8)
    rendered = real.copy()
    rendered[::2] += 10
    rendered[1::2] -= 10  # every pixel off by 10 grey levels: MSE 100
    assert psnr(rendered, real) == pytest.approx(10 * math.log10(255**2 / 100))


def test_ssim_falls_as_noise_grows(face):
    image = face[0]
    slight, heavy = ssim(with_noise(image, 5), image), ssim(with_noise(image, 40), image)
    assert 1.0 > slight > heavy > 0.0


def test_frames_of_different_shapes_are_refused(face):
    with pytest.raises(ValueError, match="differ in shape"):
        ssim(face[0], face[0][:128])
    with pytest.raises(ValueError, match="RGB uint8"):
        psnr(face[0].astype(np.float32), face[0])


def test_pose_error_of_identical_landmarks_is_zero(face):
    assert pose_error(face[1], face[1].copy()) == 0.0


def test_pose_error_of_a_uniform_shift_is_the_shift_over_the_eye_distance(face):
    points = face[1]
    inter_ocular = np.linalg.norm(points[36].astype(np.float64) - points[45])
    shifted = points + np.float32([3.0, 4.0])  # 5 px for every point
    assert pose_error(points, shifted) == pytest.approx(5.0 / inter_ocular, rel=1e-5)


def test_pose_error_needs_matching_landmarks(face):
    with pytest.raises(ValueError, match="landmark arrays"):
        pose_error(face[1], face[1][:60])


def test_mouth_opening_error_is_how_much_more_or_less_the_lips_part(face):
    points = face[1].astype(np.float64)
    inter_ocular = np.linalg.norm(points[36] - points[45])
    opened = points.copy()
    opened[[65, 66, 67], 1] += 0.1 * inter_ocular
    assert mouth_opening_error(points, points.copy()) == 0.0
    assert mouth_opening_error(points, opened) == pytest.approx(0.1)
    assert mouth_opening_error(opened, points) == pytest.approx(0.1)  # shut as much as open
    moved = opened + 7.0  # the same face elsewhere: only the lips' parting counts
    assert mouth_opening_error(opened, moved) == pytest.approx(0.0, abs=1e-9)


def test_redetection_finds_the_rendered_face(face, dlib_detector):
    image, points = face
    found = redetect_landmarks(dlib_detector, image, points)
    assert found.detected
    assert pose_error(points, found.points) < 0.02
    assert mouth_opening_error(points, found.points) < 0.02


def test_redetection_without_a_face_fits_inside_the_driving_box(face, dlib_detector):
    points = face[1]
    found = redetect_landmarks(dlib_detector, np.full((SIZE, SIZE, 3), 90, np.uint8), points)
    assert not found.detected
    assert found.points.shape == (68, 2)
    low, high = points.min(axis=0), points.max(axis=0)
    margin = 0.25 * (high - low)
    assert (found.points > low - margin).all() and (found.points < high + margin).all()


def moving_clip(image: np.ndarray, count: int = 5) -> list[np.ndarray]:
    """``image`` drifting right by 2 px per frame."""
    return [np.roll(image, 2 * index, axis=1) for index in range(count)]


def test_flicker_of_a_clip_against_itself_is_one(face):
    clip = moving_clip(face[0])
    assert temporal_flicker(clip, clip) == pytest.approx(1.0)


def test_a_noisier_clip_flickers_more(face):
    clip = moving_clip(face[0])
    noisy = [with_noise(frame, 12, seed) for seed, frame in enumerate(clip)]
    assert temporal_flicker(noisy, clip) > 1.5
    assert temporal_flicker(clip, noisy) < 1.0


def test_flicker_is_undefined_without_real_motion(face):
    still = [face[0]] * 3
    assert math.isnan(temporal_flicker(moving_clip(face[0], 3), still))
    assert math.isnan(temporal_flicker([face[0]], [face[0]]))
    with pytest.raises(ValueError, match="differ in length"):
        temporal_flicker(still, still[:2])


def test_csim_of_a_face_with_itself_is_one(face, scorer):
    image = face[0]
    assert scorer.similarity(image, image.copy()) == pytest.approx(1.0, abs=1e-6)


def test_csim_drops_for_a_heavily_altered_face(face, scorer):
    image = face[0]
    real = scorer.describe(image)
    assert real.detected
    blurred = cv2.GaussianBlur(image, (0, 0), 8)
    assert not scorer.describe(blurred, real.box).detected  # scored in the real face's box
    altered = scorer.similarity_to(blurred, real)
    assert altered < 0.97
    assert scorer.similarity(blurred, image) == pytest.approx(altered)
    assert scorer.similarity_to(np.full_like(image, 128), real) < altered


def test_means_per_clip_then_over_clips():
    rows = [
        {"clip": "a", "method": "warp", "ssim": 0.5, "psnr": math.inf, "csim": math.nan},
        {"clip": "a", "method": "warp", "ssim": 0.7, "psnr": 30.0, "csim": math.nan},
        {"clip": "b", "method": "warp", "ssim": 0.9, "psnr": 20.0, "csim": 0.8},
        {"clip": "b", "method": "warp", "ssim": math.nan, "psnr": 20.0, "csim": 0.6},
        {"clip": "b", "method": "warp", "ssim": math.nan, "psnr": 20.0, "csim": 0.7},
    ]
    per_clip = clip_means(rows)
    assert list(per_clip) == ["a", "b"]
    assert per_clip["a"]["ssim"] == pytest.approx(0.6)
    assert per_clip["a"]["psnr"] == pytest.approx((PSNR_CAP_DB + 30.0) / 2)
    assert math.isnan(per_clip["a"]["csim"])
    assert per_clip["b"] == pytest.approx({"ssim": 0.9, "psnr": 20.0, "csim": 0.7})
    per_clip["a"]["flicker"], per_clip["b"]["flicker"] = 1.2, math.nan
    overall = overall_means(per_clip.values())
    assert overall == pytest.approx({"ssim": 0.75, "psnr": (65.0 + 20.0) / 2, "csim": 0.7,
                                     "flicker": 1.2})


def test_means_of_chosen_metrics_and_of_nothing():
    rows = [{"clip": 1, "frame": 0, "ssim": np.float32(0.5), "detected": True},
            {"clip": 1, "frame": 1, "ssim": np.float32(0.7), "detected": False}]
    assert set(clip_means(rows)[1]) == {"frame", "ssim"}
    assert clip_means(rows, metrics=["ssim"]) == {1: pytest.approx({"ssim": 0.6})}
    assert clip_means([]) == {}
    assert overall_means([]) == {}
