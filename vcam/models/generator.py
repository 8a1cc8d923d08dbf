"""Generator G(y, e) -> x_hat and its personalised, export-ready form G'(y).

G is an image-to-image network (Johnson et al. style): a residual encoder with instance norm
turns the landmark image into a bottleneck, AdaIN residual blocks and residual upsampling blocks
decode it. Every normalisation after the encoder is AdaIN whose coefficients ``psi_hat = P e``
come from one spectrally normalised linear map ``P`` of the embedding.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from vcam.models.blocks import (
    AdaIN,
    AdaptiveModule,
    AdaptiveResidualBlock,
    ResidualDownBlock,
    ResidualUpBlock,
    SelfAttention,
    apply_spectral_norm,
    conv3x3,
    fold_spectral_norm,
    split_adain_params,
)
from vcam.models.config import ModelConfig

OUTPUT_CHANNELS = 3
MASK_BIAS = 2.0


class Generator(nn.Module):
    """G(y, e; psi, P) -> x_hat in [-1, 1], (B, 3, S, S).

    ``y`` is the landmark image (B, 3, S, S) in [-1, 1] (6 channels for the ``warp`` variant:
    the landmark image, then the enrollment image warped to those landmarks).
    The ``warp`` variant's head also predicts a mask ``m`` and blends
    ``x_hat = m * warped + (1 - m) * rgb``: the network learns where the warp is right and
    paints only the rest (mouth interiors, disocclusions, folds); at initialisation the
    blend leans on the warp (``m`` about 0.88).
    Either the embedding ``e`` (B, N) or the AdaIN coefficients ``psi`` (B or 1, T) drive the
    decoder; ``psi = adain_params(e)``.
    ``spectral_norm=False`` builds the plain network whose weights a folded copy holds (see
    :meth:`deployable_copy`): the shape of a deployed generator, built without the power
    iterations.
    """

    def __init__(self, config: ModelConfig, spectral_norm: bool = True) -> None:
        super().__init__()
        self.config = config
        self.stem = conv3x3(
            config.generator_input_channels, config.width(0), stride=config.io_stride
        )
        self.encoder = _encoder(config)
        bottleneck_width = config.width(config.num_down_blocks)
        self.bottleneck = nn.ModuleList(
            AdaptiveResidualBlock(bottleneck_width) for _ in range(config.num_bottleneck_blocks)
        )
        self.decoder = _decoder(config)
        self.head_norm = AdaIN(config.width(0))
        self.blends_warp = config.generator == "warp"
        head_channels = OUTPUT_CHANNELS + (1 if self.blends_warp else 0)
        self.head_conv = conv3x3(config.width(0), head_channels * config.io_stride**2)
        if self.blends_warp:
            self._lean_on_the_warp(config.io_stride)
        self.head_shuffle = nn.PixelShuffle(config.io_stride)
        self.projection = nn.Linear(config.embedding_size, self.adain_param_count, bias=False)
        if spectral_norm:
            apply_spectral_norm(self)

    def adaptive_layers(self) -> list[AdaptiveModule]:
        """The layers that consume ``psi``, in the order their slices appear in it."""
        decoder_blocks = [layer for layer in self.decoder if isinstance(layer, AdaptiveModule)]
        return [*self.bottleneck, *decoder_blocks, self.head_norm]

    @property
    def adain_param_count(self) -> int:
        """T, the size of ``psi``."""
        return sum(layer.adain_param_count for layer in self.adaptive_layers())

    def adain_params(self, embedding: Tensor) -> Tensor:
        """``psi_hat = P e``: (B, N) embeddings -> (B, T) AdaIN coefficients."""
        return self.projection(embedding)

    def forward(
        self, landmarks: Tensor, e: Tensor | None = None, psi: Tensor | None = None,
        parts: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        """``x_hat``; with ``parts`` (warp variant, training only) ``(x_hat, rgb, mask)``:
        the painted image and the blend mask as well, so losses can reach the painter
        where the mask hides it."""
        if (e is None) == (psi is None):
            raise ValueError("pass exactly one of e (embedding) or psi (AdaIN coefficients)")
        if psi is None:
            psi = self.adain_params(cast(Tensor, e))
        psi = self._batched_psi(psi, landmarks.shape[0])
        h = self.stem(landmarks)
        for layer in self.encoder:
            h = layer(h)
        slices = iter(split_adain_params(psi, self.adaptive_layers()))
        for block in self.bottleneck:
            h = block(h, next(slices))
        for layer in self.decoder:
            h = layer(h, next(slices)) if isinstance(layer, AdaptiveModule) else layer(h)
        h = torch.relu(self.head_norm(h, next(slices)))
        out = self.head_shuffle(self.head_conv(h))
        if not self.blends_warp:
            image = torch.tanh(out)
            return (image, image, torch.zeros_like(image[:, :1])) if parts else image
        mask = torch.sigmoid(out[:, OUTPUT_CHANNELS:])
        warped = landmarks[:, OUTPUT_CHANNELS:2 * OUTPUT_CHANNELS]
        painted = torch.tanh(out[:, :OUTPUT_CHANNELS])
        blended = mask * warped + (1 - mask) * painted
        return (blended, painted, mask) if parts else blended

    def _lean_on_the_warp(self, stride: int) -> None:
        """Start the mask channel's bias at +2 (pixel shuffle puts its ``stride**2`` maps
        last), so an untrained warp-guided generator already shows the warp."""
        with torch.no_grad():
            self.head_conv.bias[OUTPUT_CHANNELS * stride**2:] = MASK_BIAS

    def deployable_copy(self) -> Generator:
        """A frozen eval-mode CPU copy with spectral norm folded into plain weights.

        The copy is built afresh and loaded from this generator's state dict (a deepcopy
        would share parametrised layer classes with this generator, see
        ``fold_spectral_norm``).
        """
        frozen = Generator(self.config)
        frozen.load_state_dict(self.state_dict())
        fold_spectral_norm(frozen.eval())
        return frozen.requires_grad_(False)

    def _batched_psi(self, psi: Tensor, batch: int) -> Tensor:
        """``psi`` as (batch, T); a single (T,) or (1, T) vector is shared by the batch."""
        if psi.shape[-1] != self.adain_param_count:
            raise ValueError(
                f"psi has {psi.shape[-1]} coefficients, expected {self.adain_param_count}"
            )
        return psi.reshape(-1, self.adain_param_count).expand(batch, -1)


def _encoder(config: ModelConfig) -> nn.ModuleList:
    """Residual downsampling blocks with instance norm, attention where the config says."""
    layers = nn.ModuleList()
    resolution = config.generator_stem_resolution
    for level in range(config.num_down_blocks):
        out_channels = config.width(level + 1)
        layers.append(ResidualDownBlock(config.width(level), out_channels, instance_norm=True))
        resolution //= 2
        if resolution in config.encoder_attention:
            layers.append(SelfAttention(out_channels))
    return layers


def _decoder(config: ModelConfig) -> nn.ModuleList:
    """Residual AdaIN upsampling blocks mirroring the encoder, attention where configured."""
    layers = nn.ModuleList()
    resolution = config.bottleneck_resolution
    for level in range(config.num_up_blocks, 0, -1):
        out_channels = config.width(level - 1)
        layers.append(ResidualUpBlock(config.width(level), out_channels))
        resolution *= 2
        if resolution in config.decoder_attention:
            layers.append(SelfAttention(out_channels))
    return layers


class PersonalisedGenerator(nn.Module):
    """G'(y): a generator with one person's AdaIN coefficients ``psi'`` held inside.

    ``psi'`` is a parameter (trainable for fine-tuning, frozen otherwise) initialised to
    ``P e_new``; ``forward(y)`` is then a plain landmark-image -> frame network. Use
    :meth:`deployable` for an export-ready copy (eval mode, spectral norm folded).
    """

    def __init__(self, generator: Generator, psi: Tensor, trainable_psi: bool = True) -> None:
        super().__init__()
        expected = generator.adain_param_count
        if psi.numel() != expected:
            raise ValueError(f"psi has {psi.numel()} values, the generator needs {expected}")
        self.generator = generator
        self.psi = nn.Parameter(
            psi.detach().clone().reshape(1, expected), requires_grad=trainable_psi
        )

    @classmethod
    def from_embedding(
        cls, generator: Generator, embedding: Tensor, trainable_psi: bool = True
    ) -> PersonalisedGenerator:
        """Personalise with ``psi' = P e_new`` for an embedding (N,) or (1, N)."""
        with torch.no_grad():
            psi = generator.adain_params(embedding.reshape(1, -1))
        return cls(generator, psi, trainable_psi=trainable_psi)

    def forward(self, landmarks: Tensor) -> Tensor:
        return self.generator(landmarks, psi=self.psi)

    def deployable(self) -> PersonalisedGenerator:
        """Frozen eval-mode copy with spectral norm folded into plain weights, for export."""
        frozen_generator = self.generator.deployable_copy()
        deployable = PersonalisedGenerator(frozen_generator, self.psi, trainable_psi=False)
        return deployable.eval()


def generator_input(landmark_images: Tensor, warped: Tensor | None = None) -> Tensor:
    """G's input: the landmark images (B, 3, S, S), plus, for the warp-guided variant, the
    enrollment image warped to those landmarks (B, 3, S, S) as three more channels."""
    return landmark_images if warped is None else torch.cat([landmark_images, warped], dim=1)
