"""Embedder E(x, y) -> e: maps a frame and its landmark image to an identity embedding."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vcam.models.blocks import ResidualDownBlock, SelfAttention, apply_spectral_norm
from vcam.models.config import ModelConfig


def critic_trunk(config: ModelConfig, attention_resolutions: tuple[int, ...]) -> nn.ModuleList:
    """Residual downsampling trunk shared in shape by the embedder and discriminator's V.

    Takes a 6-channel (frame, landmark image) pair at ``config.image_size`` down to 4x4 with
    ``config.embedding_size`` channels; no normalisation; self-attention after every block
    whose output resolution is listed in ``attention_resolutions``.
    """
    layers = nn.ModuleList()
    in_channels = 6
    resolution = config.image_size
    num_blocks = config.num_critic_down_blocks
    for level in range(num_blocks):
        is_last = level == num_blocks - 1
        out_channels = config.embedding_size if is_last else config.width(level)
        first = level == 0
        layers.append(
            ResidualDownBlock(
                in_channels,
                out_channels,
                hidden_channels=out_channels if first else None,
                preactivate=not first,
            )
        )
        resolution //= 2
        if resolution in attention_resolutions:
            layers.append(SelfAttention(out_channels))
        in_channels = out_channels
    return layers


def sum_pool_relu(features: Tensor) -> Tensor:
    """ReLU, then global sum pooling over space: (B, C, H, W) -> (B, C), non-negative.

    The paper pools then applies ReLU; applying it per position first (as BigGAN's projection
    discriminator does) gives the same range but keeps gradients alive while any position is
    active, where ReLU after the sum can switch a whole channel off for good (observed: E's
    embeddings and D's V collapsing to zero within a few dozen steps at higher rates).
    """
    return torch.relu(features).sum(dim=(2, 3))


class Embedder(nn.Module):
    """E(x, y; phi) -> e in R^N (paper, section 3.2).

    Inputs are a frame and its landmark image, both (B, 3, S, S) in [-1, 1]; the output is
    (B, N) and non-negative. Average over a person's frames for a K-shot embedding.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.trunk = critic_trunk(config, config.embedder_attention)
        apply_spectral_norm(self)

    def forward(self, frame: Tensor, landmarks: Tensor) -> Tensor:
        h = torch.cat([frame, landmarks], dim=1)
        for layer in self.trunk:
            h = layer(h)
        return sum_pool_relu(h)

    def embed_frames(self, frames: Tensor, landmarks: Tensor) -> Tensor:
        """K-shot embedding: the mean of E over K frames (K, 3, S, S) of one person -> (N,)."""
        return self.forward(frames, landmarks).mean(dim=0)
