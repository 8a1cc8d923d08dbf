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

# The terms that act on the regions only snapshot episodes mark (vcam.train.snapshot).
REGION_TERMS = ("mouth", "eyes", "mouth_vgg", "paint", "mask_open", "mouth_adversarial")


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
    # Region terms (0 by default, as in the paper; see vcam.train.snapshot): L1 in the mouth
    # box and in the eye boxes, VGG of the mouth box, L1 of the painter alone inside the
    # inner-mouth polygon where the warp can only stretch closed lips, and the blend mask's
    # mean there (so the mask cannot keep copying the warp where it is wrong).
    mouth: float = 0.0
    eyes: float = 0.0
    mouth_vgg: float = 0.0
    paint: float = 0.0
    mask_open: float = 0.0
    # The hinge term of a patch critic on the mouth box alone (vcam.models.mouth_critic),
    # against the smooth fill the L1 terms favour where teeth or a dark cavity belong.
    mouth_adversarial: float = 0.0

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
                 use_identity: bool = True, vgg_size: int = 0) -> None:
        super().__init__()
        self.weights = weights
        self.vgg_size = vgg_size
        self.vgg = VGGFeatures(vgg_weights) if vgg_weights and weights.vgg > 0 else None
        wants_identity = use_identity and weights.identity > 0
        self.identity = FaceIdentityNet.from_dlib() if wants_identity else None

    def forward(self, fake: Tensor, real: Tensor, with_identity: bool = True
                ) -> dict[str, Tensor]:
        terms: dict[str, Tensor] = {}
        if self.vgg is not None:
            small_fake, small_real = self.vgg_inputs(fake), self.vgg_inputs(real)
            terms["vgg"] = self.weights.vgg * mean_l1(self.vgg(small_fake),
                                                      self.vgg(small_real))
        if self.identity is not None and with_identity:
            fake_features = self.identity.features(crop_to_chip(fake))
            real_features = self.identity.features(crop_to_chip(real))
            # dlib's ResNet takes 0..255 pixels; its activations are scaled accordingly.
            terms["identity"] = self.weights.identity * mean_l1(fake_features, real_features)
        if self.weights.pixel > 0:
            terms["pixel"] = self.weights.pixel * F.l1_loss(fake, real)
        return terms

    def vgg_inputs(self, images: Tensor) -> Tensor:
        """The images VGG sees: shrunk to ``vgg_size`` px when set (a quarter of the cost at
        half the side; the mouth keeps its own full-detail VGG term)."""
        return shrunk(images, self.vgg_size)


def shrunk(images: Tensor, size: int) -> Tensor:
    """``images`` area-averaged down to ``size`` px (unchanged when ``size`` is 0 or not
    smaller)."""
    if not size or images.shape[-1] <= size:
        return images
    return F.interpolate(images, size=(size, size), mode="area")


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


def region_l1(fake: Tensor, real: Tensor, region: Tensor) -> Tensor:
    """Mean absolute difference inside ``region`` (B, S, S) of 0/1 (0 when it is empty)."""
    weight = region.unsqueeze(1)
    area = weight.sum() * fake.shape[1]
    return ((fake - real).abs() * weight).sum() / area.clamp(min=1.0)


def region_mean(values: Tensor, region: Tensor) -> Tensor:
    """Mean of ``values`` (B, 1, S, S) inside ``region`` (B, S, S) (0 when it is empty)."""
    weight = region.unsqueeze(1)
    return (values * weight).sum() / weight.sum().clamp(min=1.0)


def box_crops(images: Tensor, region: Tensor, side: int = 64) -> Tensor:
    """The bounding box of each image's ``region`` (B, S, S), resized to ``side`` px
    (the whole image where the region is empty)."""
    crops = []
    for image, mask in zip(images, region):
        rows, cols = torch.nonzero(mask.sum(1)), torch.nonzero(mask.sum(0))
        if len(rows) and len(cols):
            image = image[:, int(rows[0]):int(rows[-1]) + 1, int(cols[0]):int(cols[-1]) + 1]
        crops.append(F.interpolate(image[None], size=(side, side), mode="bilinear",
                                   align_corners=False))
    return torch.cat(crops)


def region_terms(weights: LossWeights, vgg: nn.Module | None, fake: Tensor, painted: Tensor,
                 mask: Tensor, real: Tensor, regions: Tensor) -> dict[str, Tensor]:
    """The region terms of :class:`LossWeights` whose weight is positive. ``regions``
    (B, 3, S, S): mouth box, eye boxes, inner-mouth polygon to paint."""
    mouth, eyes, paint = regions[:, 0], regions[:, 1], regions[:, 2]
    terms: dict[str, Tensor] = {}
    if weights.mouth > 0:
        terms["mouth"] = weights.mouth * region_l1(fake, real, mouth)
    if weights.eyes > 0:
        terms["eyes"] = weights.eyes * region_l1(fake, real, eyes)
    if weights.mouth_vgg > 0 and vgg is not None:
        terms["mouth_vgg"] = weights.mouth_vgg * mean_l1(
            vgg(box_crops(fake, mouth)), vgg(box_crops(real, mouth)))
    if weights.paint > 0:
        terms["paint"] = weights.paint * region_l1(painted, real, paint)
    if weights.mask_open > 0:
        terms["mask_open"] = weights.mask_open * region_mean(mask, paint)
    return terms
