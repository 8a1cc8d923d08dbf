"""Fixtures of the engine tests: a tiny personalised generator with seeded random weights."""

from __future__ import annotations

import pytest
import torch

from vcam.models import Generator, PersonalisedGenerator, get_config


@pytest.fixture(scope="module")
def generator() -> torch.nn.Module:
    torch.manual_seed(0)
    network = Generator(get_config("tiny"))
    psi = torch.randn(1, network.adain_param_count) * 0.1
    return PersonalisedGenerator(network, psi).deployable()
