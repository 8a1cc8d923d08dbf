"""The losses of meta-learning and fine-tuning (../shared/docs/METHOD.md), with settable
weights.

- content: L1 between activations of the generated and the real frame in VGG19 (relu1_1 ..
  relu3_1 with the shared weights, relu1_1 .. relu5_1 with a full VGG19) and in dlib's
  face-recognition ResNet (the stand-in for VGGFace), each layer's mean absolute difference;
- adversarial: the hinge loss for D, ``-D(x_hat)`` for G, plus feature matching (L1 between
  D's activations on the fake and on the real pair, weight 10);
- embedding match ``|W_i - e_hat|`` (mean over the N entries, weight 80);
- an optional pixel L1 (weight 0 by default: the paper has none).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vcam.models.identity import FaceIdentityNet, crop_to_chip
from vcam.models.vgg import VGGFeatures


@dataclass(frozen=True)
class LossWeights:
    """Weights of each term. ``vgg`` and ``identity`` scale mean-L1 feature distances of the
    normalised VGG19 (activations near 1) and of dlib's ResNet."""

    vgg: float = 1.0
    identity: float = 0.5
    adversarial: float = 1.0
    feature_matching: float = 10.0
    match: float = 80.0
    pixel: float = 0.0

    @classmethod
    def parse(cls, text: str) -> LossWeights:
        """``"vgg=1,match=80"`` -> weights (unnamed terms keep their defaults)."""
        known = {field.name for field in fields(cls)}
        values: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, _, value = item.partition("=")
            if name not in known:
                raise ValueError(f"unknown loss term {name!r}: choose from {', '.join(known)}")
            values[name] = float(value)
        return cls(**values)


def mean_l1(fakes: list[Tensor], reals: list[Tensor]) -> Tensor:
    """Sum over layers of the mean absolute difference (the real side is a fixed target)."""
    return sum((F.l1_loss(fake, real.detach()) for fake, real in zip(fakes, reals)),
               start=torch.zeros((), device=fakes[0].device))


class ContentLoss(nn.Module):
    """Perceptual (VGG19) and identity (dlib ResNet) content losses; either may be off."""

    def __init__(self, weights: LossWeights, vgg_weights: Path | None,
                 use_identity: bool = True) -> None:
        super().__init__()
        self.weights = weights
        self.vgg = VGGFeatures(vgg_weights) if vgg_weights and weights.vgg > 0 else None
        wants_identity = use_identity and weights.identity > 0
        self.identity = FaceIdentityNet.from_dlib() if wants_identity else None

    def forward(self, fake: Tensor, real: Tensor) -> dict[str, Tensor]:
        terms: dict[str, Tensor] = {}
        if self.vgg is not None:
            terms["vgg"] = self.weights.vgg * mean_l1(self.vgg(fake), self.vgg(real))
        if self.identity is not None:
            fake_features = self.identity.features(crop_to_chip(fake))
            real_features = self.identity.features(crop_to_chip(real))
            # dlib's ResNet takes 0..255 pixels; its activations are scaled accordingly.
            terms["identity"] = self.weights.identity * mean_l1(fake_features, real_features)
        if self.weights.pixel > 0:
            terms["pixel"] = self.weights.pixel * F.l1_loss(fake, real)
        return terms


def discriminator_hinge(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """``max(0, 1 - D(x)) + max(0, 1 + D(x_hat))``, averaged over the batch."""
    return F.relu(1.0 - real_scores).mean() + F.relu(1.0 + fake_scores).mean()


def generator_adversarial(fake_scores: Tensor) -> Tensor:
    return -fake_scores.mean()


def feature_matching(fake_features: list[Tensor], real_features: list[Tensor]) -> Tensor:
    return mean_l1(fake_features, real_features)


def embedding_match(video_columns: Tensor, embeddings: Tensor) -> Tensor:
    """``|W_i - e_hat_i|``: (B, N) columns of W against (B, N) embeddings, mean over N."""
    return F.l1_loss(video_columns, embeddings)
