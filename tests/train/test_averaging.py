import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from torch.nn.utils import parametrize

from tests.conftest import fast_settings
from vcam.models.blocks import refresh_spectral_norm
from vcam.models.config import get_config
from vcam.models.store import MetaModels, load_models
from vcam.train.averaging import WeightAverage
from vcam.train.checkpoint import latest_checkpoint
from vcam.train.run import run_meta_training


def nudged(models: MetaModels, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in models.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))


def test_the_average_follows_the_weights_with_its_decay():
    models = MetaModels(get_config("tiny"), 3)
    average = WeightAverage(models, 0.75)
    average.update(models)  # the first update copies
    before = {name: value.clone() for name, value in models.named_parameters()}
    nudged(models, 1)
    average.update(models)
    averaged = dict(average.module.named_parameters())
    for name, value in models.named_parameters():
        expected = 0.75 * before[name] + 0.25 * value.detach()
        torch.testing.assert_close(averaged[name], expected, msg=name)
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(models, 1.0)


def largest_norm_error(module: torch.nn.Module) -> float:
    """How far the spectral norm of the eval-mode weights is from 1, at worst."""
    module.eval()
    norms = [float(torch.linalg.matrix_norm(layer.weight.detach().flatten(1), 2))
             for layer in module.modules() if parametrize.is_parametrized(layer, "weight")]
    assert norms
    return max(abs(norm - 1.0) for norm in norms)


def test_a_settled_average_is_spectrally_normalised():
    models = MetaModels(get_config("tiny"), 3)
    average = WeightAverage(models, 0.5)
    average.update(models)
    for seed in range(3):
        nudged(models, seed)
        average.update(models)
    assert largest_norm_error(average.module) > 0.1  # vectors of the first weights
    refresh_spectral_norm(models, 300)  # as a run's steps iterate the trained weights' vectors
    average.module.train()
    settled = average.settled(models)
    assert settled.training  # the mode is kept
    # As well normalised as the trained networks themselves (random weights have small
    # spectral gaps, so power iteration converges slowly on both).
    assert largest_norm_error(settled) < max(0.03, 1.5 * largest_norm_error(models))


def test_an_averaged_run_checkpoints_the_average_and_resumes_exactly(tiny_dataset, tmp_path):
    config = get_config("tiny")
    settings = fast_settings(steps=6, weight_average=0.5)
    run_meta_training(tiny_dataset, tmp_path / "whole", config, settings, quiet=True)
    run_meta_training(tiny_dataset, tmp_path / "split", config,
                      fast_settings(steps=3, weight_average=0.5), quiet=True)
    run_meta_training(tiny_dataset, tmp_path / "split", config, settings, resume=True,
                      quiet=True)
    whole = load_file(str(latest_checkpoint(tmp_path / "whole") / "weights.safetensors"))
    split = load_file(str(latest_checkpoint(tmp_path / "split") / "weights.safetensors"))
    assert whole.keys() == split.keys()
    for key in whole:
        np.testing.assert_allclose(whole[key], split[key], atol=1e-6, err_msg=key)
    model_keys = {key.removeprefix("models.") for key in whole if key.startswith("models.")}
    assert model_keys == {key.removeprefix("training.") for key in whole
                          if key.startswith("training.")}
    # The model is the average, not the last trained weights.
    name = next(key for key in model_keys if key.startswith("generator.") and "weight" in key)
    assert not np.allclose(whole[f"models.{name}"], whole[f"training.{name}"])
    loaded = load_models(tmp_path / "whole").state_dict()
    np.testing.assert_allclose(loaded[name].numpy(), whole[f"models.{name}"], atol=1e-6)
