"""Architecture configuration shared by the embedder, generator and discriminator.

A :class:`ModelConfig` is parsed once at the edge (CLI, checkpoint metadata) and passed to the
network constructors explicitly. Three named configurations exist:

* ``paper``: the ICCV 2019 model: 256 px, widths 64 -> 512, N = 512, self-attention at 32x32 in
  the generator's encoder, the embedder and the discriminator, and at 64x64 in the decoder.
* ``cpu``: a narrow variant sized so the personalised generator renders a 256 px frame in
  under 25 ms on two CPU cores through ONNX Runtime: the generator's first conv has stride 2
  and its output is a pixel shuffle, so only two thin convolutions run at 256 px; widths
  16 -> 256 (N = 256) with the extra capacity at low resolution (bottleneck at 8x8);
  attention only at 16x16 (encoder) and 32x32 (decoder, embedder, discriminator).
* ``tiny``: 64 px, widths 8 -> 32, N = 32; for tests, a forward and backward pass of all three
  networks takes a fraction of a second.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

GENERATOR_KINDS = ("direct", "warp")
MOUTH_INPUTS = ("warp", "cavity")
SMALLEST_RESOLUTION = 4


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the three networks.

    Attributes:
        image_size: side of the square frames and landmark images, a power of two.
        base_channels: width of the first (highest-resolution) feature maps.
        max_channels: widths double at every halving of resolution up to this cap.
        embedding_size: N, the size of the embedding ``e`` and of the discriminator's ``V``.
        num_down_blocks: residual downsampling blocks in the generator's encoder; the decoder
            has as many upsampling blocks (see :attr:`num_up_blocks`).
        num_bottleneck_blocks: AdaIN residual blocks at the generator's bottleneck.
        encoder_attention: resolutions after which the generator's encoder self-attends.
        decoder_attention: resolutions after which the generator's decoder self-attends.
        embedder_attention: resolutions after which the embedder self-attends.
        discriminator_attention: resolutions after which the discriminator self-attends.
        generator: ``"direct"`` (G sees the landmark image, 3 channels) or ``"warp"``
            (reserved: G also sees a 3-channel warped enrollment image, 6 channels).
        io_stride: the generator's first convolution downsamples by this factor and its output
            layer upsamples by it (pixel shuffle); 1 in the paper, 2 keeps the full-resolution
            work of a CPU model to two thin convolutions.
        mouth_input: what a warp-guided generator sees inside a mouth that opens beyond its
            source's: ``"warp"`` (the source's closed lips, stretched) or ``"cavity"`` (a dark
            hole cut there, :func:`vcam.warp.mouth_cavity`, so the network must paint it).
    """

    image_size: int
    base_channels: int
    max_channels: int
    embedding_size: int
    num_down_blocks: int
    num_bottleneck_blocks: int
    encoder_attention: tuple[int, ...] = ()
    decoder_attention: tuple[int, ...] = ()
    embedder_attention: tuple[int, ...] = ()
    discriminator_attention: tuple[int, ...] = ()
    generator: str = "direct"
    io_stride: int = 1
    mouth_input: str = "warp"

    def __post_init__(self) -> None:
        _check_power_of_two("image_size", self.image_size)
        _check_power_of_two("io_stride", self.io_stride)
        if self.generator not in GENERATOR_KINDS:
            raise ValueError(f"generator must be one of {GENERATOR_KINDS}, got {self.generator!r}")
        if self.mouth_input not in MOUTH_INPUTS:
            raise ValueError(f"mouth_input must be one of {MOUTH_INPUTS}, got {self.mouth_input!r}")
        if self.mouth_cavity and self.generator != "warp":
            raise ValueError("mouth_input='cavity' needs the warp-guided generator")
        if not 0 < self.base_channels <= self.max_channels:
            raise ValueError("need 0 < base_channels <= max_channels")
        if self.embedding_size <= 0 or self.num_bottleneck_blocks < 0:
            raise ValueError("embedding_size must be positive, num_bottleneck_blocks >= 0")
        if self.num_down_blocks < 1 or self.bottleneck_resolution < SMALLEST_RESOLUTION:
            raise ValueError(
                f"num_down_blocks={self.num_down_blocks} with io_stride={self.io_stride} must "
                f"leave a bottleneck of at least {SMALLEST_RESOLUTION} px at {self.image_size} px"
            )

    @property
    def mouth_cavity(self) -> bool:
        """Whether the network is given a dark cavity where the mouth opens (``mouth_input``)."""
        return self.mouth_input == "cavity"

    @property
    def num_up_blocks(self) -> int:
        """Upsampling blocks in the generator's decoder; it mirrors the encoder."""
        return self.num_down_blocks

    @property
    def generator_input_channels(self) -> int:
        """Channels of G's input: the landmark image, plus a warped image for ``warp``."""
        return 3 if self.generator == "direct" else 6

    @property
    def generator_stem_resolution(self) -> int:
        """Resolution of the generator's feature maps after its first convolution."""
        return self.image_size // self.io_stride

    @property
    def bottleneck_resolution(self) -> int:
        """Resolution of the generator's bottleneck."""
        return self.generator_stem_resolution // 2**self.num_down_blocks

    @property
    def num_critic_down_blocks(self) -> int:
        """Downsampling blocks of the embedder and discriminator: image size down to 4x4."""
        return int(math.log2(self.image_size // SMALLEST_RESOLUTION))

    def width(self, level: int) -> int:
        """Channel width ``level`` halvings below the first feature maps."""
        return min(self.base_channels * 2**level, self.max_channels)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (tuples become lists)."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error, not silently dropped."""
        known = {field.name: field for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown ModelConfig keys: {', '.join(unknown)}")
        values = {
            key: tuple(value) if isinstance(value, list) else value for key, value in data.items()
        }
        return cls(**values)


def _check_power_of_two(name: str, value: int) -> None:
    """Raise ValueError unless ``value`` is a positive power of two."""
    if value <= 0 or value & (value - 1):
        raise ValueError(f"{name} must be a positive power of two, got {value}")


def _paper() -> ModelConfig:
    return ModelConfig(
        image_size=256,
        base_channels=64,
        max_channels=512,
        embedding_size=512,
        num_down_blocks=4,
        num_bottleneck_blocks=5,
        encoder_attention=(32,),
        decoder_attention=(64,),
        embedder_attention=(32,),
        discriminator_attention=(32,),
    )


def _cpu() -> ModelConfig:
    """The paper's architecture, narrower, with the input and output at half resolution."""
    return dataclasses.replace(
        _paper(), base_channels=16, max_channels=256, embedding_size=256,
        encoder_attention=(16,), decoder_attention=(32,), io_stride=2)


def _tiny() -> ModelConfig:
    """64 px and a few channels: for tests."""
    return dataclasses.replace(
        _paper(), image_size=64, base_channels=8, max_channels=32, embedding_size=32,
        num_down_blocks=2, num_bottleneck_blocks=1, encoder_attention=(16,),
        decoder_attention=(32,), embedder_attention=(16,), discriminator_attention=(16,))


def _builders() -> dict[str, Callable[[], ModelConfig]]:
    return {"paper": _paper, "cpu": _cpu, "tiny": _tiny}


def config_names() -> tuple[str, ...]:
    """Names accepted by :func:`get_config`."""
    return tuple(_builders())


def get_config(name: str) -> ModelConfig:
    """The named configuration; ValueError listing the valid names otherwise."""
    builders = _builders()
    if name not in builders:
        raise ValueError(f"unknown model config {name!r}; choose one of: {', '.join(builders)}")
    return builders[name]()


def config_from_file(data: object) -> ModelConfig:
    """A configuration read from a file someone else may have written: every value of the
    right type and within the bounds of the named configurations (no wider, deeper, larger
    or more attentive), so no network it describes is bigger than the ``paper`` model.
    ValueError says which value is out of bounds."""
    if not isinstance(data, dict):
        raise ValueError("the model config is not a JSON object")
    try:
        config = ModelConfig.from_dict({key: _checked_value(key, value)
                                        for key, value in data.items()})
    except TypeError:  # a required value is missing
        raise ValueError("the model config is incomplete") from None
    named = [get_config(name) for name in config_names()]
    for field in dataclasses.fields(ModelConfig):
        value = getattr(config, field.name)
        if isinstance(value, int) and value > max(getattr(known, field.name) for known in named):
            raise ValueError(f"model config {field.name}={value} is larger than any vcam model")
        if isinstance(value, tuple):
            _check_attention(field.name, value, named)
    return config


def _checked_value(key: str, value: object) -> object:
    """``value`` if it has the JSON type of the field (that of the ``paper`` config's value:
    int, list of int, or str); unknown keys pass on to ``from_dict``, which names them."""
    example = getattr(get_config("paper"), key, None)
    fits = (isinstance(value, list) and all(_is_int(item) for item in value)
            if isinstance(example, tuple) else
            isinstance(value, str) if isinstance(example, str) else _is_int(value))
    if example is not None and not fits:
        raise ValueError(f"model config {key}={str(value)[:40]!r} has the wrong type")
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_attention(name: str, resolutions: tuple[int, ...], named: list[ModelConfig]) -> None:
    """No more attention layers, and none at a finer resolution, than the named configs."""
    known = [getattr(config, name) for config in named]
    largest = max(max(values, default=0) for values in known)
    if len(resolutions) > max(len(values) for values in known) or any(
            not 0 < resolution <= largest for resolution in resolutions):
        raise ValueError(f"model config {name}={list(resolutions)} attends more, or at finer "
                         "resolutions, than any vcam model")
