"""The guided snapshot: prompts judged from landmarks, and `vcam enroll --snapshot` end to end
on a recorded clip fed as the camera."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from vcam.cli import main
from vcam.coverage import FaceFeatures, coverage_summary, face_features
from vcam.data.synthetic import astronaut, write_video
from vcam.runtime.demo import close_eyes, head_depth, open_mouth, turn_head
from vcam.snapshot import PROMPTS, PromptProgress, guidance_image
from vcam.warp import PiecewiseAffineWarp

NEUTRAL = FaceFeatures(mouth_open=0.02, mouth_width=0.6, eye_open=0.3, yaw=0.0, pitch=0.3)
# What a person does for each prompt, as features.
DOING = {
    "neutral": NEUTRAL,
    "open": FaceFeatures(0.3, 0.6, 0.3, 0.0, 0.3),
    "smile": FaceFeatures(0.05, 0.7, 0.28, 0.0, 0.3),
    "eyes": FaceFeatures(0.02, 0.6, 0.05, 0.0, 0.3),
    "left": FaceFeatures(0.02, 0.6, 0.3, 0.15, 0.3),
    "right": FaceFeatures(0.02, 0.6, 0.3, -0.15, 0.3),
    "up": FaceFeatures(0.02, 0.6, 0.3, 0.0, 0.22),
    "down": FaceFeatures(0.02, 0.6, 0.3, 0.0, 0.38),
}


def test_each_prompt_is_met_by_doing_it_and_skipped_after_its_time():
    progress = PromptProgress(frames_per_prompt=10, hold_frames=3)
    for prompt in PROMPTS:
        assert progress.prompt == prompt
        frames = 0
        while progress.prompt == prompt:
            # The eyes never close: that prompt runs out of time; every other one is met.
            progress.update(NEUTRAL if prompt.key == "eyes" else DOING[prompt.key])
            frames += 1
        assert frames == (10 if prompt.key == "eyes" else 3)
    assert progress.done
    assert progress.met == {prompt.key: prompt.key != "eyes" for prompt in PROMPTS}


def test_a_neutral_face_meets_no_other_prompt_and_no_face_counts_as_time():
    progress = PromptProgress(frames_per_prompt=4, hold_frames=2)
    for _ in range(2):
        progress.update(NEUTRAL)
    assert progress.met == {"neutral": True}
    for _ in range(4):
        progress.update(None)
    for _ in range(4 * (len(PROMPTS) - 2)):
        progress.update(NEUTRAL)
    assert progress.done and sum(progress.met.values()) == 1
    image = guidance_image(np.zeros((240, 320, 3), np.uint8), [], progress)
    assert image.shape == (240, 320, 3) and image.any()


def prompt_segments(photo: np.ndarray, points: np.ndarray) -> list[np.ndarray]:
    """The astronaut doing each prompt in turn, 10 frames each: her landmarks moved as the
    demo animation moves them and the photo warped onto them."""
    warp = PiecewiseAffineWarp(points, photo.shape[0])
    depth, height = head_depth(points), float(np.ptp(points[:, 1]))
    frames = []
    for key in (prompt.key for prompt in PROMPTS):
        for step in range(10):
            face = points.copy()
            if key == "open":
                open_mouth(face, (0.10 + 0.01 * step) * height)
            if key == "smile":
                face[[48, 60], 0] -= 0.06 * height
                face[[54, 64], 0] += 0.06 * height
                face[[48, 54, 60, 64], 1] -= 0.03 * height
            if key == "eyes":
                close_eyes(face, 1.0)
            yaw = {"left": 0.35, "right": -0.35}.get(key, 0.0)
            pitch = {"up": 0.3, "down": -0.3}.get(key, 0.0)
            if yaw or pitch:
                face = turn_head(face, depth, yaw, pitch)
            frames.append(warp.warp(photo, face))
    return frames


@pytest.fixture(scope="module")
def prompted_clip(tmp_path_factory, request):
    detector = request.getfixturevalue("dlib_detector")
    photo = np.ascontiguousarray(astronaut()[:320, 64:384])  # her head, not the mission patch
    points = detector.detect(photo)[0].points.astype(np.float64)
    path = tmp_path_factory.mktemp("snapshot") / "prompted.mp4"
    write_video(str(path), iter(prompt_segments(photo, points)), fps=25.0)
    return path


def test_guided_snapshot_from_a_recorded_clip_fed_as_the_camera(
        prompted_clip, vcam_home, tiny_model, monkeypatch, capsys):
    import vcam.runtime.capture as capture
    from vcam.avatar import load_avatar

    opened = []

    def open_recorded_clip(index: int):
        opened.append(index)
        return cv2.VideoCapture(str(prompted_clip))

    monkeypatch.setattr(capture, "open_opencv_camera", open_recorded_clip)
    assert main(["enroll", "--snapshot", "--camera", "0", "--no-preview", "--name", "guided",
                 "--model", str(tiny_model), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert opened and opened[0] == 0
    assert result["prompts_met"] == {prompt.key: True for prompt in PROMPTS}
    assert result["shots"] == 8
    avatar = load_avatar(vcam_home / "avatars" / "guided.avatar.safetensors")
    assert avatar.crops.shape == (8, 64, 64, 3) and avatar.landmarks.shape == (8, 68, 2)
    features = [face_features(points) for points in avatar.landmarks]
    # The chosen frames cover the prompts: an open mouth, shut-ish eyes, both turns and nods,
    # and the neutral face first.
    coverage = coverage_summary(avatar.landmarks)
    assert coverage.mouth_open[1] > 0.2
    assert coverage.eye_open[0] < 0.6 * coverage.eye_open[1]
    assert coverage.yaw[0] < -0.1 < 0.1 < coverage.yaw[1]
    assert coverage.pitch[1] - coverage.pitch[0] > 0.1
    assert abs(features[0].yaw) < 0.05 and features[0].mouth_open < 0.2
    assert result["coverage"] == coverage.to_dict()
