"""A patch critic for the mouth alone (training only; ``--loss-weights mouth_adversarial=W``).

L1 and VGG losses reward the painter for the middle of what a mouth might hold: between bright
teeth and a dark cavity that is a smooth pinkish fill, which is neither. The frame
discriminator sees the mouth as a few dozen of its 256x256 pixels, too few to object. This
critic looks at the mouth box only, enlarged to 64x64 px, beside the same box of the landmark
image (so it knows how far the lips are apart), and scores 8x8 overlapping patches of it real
or fake with the hinge loss. The generator is rewarded for patches it calls real, which a
blur between teeth and cavity is not.

It is small (about 30 ms a step, batch 4, one CPU thread: under 2 % of a step), so unlike
the frame discriminator it takes its step, and the generator its term, on every training step
whatever ``--discriminator-every`` says. It is not part of a model file: runs keep it in their
checkpoints (to resume) and a warm start begins with a fresh one.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import Tensor, nn

from vcam.models.blocks import apply_spectral_norm

# Side of the mouth crops the critic scores, px.
CROP_SIDE = 64


class MouthCritic(nn.Module):
    """Patch scores (B, 1, 8, 8) for (mouth crop, landmark-image crop) pairs of 64x64 px."""

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        widths = [6, channels, 2 * channels, 4 * channels]
        layers: list[nn.Module] = []
        for inputs, outputs in pairwise(widths):
            layers += [nn.Conv2d(inputs, outputs, kernel_size=4, stride=2, padding=1),
                       nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(widths[-1], 1, kernel_size=3, padding=1))
        self.layers = nn.Sequential(*layers)
        apply_spectral_norm(self)

    def forward(self, mouths: Tensor, landmark_mouths: Tensor) -> Tensor:
        return self.layers(torch.cat([mouths, landmark_mouths], dim=1))
