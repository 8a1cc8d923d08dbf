"""Tests of the embedder, generator and discriminator over the named configurations."""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from vcam.models import (
    Discriminator,
    Embedder,
    Generator,
    ModelConfig,
    PersonalisedGenerator,
    config_names,
    get_config,
)
from vcam.models.blocks import AdaIN, layers_without_spectral_norm
from vcam.models.generator import OUTPUT_CHANNELS

NUM_VIDEOS = 5
CHEAP_CONFIGS = ("tiny", "cpu")

# Parameter counts (millions) each config must stay within: (E, G, D without W).
# Measured: paper 12.58 / 46.71 / 17.30, cpu 1.89 / 8.88 / 3.07, tiny 0.030 / 0.049 / 0.049.
PARAMETER_RANGES_M = {
    "paper": ((10.0, 15.0), (40.0, 55.0), (15.0, 20.0)),
    "cpu": ((1.5, 2.5), (7.0, 11.0), (2.5, 4.0)),
    "tiny": ((0.01, 0.1), (0.02, 0.1), (0.02, 0.1)),
}


@functools.cache
def networks(name: str) -> tuple[Embedder, Generator, Discriminator]:
    """E, G and D for a named config, built once per test session with a fixed seed."""
    torch.manual_seed(0)
    config = get_config(name)
    return Embedder(config), Generator(config), Discriminator(config, NUM_VIDEOS)


def pair(config: ModelConfig, batch: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A random (frame, landmark image) batch in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, 3, config.image_size, config.image_size)
    frame = torch.rand(shape, generator=generator) * 2 - 1
    landmarks = torch.rand(shape, generator=generator) * 2 - 1
    return frame, landmarks


def count_m(module: nn.Module, exclude: tuple[nn.Parameter, ...] = ()) -> float:
    """Parameter count in millions, leaving out ``exclude``."""
    excluded = {id(p) for p in exclude}
    return sum(p.numel() for p in module.parameters() if id(p) not in excluded) / 1e6


# --- config -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", config_names())
def test_config_round_trips_through_json(name: str) -> None:
    config = get_config(name)
    restored = ModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config


def test_unknown_config_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="paper, cpu, tiny"):
        get_config("huge")


def test_from_dict_rejects_unknown_keys() -> None:
    data = get_config("tiny").to_dict() | {"base_width": 8}
    with pytest.raises(ValueError, match="base_width"):
        ModelConfig.from_dict(data)


