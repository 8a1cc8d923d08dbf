"""Building blocks shared by the embedder, generator and discriminator.

Residual blocks follow the BigGAN / StyleGAN2 pattern (pre-activation, 1x1 skip convolution).
To keep convolutions at high resolution cheap, a downsampling block does its first 3x3
convolution at the input resolution and its second one after pooling; an upsampling block does
its first one before upsampling and its second one after.

Adaptive (AdaIN) layers take their coefficients as an explicit argument: every
:class:`AdaptiveModule` declares ``adain_param_count`` and its ``forward(x, params)`` receives
its own slice ``params`` of shape (B, adain_param_count) of the generator's ``psi``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with zero padding 1."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1)


def conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    """Pointwise convolution."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=1)


class AdaptiveModule(nn.Module):
    """A module whose forward takes its AdaIN coefficients: ``forward(x, params)``."""

    adain_param_count: int


class AdaIN(AdaptiveModule):
    """Adaptive instance normalisation with external coefficients.

    ``params`` holds C scale offsets then C biases; the output is
    ``instance_norm(x) * (1 + scale) + bias``, so all-zero coefficients give plain instance
    normalisation (a safe starting point while ``P`` is untrained).
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.adain_param_count = 2 * num_features

    def forward(self, x: Tensor, params: Tensor) -> Tensor:
        scale, bias = params.split(self.num_features, dim=1)
        normalised = F.instance_norm(x, eps=self.eps)
        return normalised * (1 + scale[:, :, None, None]) + bias[:, :, None, None]


def split_adain_params(params: Tensor, layers: Iterable[AdaptiveModule]) -> list[Tensor]:
    """Split (B, total) coefficients into one (B, count) slice per adaptive layer, in order."""
    sizes = [layer.adain_param_count for layer in layers]
    if params.shape[1] != sum(sizes):
        raise ValueError(f"expected {sum(sizes)} AdaIN coefficients, got {params.shape[1]}")
    return list(params.split(sizes, dim=1))


class ResidualDownBlock(nn.Module):
    """Residual block that halves the resolution (average pooling).

    Main path: [norm] -> ReLU -> conv3x3 (in -> hidden) -> [norm] -> ReLU -> avgpool ->
    conv3x3 (hidden -> out). Skip path: avgpool -> conv1x1. ``preactivate=False`` drops the
    first norm and ReLU, for a block that sees raw images in [-1, 1].
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int | None = None,
        instance_norm: bool = False,
        preactivate: bool = True,
    ) -> None:
        super().__init__()
        hidden = hidden_channels or in_channels
        self.norm1 = _instance_norm(in_channels) if instance_norm and preactivate else None
        self.preactivate = preactivate
        self.conv1 = conv3x3(in_channels, hidden)
        self.norm2 = _instance_norm(hidden) if instance_norm else None
        self.conv2 = conv3x3(hidden, out_channels)
        self.skip = conv1x1(in_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        h = x
        if self.preactivate:
            h = F.relu(self.norm1(h) if self.norm1 is not None else h)
        h = self.conv1(h)
        h = F.relu(self.norm2(h) if self.norm2 is not None else h)
        h = self.conv2(F.avg_pool2d(h, 2))
        return h + self.skip(F.avg_pool2d(x, 2))


def _instance_norm(channels: int) -> nn.InstanceNorm2d:
    return nn.InstanceNorm2d(channels, affine=True)


class ResidualBlock(nn.Module):
    """Residual block without normalisation at constant resolution and width."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(channels, channels)
        self.conv2 = conv3x3(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class AdaptiveResidualBlock(AdaptiveModule):
    """Bottleneck residual block: (AdaIN -> ReLU -> conv3x3) twice, plus the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm1 = AdaIN(channels)
        self.conv1 = conv3x3(channels, channels)
        self.norm2 = AdaIN(channels)
        self.conv2 = conv3x3(channels, channels)
        self.adain_param_count = self.norm1.adain_param_count + self.norm2.adain_param_count

    def forward(self, x: Tensor, params: Tensor) -> Tensor:
        params1, params2 = split_adain_params(params, (self.norm1, self.norm2))
        h = self.conv1(F.relu(self.norm1(x, params1)))
        h = self.conv2(F.relu(self.norm2(h, params2)))
        return x + h


class ResidualUpBlock(AdaptiveModule):
    """Residual block that doubles the resolution (nearest neighbour), normalised by AdaIN.

    Main path: AdaIN -> ReLU -> conv3x3 (in -> out) -> upsample -> AdaIN -> ReLU -> conv3x3.
    Skip path: conv1x1 -> upsample (equal to upsample -> conv1x1, at a quarter of the cost).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1 = AdaIN(in_channels)
        self.conv1 = conv3x3(in_channels, out_channels)
        self.norm2 = AdaIN(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.skip = conv1x1(in_channels, out_channels)
        self.adain_param_count = self.norm1.adain_param_count + self.norm2.adain_param_count

    def forward(self, x: Tensor, params: Tensor) -> Tensor:
        params1, params2 = split_adain_params(params, (self.norm1, self.norm2))
        h = self.conv1(F.relu(self.norm1(x, params1)))
        h = _upsample(h)
        h = self.conv2(F.relu(self.norm2(h, params2)))
        return h + _upsample(self.skip(x))


def _upsample(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


class SelfAttention(nn.Module):
    """SAGAN self-attention: ``x + gamma * attention(x)``, ``gamma`` starting at 0.

    Queries and keys have C/8 channels, values C/2; every position attends to every other.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        key_channels = max(channels // 8, 1)
        value_channels = max(channels // 2, 1)
        self.query = conv1x1(channels, key_channels)
        self.key = conv1x1(channels, key_channels)
        self.value = conv1x1(channels, value_channels)
        self.out = conv1x1(value_channels, channels)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        batch, _, height, width = x.shape
        query = self.query(x).flatten(2).transpose(1, 2)  # (B, HW, Ck)
        key = self.key(x).flatten(2)  # (B, Ck, HW)
        value = self.value(x).flatten(2)  # (B, Cv, HW)
        attention = torch.softmax(torch.bmm(query, key), dim=-1)  # (B, HW query, HW key)
        attended = torch.bmm(value, attention.transpose(1, 2))  # (B, Cv, HW)
        attended = attended.reshape(batch, -1, height, width)
        return x + self.gamma * self.out(attended)


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectrally normalise the weight of every Conv2d and Linear inside ``module`` (in place)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)) and not parametrize.is_parametrized(
            layer, "weight"
        ):
            spectral_norm(layer)
    return module


@torch.no_grad()
def refresh_spectral_norm(module: nn.Module, iterations: int) -> nn.Module:
    """Run ``iterations`` power iterations on every spectrally normalised weight in ``module``
    (in place), so the stored vectors fit the current weights (e.g. after averaging them);
    the module keeps its train/eval mode."""
    was_training = module.training
    module.train()
    layers = [layer for layer in module.modules() if parametrize.is_parametrized(layer, "weight")]
    for _ in range(iterations):
        for layer in layers:
            layer.weight  # noqa: B018 -- in train mode, reading the weight iterates once
    return module.train(was_training)


def layers_without_spectral_norm(module: nn.Module) -> list[str]:
    """Names of the Conv2d and Linear layers in ``module`` whose weight is not normalised."""
    return [
        name
        for name, layer in module.named_modules()
        if isinstance(layer, (nn.Conv2d, nn.Linear))
        and not parametrize.is_parametrized(layer, "weight")
    ]


def fold_spectral_norm(module: nn.Module) -> nn.Module:
    """Replace every spectral-norm parametrisation by its current value (in place).

    Call in eval mode: the folded weight is ``W / sigma`` with ``sigma`` from the stored power
    iteration vectors, exactly what an eval-mode forward computes. Do not call it on a
    ``copy.deepcopy`` of a parametrised module: the copy shares its parametrised layer classes
    with the original, and removing the parametrisation from one breaks the other. Build a
    fresh network and load the state dict instead (see ``Generator.deployable_copy``).
    """
    for layer in module.modules():
        if parametrize.is_parametrized(layer):
            for name in list(layer.parametrizations):
                parametrize.remove_parametrizations(layer, name, leave_parametrized=True)
    return module
