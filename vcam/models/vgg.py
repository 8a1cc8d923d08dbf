"""Frozen VGG19 feature extractor for the perceptual content loss L_CNT.

Two weight layouts are accepted:

* the "normalised" VGG19 of style-transfer work, up to relu3_1 (the file shipped in
  shared weights folder, see its README): a 1x1 convolution maps RGB in [0, 1] to
  mean-subtracted BGR in [0, 255], then 3x3 convolutions with reflection padding and
  ceil-mode max pooling; features relu1_1, relu2_1, relu3_1;
* a torchvision-style VGG19 state dict (``features.N.weight`` keys, ImageNet normalisation,
  zero padding); features relu1_1 .. relu5_1 (the paper's conv1, 6, 11, 20, 29).

Inputs are images in [-1, 1]; the network is frozen but differentiable with respect to them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file as load_safetensors
from torch import Tensor, nn

from vcam.errors import UserError
from vcam.shared import shared_weights_dir

NORMALISED_FILE_NAME = "vgg19_normalised_to_relu3_1.pth"
WEIGHTS_ENV_VAR = "VCAM_VGG_WEIGHTS"
VGG19_BLOCK_DEPTHS = (2, 2, 4, 4, 4)
VGG19_BLOCK_WIDTHS = (64, 128, 256, 512, 512)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION_PREFIX = "features."


def find_default_vgg_weights() -> Path | None:
    """Locate the shared normalised-VGG19 file.

    Looks at ``$VCAM_VGG_WEIGHTS`` first (FileNotFoundError if it names a missing file), then
    ``vgg19_normalised_to_relu3_1.pth`` in the shared weights folder
    (:func:`vcam.shared.shared_weights_dir`); None when neither exists.
    """
    from_env = os.environ.get(WEIGHTS_ENV_VAR)
    if from_env:
        path = Path(from_env)
        if not path.is_file():
            raise FileNotFoundError(f"{WEIGHTS_ENV_VAR} points to a missing file: {path}")
        return path
    candidate = shared_weights_dir() / NORMALISED_FILE_NAME
    return candidate if candidate.is_file() else None


def vgg_weights_setting(choice: str) -> str | None:
    """``--vgg CHOICE`` -> the weights file to use (resolved), or None for no VGG loss:
    ``none``, ``auto`` (:func:`find_default_vgg_weights`) or a file."""
    if choice == "none":
        return None
    if choice != "auto":
        if not Path(choice).is_file():
            raise UserError(f"--vgg {choice} does not exist")
        return str(Path(choice).resolve())
    try:
        found = find_default_vgg_weights()
    except FileNotFoundError as error:
        raise UserError(str(error)) from None
    if found is None:
        raise UserError(f"VGG19 weights not found in {shared_weights_dir()}: pass --vgg FILE, "
                        "set VCAM_VGG_WEIGHTS, or --vgg none to train without the VGG loss")
    return str(found.resolve())


def _vgg19_layers(
    num_blocks: int, reflection_padding: bool, ceil_mode: bool
) -> tuple[list[nn.Module], list[int]]:
    """VGG19 layers for the first ``num_blocks`` conv blocks and the relu*_1 layer indices.

    The feature after the last block is its relu*_1, so the last block has a single conv
    and no trailing pool. Layer indices match the state-dict keys of both layouts.
    """
    layers: list[nn.Module] = []
    taps: list[int] = []
    in_channels = 3
    for block in range(num_blocks):
        is_last = block == num_blocks - 1
        depth = 1 if is_last else VGG19_BLOCK_DEPTHS[block]
        width = VGG19_BLOCK_WIDTHS[block]
        for conv_index in range(depth):
            if reflection_padding:
                layers.append(nn.ReflectionPad2d(1))
            padding = 0 if reflection_padding else 1
            layers.append(nn.Conv2d(in_channels, width, kernel_size=3, padding=padding))
            layers.append(nn.ReLU())
            if conv_index == 0:
                taps.append(len(layers) - 1)
            in_channels = width
        if not is_last:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=ceil_mode))
    return layers, taps


class VGGFeatures(nn.Module):
    """Frozen VGG19: images in [-1, 1] (B, 3, H, W) -> list of relu*_1 activations.

    ``weights`` is a path to a state dict (loaded with ``weights_only=True``) or the state
    dict itself, in either layout described in the module docstring. ``layer_names`` lists
    the features returned, in order.
    """

    def __init__(self, weights: str | Path | Mapping[str, Tensor]) -> None:
        super().__init__()
        state = _load_state_dict(weights)
        if any(key.startswith(TORCHVISION_PREFIX) for key in state):
            self._build_torchvision(state)
        else:
            self._build_normalised(state)
        self.layer_names = [f"relu{block + 1}_1" for block in range(len(self.taps))]
        self.eval().requires_grad_(False)

    def _build_normalised(self, state: Mapping[str, Tensor]) -> None:
        """Layers, taps and input scaling for the normalised (style-transfer) layout."""
        convs, taps = _vgg19_layers(3, reflection_padding=True, ceil_mode=True)
        self.layers = nn.Sequential(nn.Conv2d(3, 3, kernel_size=1), *convs)
        self.layers.load_state_dict(state)
        self.taps = [tap + 1 for tap in taps]
        # (x + 1) / 2 maps [-1, 1] to the [0, 1] RGB the file's 1x1 conv expects.
        self.register_buffer("scale", torch.full((1, 3, 1, 1), 0.5), persistent=False)
        self.register_buffer("shift", torch.full((1, 3, 1, 1), 0.5), persistent=False)

    def _build_torchvision(self, state: Mapping[str, Tensor]) -> None:
        """Layers up to relu5_1, taps and ImageNet input scaling for torchvision's layout."""
        convs, taps = _vgg19_layers(5, reflection_padding=False, ceil_mode=False)
        self.layers = nn.Sequential(*convs)
        wanted = set(self.layers.state_dict())
        features = {
            key.removeprefix(TORCHVISION_PREFIX): value
            for key, value in state.items()
            if key.removeprefix(TORCHVISION_PREFIX) in wanted
        }
        self.layers.load_state_dict(features)
        self.taps = taps
        # ((x + 1) / 2 - mean) / std, folded into one scale and shift.
        mean = torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1)
        self.register_buffer("scale", 0.5 / std, persistent=False)
        self.register_buffer("shift", (0.5 - mean) / std, persistent=False)

    def train(self, mode: bool = True) -> VGGFeatures:
        """Stay in eval mode: the loss network is never trained."""
        return super().train(False)

    def forward(self, images: Tensor) -> list[Tensor]:
        h = images * self.scale + self.shift
        features = []
        for index, layer in enumerate(self.layers):
            h = layer(h)
            if index in self.taps:
                features.append(h)
        return features


def _load_state_dict(weights: str | Path | Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    """The state dict itself, or the one stored at a path: a ``.safetensors`` file or a
    PyTorch file loaded with ``weights_only=True`` (tensors only, no pickled code)."""
    if isinstance(weights, Mapping):
        return weights
    path = Path(weights)
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    return torch.load(path, map_location="cpu", weights_only=True)
