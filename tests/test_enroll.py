import json

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import write_rgb
from vcam.avatar import load_avatar, save_avatar
from vcam.cli import main
from vcam.data.synthetic import moving_face_frames, write_video
from vcam.enroll import Photo, enroll, read_photo, reconstruction_error
from vcam.errors import UserError
from vcam.models.losses import LossWeights
from vcam.models.store import load_models
from vcam.train.finetune import FineTuneSettings


def quick_finetune(steps: int) -> FineTuneSettings:
    return FineTuneSettings(steps=steps, lr_generator=2e-3, lr_discriminator=2e-3,
                            identity_loss=False, losses=LossWeights(pixel=1.0, vgg=0.0))


def test_feed_forward_enrollment_renders_from_landmarks(tiny_model, dlib_detector,
                                                        astronaut_image):
    avatar, enrollment = enroll([Photo("astronaut", astronaut_image)], "astro",
                                load_models(tiny_model), dlib_detector, FineTuneSettings())
    assert avatar.crops.shape == (1, 64, 64, 3) and avatar.crops.dtype == np.uint8
    assert avatar.landmarks.shape == (1, 68, 2)
    assert enrollment.warnings == []
    assert avatar.info["finetune_steps"] == 0 and avatar.info["config_name"] == "tiny"
    marks = torch.zeros(1, 3, 64, 64)
    frame = avatar.generator()(marks)
    assert frame.shape == (1, 3, 64, 64) and float(frame.abs().max()) <= 1.0


def test_feed_forward_needs_only_the_embedder_and_generator(tiny_model, dlib_detector,
                                                            astronaut_image):
    photo = [Photo("astronaut", astronaut_image)]
    light = load_models(tiny_model, discriminator=False)
    assert light.discriminator is None
    assert not [key for key in light.state_dict() if key.startswith("discriminator.")]
    with_d, _ = enroll(photo, "a", load_models(tiny_model), dlib_detector, FineTuneSettings())
    without_d, _ = enroll(photo, "a", light, dlib_detector, FineTuneSettings())
    for key, value in with_d.generator_state.items():
        assert torch.equal(without_d.generator_state[key], value), key
    with pytest.raises(ValueError, match="discriminator"):
        enroll(photo, "a", light, dlib_detector, quick_finetune(1))


def test_fine_tuning_lowers_the_reconstruction_error(tiny_model, dlib_detector,
                                                     astronaut_image):
    photo = [Photo("astronaut", astronaut_image)]
    before, _ = enroll(photo, "a", load_models(tiny_model), dlib_detector, FineTuneSettings())
    after, _ = enroll(photo, "a", load_models(tiny_model), dlib_detector, quick_finetune(30))
    assert after.info["finetune_steps"] == 30
    assert reconstruction_error(after) < 0.7 * reconstruction_error(before)


def test_bundle_round_trips_bit_exactly(tiny_model, dlib_detector, astronaut_image, tmp_path):
    avatar, _ = enroll([Photo("astronaut", astronaut_image)], "astro",
                       load_models(tiny_model), dlib_detector, quick_finetune(2))
    path = save_avatar(avatar, tmp_path / "astro.avatar.safetensors")
    loaded = load_avatar(path)
    assert loaded.name == "astro" and loaded.config == avatar.config
    assert loaded.info == json.loads(json.dumps(avatar.info))
    np.testing.assert_array_equal(loaded.crops, avatar.crops)
    np.testing.assert_array_equal(loaded.landmarks, avatar.landmarks)
    assert loaded.generator_state.keys() == avatar.generator_state.keys()
    for key, value in avatar.generator_state.items():
        assert torch.equal(loaded.generator_state[key], value), key
    again = save_avatar(loaded, tmp_path / "again.avatar.safetensors")
    assert again.read_bytes() == path.read_bytes()
    marks = torch.rand(1, 3, 64, 64) * 2 - 1
    assert torch.equal(loaded.generator()(marks), avatar.generator()(marks))


@pytest.fixture(scope="module")
def bundle(tiny_model, dlib_detector, astronaut_image, tmp_path_factory):
    avatar, _ = enroll([Photo("astronaut", astronaut_image)], "astro",
                       load_models(tiny_model), dlib_detector, FineTuneSettings())
    return save_avatar(avatar, tmp_path_factory.mktemp("bundle") / "astro.avatar.safetensors")


@pytest.mark.parametrize("damage", ["flip_a_byte", "truncate", "rename_inside", "not_avatar",
                                    "empty"])
