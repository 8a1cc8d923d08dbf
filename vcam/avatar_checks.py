"""What an avatar bundle must be before anything is built from it, checked in one place.

A bundle may come from anyone (a download, a peer in a call), and its SHA-256 only proves
that nobody changed it since it was written. So everything is checked on load, cheaply and
before a network is built: the model config within the bounds of vcam's own models, exactly
the generator tensors that config has (names, shapes, float32), the enrollment entries
(at least one frame, landmarks ``(T, 68, 2)``), finite numbers, a usable name. Entries a
newer bundle may carry are declared in :data:`OPTIONAL_ENTRIES`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch

from vcam.backdrop import MAX_SIDE as BACKDROP_MAX_SIDE
from vcam.models.config import ModelConfig, config_from_file
from vcam.models.generator import Generator, PersonalisedGenerator

GENERATOR_PREFIX = "generator."
LANDMARK_POINTS = 68
MAX_NAME_CHARS = 100


class BundleProblem(Exception):
    """What is wrong with a bundle, on one line."""


@dataclass(frozen=True)
class Enrollment:
    """What entry shapes are checked against: the crop size and the enrollment frames."""

    image_size: int
    frames: int


@dataclass(frozen=True)
class EntryRule:
    """An entry's dtype and shape: ``fits(shape, enrollment)``, described as ``shape``."""

    dtype: torch.dtype
    shape: str
    fits: Callable[[tuple[int, ...], Enrollment], bool]


REQUIRED_ENTRIES: Mapping[str, EntryRule] = MappingProxyType({
    "enrollment.crops": EntryRule(
        torch.uint8, "(T, S, S, 3)",
        lambda shape, enrollment: shape == (enrollment.frames, enrollment.image_size,
                                            enrollment.image_size, 3)),
    "enrollment.landmarks": EntryRule(
        torch.float32, "(T, 68, 2)",
        lambda shape, enrollment: shape == (enrollment.frames, LANDMARK_POINTS, 2)),
})
# Entries a bundle may carry or lack; each is checked like a required one when present.
OPTIONAL_ENTRIES: Mapping[str, EntryRule] = MappingProxyType({
    # Format 2: the enrollment photo around the face and its affine to the neutral crop
    # (vcam.backdrop; the two come together, which vcam.avatar checks).
    "backdrop.image": EntryRule(
        torch.uint8, f"(H, W, 3), 1 to {BACKDROP_MAX_SIDE} px a side",
        lambda shape, _: len(shape) == 3 and shape[2] == 3
        and min(shape[:2]) >= 1 and max(shape[:2]) <= BACKDROP_MAX_SIDE),
    "backdrop.to_crop": EntryRule(torch.float32, "(2, 3)", lambda shape, _: shape == (2, 3)),
})


def valid_name(name: object) -> bool:
    """Letters, digits, '-', '_' and '.', not starting with '.', at most 100 characters."""
    return (isinstance(name, str) and 0 < len(name) <= MAX_NAME_CHARS
            and all(c.isalnum() or c in "-_." for c in name) and not name.startswith("."))


def check_bundle(tensors: Mapping[str, torch.Tensor], document: Mapping) -> ModelConfig:
    """The bundle's model config, once every check has passed; ``BundleProblem`` otherwise.
    ``document``: the bundle's metadata (format and version already checked)."""
    try:
        config = config_from_file(document.get("config"))
    except ValueError as error:
        raise BundleProblem(str(error)) from None
    if not valid_name(document.get("name")):
        raise BundleProblem("its name is missing or not a valid avatar name")
    check_generator(tensors, config)
    check_entries(tensors, config.image_size)
    check_values(tensors, config.image_size)
    return config


def expected_generator(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of the personalised generator ``config`` describes
    (built on the meta device: no memory, no arithmetic)."""
    with torch.device("meta"):
        generator = Generator(config, spectral_norm=False)
        personalised = PersonalisedGenerator(
            generator, torch.zeros(1, generator.adain_param_count), trainable_psi=False)
    return {GENERATOR_PREFIX + key: tuple(value.shape)
            for key, value in personalised.state_dict().items()}


def check_generator(tensors: Mapping[str, torch.Tensor], config: ModelConfig) -> None:
    expected = expected_generator(config)
    present = {key for key in tensors if key.startswith(GENERATOR_PREFIX)}
    missing, extra = sorted(set(expected) - present), sorted(present - set(expected))
    if missing or extra:
        raise BundleProblem(f"its generator does not match its config ("
                            f"{len(missing)} tensors missing, {len(extra)} unexpected, e.g. "
                            f"{(missing + extra)[0][:80]})")
    for key, shape in expected.items():
        tensor = tensors[key]
        if tensor.dtype != torch.float32 or tuple(tensor.shape) != shape:
            raise BundleProblem(f"generator tensor {key[:80]} is {tensor.dtype} "
                                f"{tuple(tensor.shape)}, expected float32 {shape}")


def check_entries(tensors: Mapping[str, torch.Tensor], image_size: int) -> None:
    """The enrollment entries (and any optional ones), and no other entries."""
    unknown = sorted(key for key in tensors if not key.startswith(GENERATOR_PREFIX)
                     and key not in REQUIRED_ENTRIES and key not in OPTIONAL_ENTRIES)
    if unknown:
        raise BundleProblem(f"it holds an entry vcam does not know ({unknown[0][:80]})")
    crops = tensors.get("enrollment.crops")
    frames = crops.shape[0] if crops is not None and crops.dim() > 0 else 0
    if frames < 1:
        raise BundleProblem("it has no enrollment frames")
    enrollment = Enrollment(image_size, frames)
    rules = {**REQUIRED_ENTRIES, **{key: rule for key, rule in OPTIONAL_ENTRIES.items()
                                    if key in tensors}}
    for key, rule in rules.items():
        tensor = tensors.get(key)
        if tensor is None:
            raise BundleProblem(f"it has no {key}")
        if tensor.dtype != rule.dtype or not rule.fits(tuple(tensor.shape), enrollment):
            raise BundleProblem(f"{key} is {tensor.dtype} {tuple(tensor.shape)}, expected "
                                f"{rule.dtype} {rule.shape} (T={frames}, S={image_size})")


def check_values(tensors: Mapping[str, torch.Tensor], image_size: int) -> None:
    """Finite weights, and landmarks near the crop (within one crop size of it)."""
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise BundleProblem(f"{key[:80]} holds values that are not finite")
    landmarks = tensors["enrollment.landmarks"]
    if bool(((landmarks < -image_size) | (landmarks > 2 * image_size)).any()):
        raise BundleProblem("its enrollment landmarks lie far outside the crop")
