"""Tests of the frozen VGG19 feature extractor used by the content loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file as save_safetensors

from vcam.models.vgg import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    NORMALISED_FILE_NAME,
    WEIGHTS_ENV_VAR,
    VGGFeatures,
    find_default_vgg_weights,
)
from vcam.shared import SHARED_WEIGHTS_ENV_VAR

# Indices of the 3x3 convolutions in torchvision's vgg19().features.
TORCHVISION_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
TORCHVISION_CONV_CHANNELS = (
    (3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256), (256, 256),
    (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512),
)  # fmt: skip


def random_torchvision_state_dict() -> dict[str, torch.Tensor]:
    """A full torchvision VGG19 state dict with random weights, classifier included."""
    generator = torch.Generator().manual_seed(0)
    state = {}
    for index, (c_in, c_out) in zip(
        TORCHVISION_CONV_INDICES, TORCHVISION_CONV_CHANNELS, strict=True
    ):
        std = (2 / (9 * c_in)) ** 0.5
        state[f"features.{index}.weight"] = (
            torch.randn(c_out, c_in, 3, 3, generator=generator) * std
        )
        state[f"features.{index}.bias"] = torch.zeros(c_out)
    state["classifier.0.weight"] = torch.zeros(4, 8)  # ignored
    return state


@pytest.fixture
def shared_weights() -> Path:
    path = find_default_vgg_weights()
    if path is None:
        pytest.skip(f"{NORMALISED_FILE_NAME} not found in the shared weights or ${WEIGHTS_ENV_VAR}")
    return path


@pytest.mark.data
def test_shared_file_gives_relu1_to_relu3(shared_weights: Path) -> None:
    vgg = VGGFeatures(shared_weights)
    assert vgg.layer_names == ["relu1_1", "relu2_1", "relu3_1"]
    features = vgg(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert [tuple(f.shape) for f in features] == [
        (2, 64, 64, 64),
        (2, 128, 32, 32),
        (2, 256, 16, 16),
    ]
    assert all((f >= 0).all() for f in features)


@pytest.mark.data
def test_shared_file_maps_rgb_to_mean_subtracted_bgr(shared_weights: Path) -> None:
    vgg = VGGFeatures(shared_weights)
    red = torch.tensor([1.0, -1.0, -1.0]).reshape(1, 3, 1, 1)  # pure red in [-1, 1]
    bgr = vgg.layers[0](red * vgg.scale + vgg.shift).flatten()
    expected = torch.tensor([0.0, 0.0, 255.0]) - torch.tensor([103.939, 116.779, 123.68])
    torch.testing.assert_close(bgr, expected, atol=1e-3, rtol=0)


@pytest.mark.data
def test_shared_vgg_is_frozen_but_passes_gradients(shared_weights: Path) -> None:
    vgg = VGGFeatures(shared_weights)
    vgg.train()
    assert not vgg.training
    assert not any(p.requires_grad for p in vgg.parameters())
    images = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_()
    sum(f.mean() for f in vgg(images)).backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_torchvision_state_dict_gives_relu1_to_relu5() -> None:
    state = random_torchvision_state_dict()
    vgg = VGGFeatures(state)
    assert vgg.layer_names == ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
    images = torch.rand(1, 3, 64, 64) * 2 - 1
    features = vgg(images)
    assert [tuple(f.shape) for f in features] == [
        (1, 64, 64, 64),
        (1, 128, 32, 32),
        (1, 256, 16, 16),
        (1, 512, 8, 8),
        (1, 512, 4, 4),
    ]
    mean = torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1)
    normalised = ((images + 1) / 2 - mean) / std
    relu1_1 = F.relu(F.conv2d(normalised, state["features.0.weight"], padding=1))
    torch.testing.assert_close(features[0], relu1_1)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_torchvision_state_dict_loads_from_a_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"vgg19{suffix}"
    state = random_torchvision_state_dict()
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_safetensors(state, path)
    assert len(VGGFeatures(path)(torch.zeros(1, 3, 32, 32))) == 5


def test_incomplete_state_dict_is_an_error() -> None:
    state = random_torchvision_state_dict()
    del state["features.28.weight"]
    with pytest.raises(RuntimeError, match=r"28\.weight"):
        VGGFeatures(state)


def test_default_weights_found_in_the_shared_weights_folder_whatever_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(WEIGHTS_ENV_VAR, raising=False)
    shared = tmp_path / "shared" / "weights"
    monkeypatch.setenv(SHARED_WEIGHTS_ENV_VAR, str(shared))
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "shared" / "weights").mkdir(parents=True)
    (elsewhere / "shared" / "weights" / NORMALISED_FILE_NAME).write_bytes(b"")
    monkeypatch.chdir(elsewhere / "shared")  # ../shared/weights from here holds a file
    assert find_default_vgg_weights() is None
    shared.mkdir(parents=True)
    (shared / NORMALISED_FILE_NAME).write_bytes(b"")
    assert find_default_vgg_weights() == shared / NORMALISED_FILE_NAME


def test_env_var_overrides_the_default_location(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = tmp_path / "my_vgg.pth"
    monkeypatch.setenv(WEIGHTS_ENV_VAR, str(chosen))
    with pytest.raises(FileNotFoundError, match=WEIGHTS_ENV_VAR):
        find_default_vgg_weights()
    chosen.write_bytes(b"")
    assert find_default_vgg_weights() == chosen
