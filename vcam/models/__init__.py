"""The three networks of the paper (embedder E, generator G, discriminator D), their shared
blocks and configurations, and the loss networks."""

from vcam.models.config import ModelConfig, config_names, get_config
from vcam.models.discriminator import Discriminator
from vcam.models.embedder import Embedder
from vcam.models.generator import Generator, PersonalisedGenerator
from vcam.models.vgg import VGGFeatures, find_default_vgg_weights

__all__ = [
    "Discriminator",
    "Embedder",
    "Generator",
    "ModelConfig",
    "PersonalisedGenerator",
    "VGGFeatures",
    "config_names",
    "find_default_vgg_weights",
    "get_config",
]
