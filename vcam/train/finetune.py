"""Few-shot personalisation: the paper's fine-tuning stage (../shared/docs/METHOD.md).

G' keeps G's weights and gets person-specific AdaIN coefficients ``psi'`` initialised to
``P e_new``; D' keeps D's trunk and bias with the projection vector ``w' = w0 + e_new``. Both
are trained on the T enrollment frames: G' with content + adversarial (+ feature matching),
D' with the hinge loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from vcam.models.generator import PersonalisedGenerator
from vcam.models.losses import (
    ContentLoss,
    LossWeights,
    discriminator_hinge,
    feature_matching,
    generator_adversarial,
)
from vcam.models.store import MetaModels


@dataclass(frozen=True)
class FineTuneSettings:
    steps: int = 0
    lr_generator: float = 5e-5
    lr_discriminator: float = 2e-4
    losses: LossWeights = field(default_factory=LossWeights)
    vgg_weights: str | None = None
    identity_loss: bool = True
    seed: int = 0


class FineTuner:
    """Trains G' (weights and ``psi'``) and D' (trunk, ``w'``, bias) on enrollment frames."""

    def __init__(self, models: MetaModels, personalised: PersonalisedGenerator,
                 embedding: Tensor, settings: FineTuneSettings) -> None:
        self.settings = settings
        self.personalised = personalised.train().requires_grad_(True)
        self.discriminator = models.discriminator.train().requires_grad_(True)
        with torch.no_grad():
            start = self.discriminator.shared_embedding + embedding.reshape(-1)
        self.projection = torch.nn.Parameter(start.clone())  # w' = w0 + e_new
        vgg = Path(settings.vgg_weights) if settings.vgg_weights else None
        self.content = ContentLoss(settings.losses, vgg, settings.identity_loss)
        trunk = [p for name, p in self.discriminator.named_parameters()
                 if name not in ("video_embeddings", "shared_embedding")]
        self.generator_optimiser = torch.optim.Adam(
            personalised.parameters(), lr=settings.lr_generator, betas=(0.5, 0.999))
        self.discriminator_optimiser = torch.optim.Adam(
            [*trunk, self.projection], lr=settings.lr_discriminator, betas=(0.5, 0.999))

    def step(self, frame: Tensor, landmarks: Tensor, inputs: Tensor) -> dict[str, float]:
        """One update of G' and D' on one enrollment frame; ``inputs`` is G's input for it
        (its landmark image, plus the warp for the warp-guided generator)."""
        weights = self.settings.losses
        self.discriminator.requires_grad_(False)
        fake = self.personalised(inputs)
        fake_score, fake_features = self.discriminator.score_with_vector(
            fake, landmarks, self.projection.detach())
        with torch.no_grad():
            _, real_features = self.discriminator.score_with_vector(frame, landmarks,
                                                                    self.projection)
        terms = self.content(fake, frame)
        terms["adversarial"] = weights.adversarial * generator_adversarial(fake_score)
        terms["feature_matching"] = weights.feature_matching * feature_matching(
            fake_features, real_features)
        total = sum(terms.values())
        self.generator_optimiser.zero_grad(set_to_none=True)
        total.backward()
        self.generator_optimiser.step()
        self.discriminator.requires_grad_(True)
        hinge = self.discriminator_step(frame, landmarks, fake.detach())
        return {"generator": float(total.detach()), "discriminator": hinge,
                "l1": float((fake.detach() - frame).abs().mean())}

    def discriminator_step(self, frame: Tensor, landmarks: Tensor, fake: Tensor) -> float:
        real_score, _ = self.discriminator.score_with_vector(frame, landmarks, self.projection)
        fake_score, _ = self.discriminator.score_with_vector(fake, landmarks, self.projection)
        hinge = discriminator_hinge(real_score, fake_score)
        self.discriminator_optimiser.zero_grad(set_to_none=True)
        hinge.backward()
        self.discriminator_optimiser.step()
        return float(hinge.detach())


def finetune(models: MetaModels, personalised: PersonalisedGenerator, embedding: Tensor,
             frames: Tensor, landmarks: Tensor, inputs: Tensor, settings: FineTuneSettings,
             on_step: Callable[[int, dict[str, float]], None] | None = None
             ) -> list[dict[str, float]]:
    """Fine-tune ``personalised`` in place on ``frames``/``landmarks`` (T, 3, S, S) with G's
    ``inputs`` (T, C, S, S); one enrollment frame (drawn reproducibly from ``settings.seed``)
    per step."""
    tuner = FineTuner(models, personalised, embedding, settings)
    generator = torch.Generator().manual_seed(settings.seed)
    history = []
    for step in range(settings.steps):
        index = int(torch.randint(len(frames), (1,), generator=generator))
        losses = tuner.step(frames[index:index + 1], landmarks[index:index + 1],
                            inputs[index:index + 1])
        history.append(losses)
        if on_step is not None:
            on_step(step + 1, losses)
    personalised.eval().requires_grad_(False)
    return history
