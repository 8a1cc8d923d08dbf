"""The shipped default model and the newcomer's first command: a real avatar, not noise."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from tests.conftest import REPO
from vcam.avatar import load_avatar
from vcam.enroll import reconstruction_error
from vcam.images import to_image, to_tensor
from vcam.landmarks.raster import rasterise
from vcam.landmarks.shape_basis import load_shape_basis
from vcam.models.generator import generator_input
from vcam.models.store import default_model_path, load_models, shipped_shape_basis_path
from vcam.runtime.demo import DemoAnimation
from vcam.warp import WarpGuide

MAX_SHIPPED_BYTES = 50 * 1000 * 1000


def test_default_model_ships_with_its_card_and_shape_basis():
    path = default_model_path()
    assert path.stat().st_size <= MAX_SHIPPED_BYTES
    metadata = json.loads(path.with_suffix(".json").read_text())
    assert metadata["format"] == "vcam-model" and metadata["config"]["image_size"] == 256
    validation = set(metadata["split"]["validation"])
    assert validation and not validation & set(metadata["split"]["train"])
    card = (path.parent / "MODEL_CARD.md").read_text()
    assert str(metadata["step"]) in card and metadata["config"]["generator"] in card
    basis = load_shape_basis(shipped_shape_basis_path())
    assert basis.samples == metadata["data"]["train"]["frames"]
    models = load_models(path)
    assert models.config.generator == metadata["config"]["generator"]


@pytest.mark.slow
def test_main_job_renders_the_built_in_avatar_from_the_demo(tmp_path):
    """The README's first command (with a frame limit), in a fresh vcam home."""
    out = tmp_path / "out.mp4"
    environment = {"VCAM_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "2",
                   "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, str(REPO / "run_vcam.py"), "--input", "demo",
                             "--sink", f"file:{out}", "--max-frames", "12", "--json"],
                            capture_output=True, text=True, timeout=600, env=environment,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["frames_output"] == 12
    cached = list((tmp_path / "home" / "cache").glob("astronaut-*.avatar.safetensors"))
    assert len(cached) == 1
    avatar = load_avatar(cached[0])
    # Driven by its own enrollment landmarks it gives back its photo ...
    assert reconstruction_error(avatar) < 0.15
    # ... and driven by a turned, talking pose of the demo, a coherent face in that pose:
    # close to the photo warped there, far from noise.
    pose = DemoAnimation(avatar.neutral_landmarks, avatar.config.image_size).points_at(1.3)
    warped = WarpGuide(avatar.crops, avatar.landmarks).image_for(pose)
    rendered = render(avatar, pose)
    noise = np.random.default_rng(0).integers(0, 256, warped.shape, dtype=np.uint8)
    assert grey_ssim(rendered, warped) > 0.5 > grey_ssim(noise, warped)


def render(avatar, points: np.ndarray) -> np.ndarray:
    size = avatar.config.image_size
    landmark_image = to_tensor(rasterise(points, size))[None]
    warped = None
    if avatar.config.generator == "warp":
        guide = WarpGuide(avatar.crops, avatar.landmarks)
        warped = to_tensor(guide.image_for(points))[None]
    with torch.no_grad():
        return to_image(avatar.generator()(generator_input(landmark_image, warped))[0])


def grey_ssim(first: np.ndarray, second: np.ndarray) -> float:
    return float(structural_similarity(cv2.cvtColor(first, cv2.COLOR_RGB2GRAY),
                                       cv2.cvtColor(second, cv2.COLOR_RGB2GRAY)))
