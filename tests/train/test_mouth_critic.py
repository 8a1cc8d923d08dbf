import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file
from safetensors.torch import load

from tests.conftest import fast_settings
from vcam.commands.train import loss_weights
from vcam.data.clips import open_dataset
from vcam.errors import UserError
from vcam.models.config import get_config
from vcam.models.generator import generator_input
from vcam.models.losses import LossWeights, discriminator_hinge
from vcam.models.mouth_critic import MouthCritic
from vcam.models.store import MetaModels, load_models
from vcam.train import export
from vcam.train.checkpoint import latest_checkpoint
from vcam.train.meta import MetaTrainer
from vcam.train.run import run_meta_training
from vcam.train.snapshot import SnapshotEpisodes

WARP_TINY = dataclasses.replace(get_config("tiny"), generator="warp")
WITH_CRITIC = LossWeights(pixel=1.0, mouth=1.0, mouth_adversarial=1.0)


def critic_settings(**changes):
    return fast_settings(shots=1, episodes="snapshot", losses=WITH_CRITIC, **changes)


def test_the_critic_learns_to_tell_sharp_mouths_from_blurred_ones():
    torch.manual_seed(0)
    critic = MouthCritic(channels=16)
    optimiser = torch.optim.Adam(critic.parameters(), lr=2e-3, betas=(0.5, 0.999))
    landmarks = torch.zeros(8, 3, 64, 64)

    def mouths() -> tuple[torch.Tensor, torch.Tensor]:
        sharp = (torch.rand(8, 1, 16, 16) > 0.5).float().repeat_interleave(4, 2)
        sharp = sharp.repeat_interleave(4, 3).expand(-1, 3, -1, -1) * 2 - 1
        return sharp, F.avg_pool2d(sharp, 9, stride=1, padding=4)

    for _ in range(60):
        sharp, blurred = mouths()
        loss = discriminator_hinge(critic(sharp, landmarks), critic(blurred, landmarks))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    sharp, blurred = mouths()
    with torch.no_grad():
        assert critic(sharp, landmarks).mean() > critic(blurred, landmarks).mean() + 0.5
    assert critic(sharp, landmarks).shape == (8, 1, 8, 8)


def test_a_step_trains_the_critic_and_scores_the_generator_against_it(tiny_dataset):
    clips = open_dataset(tiny_dataset).clips
    trainer = MetaTrainer(MetaModels(WARP_TINY, len(clips)), critic_settings(),
                          torch.device("cpu"))
    episodes = SnapshotEpisodes(clips, shots=1, size=64, batch=2)
    before = [p.detach().clone() for p in trainer.mouth_critic.parameters()]
    generator_before = [p.detach().clone() for p in trainer.models.generator.parameters()]
    losses = trainer.step(episodes.draw(0))
    assert {"mouth_adversarial", "mouth_critic", "mouth_real_score"} <= set(losses)
    assert any(not torch.equal(a, b) for a, b in
               zip(before, trainer.mouth_critic.parameters()))
    assert any(not torch.equal(a, b) for a, b in
               zip(generator_before, trainer.models.generator.parameters()))
    # The generator's term reaches the generator through the mouth crops.
    batch = episodes.draw(1)
    trainer.optimisers["mouth_critic"].zero_grad(set_to_none=True)
    fake = trainer.models.generator(
        generator_input(batch["target_landmarks"], batch["target_warp"]),
        e=trainer.embed(batch["frames"], batch["landmarks"]))
    term = trainer.mouth_adversarial_term(fake, batch)
    trainer.optimisers["generator"].zero_grad(set_to_none=True)
    term.backward()
    grads = [p.grad for p in trainer.models.generator.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    assert all(p.grad is None for p in trainer.mouth_critic.parameters())


def test_without_the_term_there_is_no_critic(tiny_dataset):
    clips = open_dataset(tiny_dataset).clips
    settings = fast_settings(shots=1, episodes="snapshot", losses=LossWeights(pixel=1.0))
    trainer = MetaTrainer(MetaModels(WARP_TINY, len(clips)), settings, torch.device("cpu"))
    assert trainer.mouth_critic is None and "mouth_critic" not in trainer.optimisers


def test_the_critic_is_checkpointed_resumed_exactly_and_never_exported(tiny_dataset, tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    run_meta_training(tiny_dataset, whole, WARP_TINY, critic_settings(steps=6), quiet=True)
    run_meta_training(tiny_dataset, split, WARP_TINY, critic_settings(steps=3), quiet=True)
    run_meta_training(tiny_dataset, split, WARP_TINY, critic_settings(steps=6), resume=True,
                      quiet=True)
    weights = [load_file(str(latest_checkpoint(run) / "weights.safetensors"))
               for run in (whole, split)]
    assert any(key.startswith("mouth_critic.") for key in weights[0])
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        np.testing.assert_allclose(weights[0][key], weights[1][key], atol=1e-5, err_msg=key)
    exported = export.model_bytes(latest_checkpoint(whole) / "weights.safetensors", half=True)
    assert exported and not any("critic" in key for key in load(exported))
    assert load_models(whole).discriminator is not None


def test_region_terms_without_snapshot_episodes_are_refused():
    assert loss_weights("mouth_adversarial=1", "snapshot").mouth_adversarial == 1
    for term in ("mouth_adversarial", "paint"):
        with pytest.raises(UserError, match="--episodes snapshot"):
            loss_weights(f"{term}=1", "nearest")
    assert loss_weights("pixel=1", "nearest").pixel == 1

