"""An exponential moving average of the trained weights (``vcam train meta --weight-average``).

With batches of a few episodes on a CPU, consecutive checkpoints differ by the noise of their
last steps as much as by learning. The average smooths that out: after every optimiser step
``average = decay * average + (1 - decay) * trained`` over E, G and D's parameters. A run's
checkpoints then hold the average as their model (what `vcam eval`, `vcam train export` and
``--init`` read) and the trained weights beside it, under ``training``, for ``--resume``.

Spectral normalisation keeps power-iteration vectors as buffers; they belong to the weights
they were iterated on. :meth:`WeightAverage.settled` starts from the trained networks' vectors
(iterated once a step for the whole run, on weights close to the average) and iterates them a
few more times on the averaged weights before the average is saved.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from vcam.models.blocks import refresh_spectral_norm

# Power iterations that settle the averaged weights' spectral-norm vectors before a save.
SETTLE_ITERATIONS = 10


class WeightAverage:
    """The running average of ``models`` (a copy, on the same device)."""

    def __init__(self, models: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the decay must lie between 0 and 1, got {decay}")
        self.decay = decay
        self._averaged = AveragedModel(models, multi_avg_fn=get_ema_multi_avg_fn(decay),
                                       use_buffers=False)

    @property
    def module(self) -> nn.Module:
        return self._averaged.module

    @torch.no_grad()
    def update(self, models: nn.Module) -> None:
        """Fold the trained weights of this step in (the first update copies them)."""
        self._averaged.update_parameters(models)

    @torch.no_grad()
    def settled(self, trained: nn.Module) -> nn.Module:
        """The averaged networks with spectral-norm vectors that fit their weights, taken
        from ``trained`` (the networks being averaged) and iterated further."""
        vectors = dict(trained.named_buffers())
        for name, buffer in self.module.named_buffers():
            buffer.copy_(vectors[name])
        return refresh_spectral_norm(self.module, SETTLE_ITERATIONS)

    def restore(self, state: dict[str, torch.Tensor]) -> None:
        """Continue from a saved average (a state dict of the networks)."""
        self.module.load_state_dict(state)
        self._averaged.n_averaged.fill_(1)
