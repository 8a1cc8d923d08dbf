"""Projection discriminator D(x, y, i) -> r, a realism score for a (frame, landmarks) pair."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vcam.models.blocks import ResidualBlock, apply_spectral_norm
from vcam.models.config import ModelConfig
from vcam.models.embedder import critic_trunk, sum_pool_relu


class Discriminator(nn.Module):
    """D(x, y, i; theta, W, w0, b) = V(x, y)^T (W_i + w0) + b.

    ``V`` has the embedder's shape (6-channel input, residual downsampling to 4x4, attention
    where configured) plus one more residual block at 4x4, then sum pooling and ReLU, giving
    (B, N). ``W`` is (N, num_videos), one column per training video; ``w0`` (N,) and the scalar
    ``b`` are shared. For fine-tuning on a new person, :meth:`score_with_vector` takes the
    projection vector ``w' = w0 + e_new`` directly.
    """

    def __init__(self, config: ModelConfig, num_videos: int) -> None:
        super().__init__()
        if num_videos < 1:
            raise ValueError(f"num_videos must be positive, got {num_videos}")
        self.config = config
        self.trunk = critic_trunk(config, config.discriminator_attention)
        self.final_block = ResidualBlock(config.embedding_size)
        # W starts positive, like the embeddings it is matched to (E ends in a ReLU): columns
        # near zero would let the match term pull every embedding to zero, where E's ReLU dies.
        self.video_embeddings = nn.Parameter(torch.rand(config.embedding_size, num_videos))  # W
        self.shared_embedding = nn.Parameter(torch.zeros(config.embedding_size))  # w0
        self.bias = nn.Parameter(torch.zeros(()))  # b
        apply_spectral_norm(self)

    @property
    def num_videos(self) -> int:
        """Columns of ``W``."""
        return self.video_embeddings.shape[1]

    def features(self, frame: Tensor, landmarks: Tensor) -> tuple[Tensor, list[Tensor]]:
        """``V(x, y)`` (B, N) and the intermediate activations for feature matching."""
        h = torch.cat([frame, landmarks], dim=1)
        activations = []
        for layer in [*self.trunk, self.final_block]:
            h = layer(h)
            activations.append(h)
        return sum_pool_relu(h), activations

    def forward(
        self, frame: Tensor, landmarks: Tensor, video_index: Tensor
    ) -> tuple[Tensor, list[Tensor]]:
        """Realism scores (B,) for pairs from videos ``video_index`` (B,), and V's activations."""
        projection = self.video_embeddings[:, video_index].T + self.shared_embedding
        return self.score_with_vector(frame, landmarks, projection)

    def score_with_vector(
        self, frame: Tensor, landmarks: Tensor, projection: Tensor
    ) -> tuple[Tensor, list[Tensor]]:
        """Scores with an explicit projection vector (N,) or (B, N), e.g. ``w' = w0 + e_new``."""
        v, activations = self.features(frame, landmarks)
        return (v * projection).sum(dim=1) + self.bias, activations
