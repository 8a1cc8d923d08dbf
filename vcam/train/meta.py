"""One meta-learning step (../shared/docs/METHOD.md, "Meta-learning: simulated K-shot
episodes").

The trainer owns the three networks, their optimisers and the losses; it knows nothing of
run folders, logging or checkpoints (see ``vcam.train.run``).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from vcam.models.generator import generator_input
from vcam.models.losses import (
    ContentLoss,
    LossWeights,
    box_crops,
    discriminator_hinge,
    embedding_match,
    feature_matching,
    generator_adversarial,
    region_terms,
)
from vcam.models.mouth_critic import CROP_SIDE, MouthCritic
from vcam.models.store import MetaModels
from vcam.train.averaging import WeightAverage

# A generated batch whose every image has a pixel standard deviation below this is "flat".
FLAT_IMAGE_STD = 0.01


@dataclass(frozen=True)
class MetaSettings:
    """Everything that shapes a meta-learning run besides the data and the architecture."""

    shots: int = 8
    batch: int = 2
    steps: int = 1000
    lr_generator: float = 5e-5
    lr_discriminator: float = 2e-4
    discriminator_steps: int = 1
    losses: LossWeights = field(default_factory=LossWeights)
    vgg_weights: str | None = None
    identity_loss: bool = True
    seed: int = 0
    validation_fraction: float = 0.1
    checkpoint_every: int = 250
    sample_every: int = 250
    log_every: int = 10
    keep_checkpoints: int = 2
    collapse_patience: int = 50
    loader_workers: int = 1
    # The identity content loss every this many steps (its ResNet is the dearest loss on a
    # CPU); 1 is the paper's every step.
    identity_every: int = 1
    # "nearest": K frames of one clip, the target warped from the nearest (the paper's
    # episodes); "snapshot": one snapshot-like source and targets where its warp is wrong
    # (vcam.train.snapshot), with region maps for the region losses.
    episodes: str = "nearest"
    cross_clip: float = 0.25
    hard_targets: float = 0.7
    # A model file (or run) whose E, G and D start a new run (W too when it fits).
    init: str | None = None
    # The VGG content loss on frames shrunk to this many px (0: full size).
    vgg_size: int = 0
    # The adversarial terms and D's update every this many steps (1: every step, the paper).
    discriminator_every: int = 1
    # Checkpoints hold an exponential moving average of the weights with this decay per
    # step (vcam.train.averaging); 0: the trained weights themselves.
    weight_average: float = 0.0


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the module itself)."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


class DivergedError(RuntimeError):
    """Training produced non-finite losses or collapsed to flat images."""


class MetaTrainer:
    """Runs meta-learning steps on batches from ``vcam.train.episodes.Episodes``.

    ``embedder``, ``generator`` and ``discriminator`` may be DDP-wrapped; the generator step
    calls D's bare module, so D's gradients are only synchronised in D's own step.
    """

    def __init__(self, models: MetaModels, settings: MetaSettings, device: torch.device,
                 wrap=lambda module: module) -> None:
        self.models = models
        self.settings = settings
        self.device = device
        self.embedder = wrap(models.embedder)
        self.generator = wrap(models.generator)
        self.discriminator = wrap(models.discriminator)
        vgg = Path(settings.vgg_weights) if settings.vgg_weights else None
        self.content = ContentLoss(settings.losses, vgg, settings.identity_loss,
                                   settings.vgg_size).to(device)
        self.optimisers = {
            "generator": torch.optim.Adam(
                [*models.embedder.parameters(), *models.generator.parameters()],
                lr=settings.lr_generator, betas=(0.5, 0.999)),
            "discriminator": torch.optim.Adam(
                models.discriminator.parameters(), lr=settings.lr_discriminator,
                betas=(0.5, 0.999)),
        }
        self.average = (WeightAverage(models, settings.weight_average)
                        if settings.weight_average > 0 else None)
        self.mouth_critic = None
        if settings.losses.mouth_adversarial > 0:
            self.mouth_critic = wrap(MouthCritic().to(device))
            self.optimisers["mouth_critic"] = torch.optim.Adam(
                self.mouth_critic.parameters(), lr=settings.lr_discriminator,
                betas=(0.5, 0.999))
        self.flat_steps = 0
        self.steps_done = 0

    def autocast(self):
        """bfloat16 mixed precision on CUDA GPUs that have it (no loss scaling needed)."""
        if self.device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def embed(self, frames: Tensor, landmarks: Tensor) -> Tensor:
        """``e_hat``: mean embedding of each episode's K frames, (B, K, 3, S, S) -> (B, N)."""
        batch, shots = frames.shape[:2]
        flat = self.embedder(frames.flatten(0, 1), landmarks.flatten(0, 1))
        return flat.view(batch, shots, -1).mean(dim=1)

    def step(self, batch: dict[str, Tensor]) -> dict[str, float]:
        """One generator/embedder update and ``discriminator_steps`` discriminator updates."""
        batch = {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}
        adversarial = self.steps_done % self.settings.discriminator_every == 0
        fake, embeddings, generator_terms = self.generator_step(batch, adversarial)
        discriminator_terms = {}
        for _ in range(self.settings.discriminator_steps if adversarial else 0):
            discriminator_terms = self.discriminator_step(batch, fake, embeddings)
        if self.criticises_mouths(batch):
            discriminator_terms |= self.mouth_critic_step(batch, fake)
        losses = {name: float(value) for name, value in
                  (generator_terms | discriminator_terms).items()}
        self.check(losses, fake)
        if self.average is not None:
            self.average.update(self.models)
        losses["l1"] = float((fake.float() - batch["target"]).abs().mean())
        losses["embedding"] = float(embeddings.abs().mean())
        return losses

    def generator_step(self, batch: dict[str, Tensor], adversarial: bool = True
                       ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        weights = self.settings.losses
        discriminator = unwrap(self.discriminator)
        discriminator.requires_grad_(False)
        with self.autocast():
            embeddings = self.embed(batch["frames"], batch["landmarks"])
            inputs = generator_input(batch["target_landmarks"], batch.get("target_warp"))
            fake, painted, mask = self.generator(inputs, e=embeddings, parts=True)
            with_identity = self.steps_done % self.settings.identity_every == 0
            terms = self.content(fake.float(), batch["target"], with_identity)
            if "regions" in batch:
                terms |= region_terms(weights, self.content.vgg, fake.float(), painted.float(),
                                      mask.float(), batch["target"], batch["regions"])
            if adversarial:
                terms |= self.adversarial_terms(discriminator, fake, batch)
            if self.criticises_mouths(batch):
                terms["mouth_adversarial"] = self.mouth_adversarial_term(fake, batch)
            columns = discriminator.video_embeddings[:, batch["video"]].T.detach()
            terms["match"] = weights.match * embedding_match(columns, embeddings.float())
        total = sum(terms.values())
        optimiser = self.optimisers["generator"]
        optimiser.zero_grad(set_to_none=True)
        total.backward()
        optimiser.step()
        discriminator.requires_grad_(True)
        self.steps_done += 1
        terms["generator_total"] = total.detach()
        return fake.detach(), embeddings.detach(), {k: v.detach() for k, v in terms.items()}

    def adversarial_terms(self, discriminator: nn.Module, fake: Tensor,
                          batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """G's hinge term and feature matching against the real pair."""
        weights = self.settings.losses
        fake_scores, fake_features = discriminator(fake, batch["target_landmarks"],
                                                   batch["video"])
        with torch.no_grad():
            _, real_features = discriminator(batch["target"], batch["target_landmarks"],
                                             batch["video"])
        return {"adversarial": weights.adversarial * generator_adversarial(fake_scores),
                "feature_matching": weights.feature_matching * feature_matching(
                    fake_features, real_features)}

    def criticises_mouths(self, batch: dict[str, Tensor]) -> bool:
        """Whether this run's mouth critic can see this batch (only snapshot episodes
        carry the mouth boxes)."""
        return self.mouth_critic is not None and "regions" in batch

    @staticmethod
    def mouth_crops(images: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """The target mouth boxes of ``images`` (B, C, S, S), 64x64 px."""
        return box_crops(images, batch["regions"][:, 0], CROP_SIDE)

    def mouth_adversarial_term(self, fake: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """G's hinge term against the mouth critic (held frozen, like D)."""
        critic = unwrap(self.mouth_critic)
        critic.requires_grad_(False)
        scores = critic(self.mouth_crops(fake, batch),
                        self.mouth_crops(batch["target_landmarks"], batch))
        critic.requires_grad_(True)
        return self.settings.losses.mouth_adversarial * generator_adversarial(scores.float())

    def mouth_critic_step(self, batch: dict[str, Tensor], fake: Tensor) -> dict[str, Tensor]:
        """The mouth critic's hinge loss on the real and the generated mouths."""
        with self.autocast():
            landmarks = self.mouth_crops(batch["target_landmarks"], batch)
            real_scores = self.mouth_critic(self.mouth_crops(batch["target"], batch), landmarks)
            fake_scores = self.mouth_critic(self.mouth_crops(fake, batch), landmarks)
            hinge = discriminator_hinge(real_scores.float(), fake_scores.float())
        optimiser = self.optimisers["mouth_critic"]
        optimiser.zero_grad(set_to_none=True)
        hinge.backward()
        optimiser.step()
        return {"mouth_critic": hinge.detach(),
                "mouth_real_score": real_scores.mean().detach(),
                "mouth_fake_score": fake_scores.mean().detach()}

    def discriminator_step(self, batch: dict[str, Tensor], fake: Tensor,
                           embeddings: Tensor) -> dict[str, Tensor]:
        """Hinge loss on real and fake pairs; W is also pulled towards the embeddings."""
        with self.autocast():
            real_scores, _ = self.discriminator(batch["target"], batch["target_landmarks"],
                                                batch["video"])
            fake_scores, _ = self.discriminator(fake, batch["target_landmarks"], batch["video"])
            hinge = discriminator_hinge(real_scores.float(), fake_scores.float())
            columns = unwrap(self.discriminator).video_embeddings[:, batch["video"]].T
            match = self.settings.losses.match * embedding_match(columns, embeddings.float())
        optimiser = self.optimisers["discriminator"]
        optimiser.zero_grad(set_to_none=True)
        (hinge + match).backward()
        optimiser.step()
        return {"discriminator": hinge.detach(), "real_score": real_scores.mean().detach(),
                "fake_score": fake_scores.mean().detach()}

    def check(self, losses: dict[str, float], fake: Tensor) -> None:
        """Stop on non-finite losses, or after ``collapse_patience`` steps of flat images."""
        bad = [name for name, value in losses.items() if not math.isfinite(value)]
        if bad:
            raise DivergedError(f"loss {bad[0]} is {losses[bad[0]]}")
        flat = bool((fake.float().flatten(1).std(dim=1) < FLAT_IMAGE_STD).all())
        self.flat_steps = self.flat_steps + 1 if flat else 0
        if self.flat_steps >= self.settings.collapse_patience:
            raise DivergedError(f"the generator has produced flat images for "
                                f"{self.flat_steps} steps (collapse)")
