"""The warp-guided generator: G also sees the nearest enrollment frame warped to the target."""

import dataclasses

import numpy as np
import torch

from tests.conftest import write_rgb
from tests.train.test_meta import fast_settings
from vcam.avatar import load_avatar
from vcam.cli import main
from vcam.data.clips import open_dataset
from vcam.enroll import reconstruction_error
from vcam.models.config import get_config
from vcam.models.generator import Generator, PersonalisedGenerator
from vcam.train.episodes import Episodes
from vcam.train.run import run_meta_training
from vcam.warp import WarpGuide

WARP_TINY = dataclasses.replace(get_config("tiny"), generator="warp")


def test_guide_warps_the_nearest_enrollment_frame(tiny_dataset):
    clip = open_dataset(tiny_dataset).clips[0]
    crops = np.stack([clip.frame(i) for i in (0, 8, 15)])
    landmarks = clip.landmarks[[0, 8, 15]]
    guide = WarpGuide(crops, landmarks)
    assert guide.nearest(landmarks[1] + 0.3) == 1
    assert guide.nearest(landmarks[1], exclude=1) != 1
    # A target equal to an enrollment frame's landmarks reproduces that frame.
    assert np.abs(guide.image_for(landmarks[2]).astype(int) - crops[2]).max() <= 1
    single = WarpGuide(crops[:1], landmarks[:1])
    assert single.nearest(landmarks[2], exclude=0) == 0


def test_warp_episodes_carry_the_warped_target(tiny_dataset):
    clips = open_dataset(tiny_dataset).clips
    batch = Episodes(clips, shots=2, size=64, batch=2, seed=3, warp=True).draw(0)
    assert batch["target_warp"].shape == (2, 3, 64, 64)
    # The warp resembles the target far more than a blank frame does.
    error = (batch["target_warp"] - batch["target"]).abs().mean()
    assert float(error) < 0.5 * float((batch["target"] + 1).abs().mean())


def test_tiny_warp_guided_run_lowers_the_l1(tiny_dataset, tmp_path):
    run_meta_training(tiny_dataset, tmp_path / "run", WARP_TINY,
                      fast_settings(steps=30, checkpoint_every=30), quiet=True)
    rows = (tmp_path / "run" / "log.tsv").read_text().splitlines()
    column = rows[0].split("\t").index("l1")
    l1 = [float(row.split("\t")[column]) for row in rows[1:]]
    assert np.mean(l1[-5:]) < 0.6 * np.mean(l1[:3])


def test_warp_guided_avatar_exports_with_parity(tmp_path, tiny_dataset, vcam_home,
                                                astronaut_image):
    from engines.export import ExportOptions, export_onnx

    run = tmp_path / "run"
    run_meta_training(tiny_dataset, run, WARP_TINY, fast_settings(steps=2), quiet=True)
    photo = write_rgb(tmp_path / "me.png", astronaut_image)
    assert main(["enroll", str(photo), "--name", "w", "--model", str(run), "--steps", "2",
                 "--vgg", "none"]) == 0
    avatar = load_avatar(vcam_home / "avatars" / "w.avatar.safetensors")
    assert avatar.config.generator == "warp"
    assert np.isfinite(reconstruction_error(avatar))
    inputs = np.random.default_rng(0).uniform(-1, 1, (3, 6, 64, 64)).astype(np.float32)
    result = export_onnx(avatar.generator(), tmp_path / "w.onnx", inputs, ExportOptions())
    assert result.path.is_file()


def test_generator_takes_six_channels_in_the_warp_variant():
    generator = Generator(WARP_TINY)
    personalised = PersonalisedGenerator(generator, torch.zeros(1, generator.adain_param_count))
    assert personalised(torch.zeros(2, 6, 64, 64)).shape == (2, 3, 64, 64)