def test_damaged_bundles_are_refused_in_one_line(bundle, tmp_path, damage):
    data = bytearray(bundle.read_bytes())
    if damage == "flip_a_byte":
        data[-100] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "rename_inside":  # same length, so the header still parses
        data = data.replace(b"astro", b"astrX")
    elif damage == "not_avatar":
        data = bytearray(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    elif damage == "empty":
        data = bytearray()
    damaged = tmp_path / "damaged.avatar.safetensors"
    damaged.write_bytes(bytes(data))
    expected = {"flip_a_byte": "checksum", "rename_inside": "checksum",
                "truncate": "truncated or corrupt", "not_avatar": "truncated or corrupt",
                "empty": "truncated or corrupt"}[damage]
    with pytest.raises(UserError, match=expected) as raised:
        load_avatar(damaged)
    assert "\n" not in str(raised.value)


def test_other_format_versions_are_refused(bundle, tmp_path):
    text = bundle.read_bytes().replace(b'\\"version\\": 1', b'\\"version\\": 9')
    (tmp_path / "v9.avatar.safetensors").write_bytes(text)
    with pytest.raises(UserError, match="format 9"):
        load_avatar(tmp_path / "v9.avatar.safetensors")


def test_photo_problems_name_the_file(tmp_path, dlib_detector, tiny_model, astronaut_image):
    models = load_models(tiny_model)
    blank = write_rgb(tmp_path / "wall.png", np.full((300, 300, 3), 120, np.uint8))
    with pytest.raises(UserError, match=r"no face found in .*wall\.png"):
        enroll([read_photo(blank)], "x", models, dlib_detector, FineTuneSettings())
    small = write_rgb(tmp_path / "far.png", cv2.resize(astronaut_image, (200, 200)))
    with pytest.raises(UserError, match=r"far\.png is only \d+ px across: use a closer photo"):
        enroll([read_photo(small)], "x", models, dlib_detector, FineTuneSettings())
    (tmp_path / "notes.jpg").write_text("not an image")
    with pytest.raises(UserError, match="not a readable image"):
        read_photo(tmp_path / "notes.jpg")
    with pytest.raises(UserError, match="does not exist"):
        read_photo(tmp_path / "missing.jpg")


def test_several_faces_use_the_largest_with_a_warning(dlib_detector, tiny_model,
                                                      astronaut_image):
    group = np.full((400, 640, 3), 128, np.uint8)
    group[20:280, 20:280] = astronaut_image[0:260, 100:360]
    larger = cv2.resize(astronaut_image, None, fx=1.4, fy=1.4)
    group[20:380, 300:630] = larger[0:360, 150:480]
    avatar, enrollment = enroll([Photo("group.png", group)], "x", load_models(tiny_model),
                                dlib_detector, FineTuneSettings())
    assert enrollment.warnings == ["group.png shows 2 faces; using the largest"]
    alone, _ = enroll([Photo("one", larger)], "x", load_models(tiny_model), dlib_detector,
                      FineTuneSettings())
    assert np.abs(avatar.crops[0].astype(int) - alone.crops[0].astype(int)).mean() < 12


def cli_enroll(*args: str) -> int:
    return main(["enroll", *args])


def test_cli_enrolls_lists_and_refuses_to_overwrite(vcam_home, tiny_model, astronaut_image,
                                                    tmp_path, capsys):
    photo = write_rgb(tmp_path / "me.png", astronaut_image)
    assert cli_enroll(str(photo), "--name", "me", "--model", str(tiny_model), "--json") == 0
    result = json.loads(capsys.readouterr().out)
    path = vcam_home / "avatars" / "me.avatar.safetensors"
    assert result["path"] == str(path) and path.is_file()
    original = path.read_bytes()
    assert cli_enroll(str(photo), "--name", "me", "--model", str(tiny_model)) == 2
    assert "--force" in capsys.readouterr().err
    assert path.read_bytes() == original
    assert main(["avatars", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [entry["name"] for entry in listed] == ["me"]
    assert listed[0]["config"] == "tiny" and listed[0]["shots"] == 1


def test_interrupted_fine_tuning_leaves_nothing(vcam_home, tiny_model, astronaut_image,
                                                tmp_path, monkeypatch):
    import vcam.train.finetune as finetune

    def interrupt(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(finetune.FineTuner, "step", interrupt)
    photo = write_rgb(tmp_path / "me.png", astronaut_image)
    code = cli_enroll(str(photo), "--name", "me", "--model", str(tiny_model), "--steps", "5",
                      "--vgg", "none")
    assert code == 130
    assert not (vcam_home / "avatars").exists() or not any((vcam_home / "avatars").iterdir())


def test_enroll_from_a_clip_and_from_a_snapshot(vcam_home, tiny_model, tmp_path, capsys):
    clip = tmp_path / "me.mp4"
    write_video(str(clip), moving_face_frames(20, 640, 480, face_size=150))
    assert cli_enroll("--video", str(clip), "--frames", "3", "--name", "clip",
                      "--model", str(tiny_model), "--json") == 0
    assert json.loads(capsys.readouterr().out)["shots"] == 3
    # No webcam here: the snapshot path reads the same clip through OpenCV's capture.
    assert cli_enroll("--snapshot", "--camera", str(clip), "--no-preview", "--countdown", "0.2",
                      "--name", "snap",
                      "--model", str(tiny_model), "--json") == 0
    assert load_avatar(vcam_home / "avatars" / "snap.avatar.safetensors").crops.shape[0] == 1
    assert cli_enroll("--snapshot", "--camera", "7", "--no-preview", "--name", "x",
                      "--model", str(tiny_model)) == 2
    assert "no camera at 7" in capsys.readouterr().err


def test_missing_model_and_conflicting_sources_are_user_errors(vcam_home, tmp_path, capsys,
                                                               astronaut_image, tiny_model):
    photo = write_rgb(tmp_path / "me.png", astronaut_image)
    assert cli_enroll(str(photo), "--name", "me", "--model", str(tmp_path / "nope")) == 2
    assert "not a vcam model" in capsys.readouterr().err
    assert cli_enroll(str(photo), "--snapshot", "--name", "me", "--model",
                      str(tiny_model)) == 2
    assert "exactly one" in capsys.readouterr().err
