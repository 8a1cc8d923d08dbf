"""Paste-back: the rendered crop put back into the avatar's photo, fitted to the output."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from vcam.avatar import Avatar, load_avatar, save_avatar
from vcam.avatar_checks import GENERATOR_PREFIX, expected_generator
from vcam.backdrop import MAX_SIDE, backdrop_from_photo
from vcam.enroll import Enrollment, Photo, align_photos
from vcam.landmarks.align import CropTransform
from vcam.models.config import get_config
from vcam.runtime.compositor import Background, Compositor, CompositorSettings
from vcam.runtime.frames import Frame
from vcam.runtime.paste_back import PasteBack, view_transform

WIDTH, HEIGHT = 1280, 720


@pytest.fixture(scope="module")
def enrollment(astronaut_image, dlib_detector) -> Enrollment:
    return align_photos([Photo("astronaut", astronaut_image)], dlib_detector, 256)


@pytest.fixture(scope="module")
def paste(enrollment) -> PasteBack:
    return PasteBack(enrollment.backdrop, 256, enrollment.landmarks[0], WIDTH, HEIGHT)


def compose(paste: PasteBack, crop, points) -> np.ndarray:
    canvas = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    paste.compose(canvas, crop, points)
    return canvas


def test_the_photo_fills_the_output_unstretched_with_the_head_in_view(astronaut_image, paste):
    # 512 x 512 photo, 16:9 output: its top 512 x 288 rows, scaled by 2.5 both ways
    expected = cv2.resize(astronaut_image[:288], (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)
    assert np.abs(paste.still.astype(int) - expected).mean() < 1.0
    region = paste.region
    assert region.x0 > 0 and region.y1 < HEIGHT and region.x1 < WIDTH  # the head, all of it
    assert abs(region.size[0] - region.size[1]) <= 2  # a square stays square


def test_an_unchanged_crop_gives_back_the_photo(enrollment, paste):
    neutral = enrollment.landmarks[0]
    canvas = compose(paste, enrollment.crops[0], neutral)
    difference = np.abs(canvas.astype(int) - paste.still).max(axis=2)
    weight = np.zeros((HEIGHT, WIDTH), np.float32)
    region = paste.region
    weight[region.y0:region.y1, region.x0:region.x1] = paste.weights(neutral)
    assert difference[weight == 0].max() == 0  # away from the face: the photo, exactly
    assert difference[weight > 0].mean() < 4.0  # on it: the photo, resampled twice
    assert weight.max() > 0.99  # the face itself is the rendered crop's


def test_the_blend_mask_has_no_hard_edge_and_follows_the_head(enrollment, paste):
    neutral = enrollment.landmarks[0]
    weight = paste.weights(neutral)
    for axis in (0, 1):
        assert np.abs(np.diff(weight, axis=axis)).max() < 0.05  # a few % per output pixel
    assert weight[0].max() < 1e-3 and weight[-1].max() < 1e-3  # no square edge: zero at
    assert weight[:, 0].max() < 1e-3 and weight[:, -1].max() < 1e-3  # the crop's border
    moved = neutral + np.array([30.0, 10.0], np.float32)  # the head moved in the crop
    moved_weight = paste.weights(moved)
    assert (moved_weight >= weight - 1e-6).all()  # the photo's own face stays covered
    scale = paste.region.size[0] / 256
    x, y = np.round((moved[:17].max(axis=0) - [0, 0]) * scale).astype(int)  # jaw's far end
    assert moved_weight[min(y, moved_weight.shape[0] - 1), min(x, moved_weight.shape[1] - 1)] > \
        weight[min(y, weight.shape[0] - 1), min(x, weight.shape[1] - 1)]


def test_the_view_is_never_stretched():
    wide = view_transform((1600, 600), (800.0, 300.0, 300.0), 1280, 720)
    assert wide[0, 0] == pytest.approx(wide[1, 1]) == pytest.approx(720 / 600)
    assert wide[0, 2] < 0  # cropped at the sides, centred on the face
    narrow = view_transform((400, 900), (200.0, 300.0, 380.0), 1280, 720)
    assert narrow[0, 0] == pytest.approx(narrow[1, 1])
    # 400 px wide cannot hold a 16:9 view around a 380 px head: bars at the sides
    assert narrow[0, 2] > 0 and narrow[0, 0] == pytest.approx(720 / (380 * 1.25))


def test_large_photos_are_kept_around_the_face_and_bounded():
    photo = np.zeros((2400, 4000, 3), np.uint8)
    photo[876:885, 3046:3055] = 255  # a dot beside the face, centred on (3050, 880)
    transform = CropTransform.from_window(3000.0, 900.0, 300.0, size=256)
    backdrop = backdrop_from_photo(photo, transform)
    assert max(backdrop.image.shape[:2]) <= MAX_SIDE
    # around the face (x 1650..4000, y 150..1650), not the whole photo
    assert backdrop.image.shape[1] / backdrop.image.shape[0] == pytest.approx(2350 / 1500, 0.01)
    # the dot lands on the same crop point through the backdrop as straight from the photo
    weights = backdrop.image[..., 0].astype(np.float64)
    rows, columns = np.indices(weights.shape)
    dot = np.array([(columns * weights).sum(), (rows * weights).sum()]) / weights.sum()
    via_backdrop = backdrop.to_crop[:, :2] @ dot + backdrop.to_crop[:, 2]
    direct = transform.to_crop(np.array([[3050.0, 880.0]]))[0]
    np.testing.assert_allclose(via_backdrop, direct, atol=0.2)


def avatar_with(enrollment: Enrollment, backdrop) -> Avatar:
    """An avatar of the 256 px cpu config with a zero generator (only its photo and face
    matter here)."""
    config = get_config("cpu")
    state = {name.removeprefix(GENERATOR_PREFIX): torch.zeros(shape)
             for name, shape in expected_generator(config).items()}
    return Avatar("a", config, state, enrollment.crops, enrollment.landmarks, {},
                  backdrop=backdrop)


def test_compositor_pastes_back_and_falls_back_to_a_tile_without_a_photo(enrollment):
    settings = CompositorSettings(320, 180, Background("colour", (200, 30, 10)))
    crop = np.full((256, 256, 3), 255, np.uint8)
    frame = Frame(0, 0.0, 0.0, rendered=crop, avatar_points=enrollment.landmarks[0])
    pasted = Compositor(settings, [avatar_with(enrollment, enrollment.backdrop)]).compose(frame)
    assert tuple(pasted[5, 5]) != (200, 30, 10)  # the photo, not the background
    tiled = Compositor(settings, [avatar_with(enrollment, None)]).compose(frame)
    assert tuple(tiled[5, 5]) == (200, 30, 10)  # no photo: the tile on its background
    as_tile = CompositorSettings(320, 180, Background("colour", (200, 30, 10)), layout="tile")
    forced = Compositor(as_tile, [avatar_with(enrollment, enrollment.backdrop)]).compose(frame)
    np.testing.assert_array_equal(forced, tiled)


def test_bundles_keep_the_photo_and_old_bundles_still_load(enrollment, tmp_path, monkeypatch):
    avatar = avatar_with(enrollment, enrollment.backdrop)
    loaded = load_avatar(save_avatar(avatar, tmp_path / "new.avatar.safetensors"))
    np.testing.assert_array_equal(loaded.backdrop.image, enrollment.backdrop.image)
    np.testing.assert_allclose(loaded.backdrop.to_crop, enrollment.backdrop.to_crop)
    monkeypatch.setattr("vcam.avatar.AVATAR_VERSION", 1)  # written as this vcam's last release
    old = load_avatar(save_avatar(avatar_with(enrollment, None), tmp_path / "old.avatar"
                                  ".safetensors"))
    assert old.backdrop is None and old.crops.shape == enrollment.crops.shape