@pytest.mark.parametrize(
    "change",
    [{"image_size": 100}, {"generator": "flow"}, {"num_down_blocks": 5}, {"io_stride": 3},
     {"mouth_input": "teeth"}, {"mouth_input": "cavity"}],
)
def test_invalid_config_is_refused(change: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(get_config("tiny"), **change)


def test_paper_config_follows_the_paper() -> None:
    config = get_config("paper")
    assert (config.image_size, config.embedding_size) == (256, 512)
    assert (config.base_channels, config.max_channels) == (64, 512)
    assert config.encoder_attention == config.embedder_attention == (32,)
    assert config.discriminator_attention == (32,)
    assert config.decoder_attention == (64,)
    assert config.generator_input_channels == 3


def test_warp_generator_takes_six_channels() -> None:
    config = dataclasses.replace(get_config("tiny"), generator="warp")
    assert config.generator_input_channels == 6
    generator = Generator(config)
    inputs = torch.zeros(2, 6, config.image_size, config.image_size)
    output = generator(inputs, e=torch.rand(2, config.embedding_size))
    assert output.shape == (2, OUTPUT_CHANNELS, config.image_size, config.image_size)



@pytest.mark.parametrize("stride", [1, 2])
def test_warp_generator_blends_the_warped_image_it_is_given(stride: int) -> None:
    config = dataclasses.replace(get_config("tiny"), generator="warp", io_stride=stride)
    torch.manual_seed(0)
    generator = Generator(config).eval()
    size = config.image_size
    landmarks = torch.rand(1, 3, size, size) * 2 - 1
    warped = torch.rand(1, 3, size, size) * 2 - 1
    embedding = torch.rand(1, config.embedding_size)
    with torch.no_grad():
        untrained = generator(torch.cat([landmarks, warped], 1), e=embedding)
        # Untrained, the blend leans on the warp: far closer to it than to anything else.
        assert (untrained - warped).abs().mean() < 0.35 * (untrained + warped).abs().mean()
        # A mask saturated at 1 everywhere passes the warp through exactly.
        generator.head_conv.bias[OUTPUT_CHANNELS * stride**2:] = 50.0
        passed = generator(torch.cat([landmarks, warped], 1), e=embedding)
    assert torch.allclose(passed, warped, atol=1e-5)

# --- sizes and structure --------------------------------------------------------------------


@pytest.mark.parametrize("name", config_names())
def test_parameter_counts_stay_in_range(name: str) -> None:
    embedder, generator, discriminator = networks(name)
    counts = (
        count_m(embedder),
        count_m(generator),
        count_m(discriminator, exclude=(discriminator.video_embeddings,)),
    )
    for count, (low, high) in zip(counts, PARAMETER_RANGES_M[name], strict=True):
        assert low <= count <= high, f"{name}: {counts}"


@pytest.mark.parametrize("name", config_names())
def test_every_conv_and_linear_is_spectrally_normalised(name: str) -> None:
    for network in networks(name):
        assert layers_without_spectral_norm(network) == []


@pytest.mark.parametrize("name", config_names())
def test_adain_params_cover_exactly_the_adain_layers(name: str) -> None:
    _, generator, _ = networks(name)
    adain_layers = [m for m in generator.modules() if isinstance(m, AdaIN)]
    consumed = sum(2 * layer.num_features for layer in adain_layers)
    assert generator.adain_param_count == consumed
    psi = generator.adain_params(torch.zeros(1, generator.config.embedding_size))
    assert psi.shape == (1, consumed)


def test_generator_refuses_psi_of_the_wrong_size() -> None:
    _, generator, _ = networks("tiny")
    _, landmarks = pair(generator.config, batch=1)
    with pytest.raises(ValueError):
        generator(landmarks, psi=torch.zeros(1, generator.adain_param_count + 2))


# --- forward passes ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", CHEAP_CONFIGS)
def test_output_shapes_and_ranges(name: str) -> None:
    embedder, generator, discriminator = networks(name)
    config = generator.config
    frame, landmarks = pair(config, batch=2)
    with torch.no_grad():
        e = embedder(frame, landmarks)
        fake = generator(landmarks, e=e)
        score, features = discriminator(fake, landmarks, torch.tensor([0, NUM_VIDEOS - 1]))
    assert e.shape == (2, config.embedding_size)
    assert (e >= 0).all()
    assert fake.shape == frame.shape
    assert fake.abs().max() <= 1
    assert score.shape == (2,)
    assert features[-1].shape == (2, config.embedding_size, 4, 4)
    assert all(f.shape[0] == 2 for f in features)


def test_tiny_forward_backward_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    config = get_config("tiny")
    embedder, generator = Embedder(config), Generator(config)
    discriminator = Discriminator(config, NUM_VIDEOS)
    frame, landmarks = pair(config, batch=2)
    e = embedder(frame, landmarks)
    fake = generator(landmarks, e=e)
    score, features = discriminator(fake, landmarks, torch.tensor([1, 2]))
    (score.sum() + sum(f.mean() for f in features)).backward()
    for network in (embedder, generator, discriminator):
        missing = [n for n, p in network.named_parameters() if p.grad is None]
        assert missing == []


def test_k_shot_embedding_is_the_mean_over_frames() -> None:
    embedder, _, _ = networks("tiny")
    embedder.eval()  # in training mode every forward takes a power-iteration step
    frame, landmarks = pair(embedder.config, batch=3)
    with torch.no_grad():
        torch.testing.assert_close(
            embedder.embed_frames(frame, landmarks), embedder(frame, landmarks).mean(dim=0)
        )


@pytest.mark.parametrize("name", CHEAP_CONFIGS)
def test_psi_path_equals_embedding_path(name: str) -> None:
    _, generator, _ = networks(name)
    generator.eval()
    _, landmarks = pair(generator.config, batch=2)
    e = torch.rand(2, generator.config.embedding_size)
    with torch.no_grad():
        by_e = generator(landmarks, e=e)
        by_psi = generator(landmarks, psi=generator.adain_params(e))
    torch.testing.assert_close(by_e, by_psi)


@pytest.mark.parametrize("arguments", ["neither", "both"])
def test_generator_needs_exactly_one_of_e_and_psi(arguments: str) -> None:
    _, generator, _ = networks("tiny")
    _, landmarks = pair(generator.config, batch=1)
    e = torch.rand(1, generator.config.embedding_size)
    psi = generator.adain_params(e) if arguments == "both" else None
    with pytest.raises(ValueError, match="exactly one"):
        generator(landmarks, e=e if arguments == "both" else None, psi=psi)


@pytest.mark.parametrize("name", CHEAP_CONFIGS)
def test_projection_discriminator_matches_its_formula(name: str) -> None:
    _, _, discriminator = networks(name)
    discriminator.eval()
    frame, landmarks = pair(discriminator.config, batch=2)
    index = torch.tensor([3, 1])
    with torch.no_grad():
        nn.init.normal_(discriminator.shared_embedding, std=0.1)
        nn.init.constant_(discriminator.bias, 0.25)
        score, _ = discriminator(frame, landmarks, index)
        v, _ = discriminator.features(frame, landmarks)
    w = discriminator.video_embeddings.detach()
    w0 = discriminator.shared_embedding.detach()
    expected = torch.stack([v[k] @ (w[:, index[k]] + w0) + 0.25 for k in range(2)])
    torch.testing.assert_close(score, expected)


def test_fine_tuning_score_uses_the_given_projection_vector() -> None:
    embedder, _, discriminator = networks("tiny")
    discriminator.eval()
    frame, landmarks = pair(discriminator.config, batch=2)
    with torch.no_grad():
        w_prime = discriminator.shared_embedding + embedder(frame, landmarks).mean(dim=0)
        score, features = discriminator.score_with_vector(frame, landmarks, w_prime)
        v, _ = discriminator.features(frame, landmarks)
    torch.testing.assert_close(score, v @ w_prime + discriminator.bias)
    assert len(features) > 0


# --- personalised generator and export ------------------------------------------------------


def test_personalised_generator_reproduces_the_feed_forward_result() -> None:
    _, generator, _ = networks("tiny")
    generator.eval()
    _, landmarks = pair(generator.config, batch=2)
    e = torch.rand(generator.config.embedding_size)
    personalised = PersonalisedGenerator.from_embedding(generator, e, trainable_psi=True)
    assert personalised.psi.requires_grad
    with torch.no_grad():
        torch.testing.assert_close(personalised(landmarks), generator(landmarks, e=e[None]))


def test_frozen_psi_is_not_trainable_and_sizes_are_checked() -> None:
    _, generator, _ = networks("tiny")
    e = torch.rand(generator.config.embedding_size)
    frozen = PersonalisedGenerator.from_embedding(generator, e, trainable_psi=False)
    assert not frozen.psi.requires_grad
    with pytest.raises(ValueError):
        PersonalisedGenerator(generator, torch.zeros(3))


@pytest.mark.parametrize("name", CHEAP_CONFIGS)
def test_deployable_copy_folds_spectral_norm(name: str) -> None:
    _, generator, _ = networks(name)
    generator.eval()
    e = torch.rand(generator.config.embedding_size)
    personalised = PersonalisedGenerator.from_embedding(generator, e)
    deployable = personalised.deployable()
    assert not deployable.training
    assert not any(p.requires_grad for p in deployable.parameters())
    assert len(layers_without_spectral_norm(deployable)) == sum(
        isinstance(m, (nn.Conv2d, nn.Linear)) for m in deployable.modules()
    )
    assert layers_without_spectral_norm(personalised) == []  # the original is untouched
    _, landmarks = pair(generator.config, batch=1)
    with torch.no_grad():
        torch.testing.assert_close(deployable(landmarks), personalised(landmarks))


@pytest.mark.parametrize("name", CHEAP_CONFIGS)
def test_onnx_export_matches_torch(name: str) -> None:
    _, generator, _ = networks(name)
    e = torch.rand(generator.config.embedding_size)
    deployable = PersonalisedGenerator.from_embedding(generator, e).deployable()
    _, landmarks = pair(generator.config, batch=1)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            deployable,
            (landmarks,),
            buffer,
            dynamo=False,
            opset_version=17,
            input_names=["landmarks"],
            output_names=["frame"],
        )
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == list(landmarks.shape)
    (onnx_frame,) = session.run(None, {"landmarks": landmarks.numpy()})
    with torch.no_grad():
        torch_frame = deployable(landmarks).numpy()
    assert np.abs(onnx_frame - torch_frame).max() <= 1e-3


def test_paper_networks_forward_at_batch_one() -> None:
    embedder, generator, discriminator = networks("paper")
    frame, landmarks = pair(generator.config, batch=1)
    with torch.no_grad():
        e = embedder(frame, landmarks)
        fake = generator(landmarks, e=e)
        score, features = discriminator(fake, landmarks, torch.tensor([0]))
    assert e.shape == (1, 512)
    assert fake.shape == (1, 3, 256, 256)
    assert score.shape == (1,)
    assert [f.shape[-1] for f in features] == [128, 64, 32, 32, 16, 8, 4, 4]
