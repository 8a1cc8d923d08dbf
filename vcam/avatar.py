"""Avatar bundles: one person's personalised generator, ready to render, in one file.

``NAME.avatar.safetensors`` holds
- ``generator.*``: the personalised generator G' (AdaIN coefficients ``psi'`` baked in,
  spectral norm folded): a plain landmark-image -> frame network;
- ``enrollment.crops`` (T, S, S, 3) uint8 and ``enrollment.landmarks`` (T, 68, 2) float32:
  the enrollment crops and their landmarks; the first is the avatar's neutral face;
- optional (format 2): ``backdrop.image`` (H, W, 3) uint8, the enrollment photo around the
  face (longest side at most 1280 px), and ``backdrop.to_crop`` (2, 3) float32, the affine
  from its pixels to the neutral crop's (``vcam.backdrop``): what paste-back renders into.
  Format 1 bundles have none and are still read (they are shown in the tile layout);
and, in the safetensors header's metadata, a JSON document with the format version, the
model config, creation time and a SHA-256 checksum over every tensor and the metadata itself.
Nothing is ever unpickled: safetensors' header is JSON, its body raw numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_tensors

from vcam.avatar_checks import GENERATOR_PREFIX, BundleProblem, check_bundle, valid_name
from vcam.backdrop import Backdrop
from vcam.errors import UserError
from vcam.files import atomic_write_bytes
from vcam.models.config import ModelConfig
from vcam.models.generator import Generator, PersonalisedGenerator

AVATAR_FORMAT = "vcam-avatar"
AVATAR_VERSION = 2
# Format 1 lacks the optional backdrop; it is read as it is.
READABLE_VERSIONS = (1, 2)
SUFFIX = ".avatar.safetensors"
METADATA_KEY = "vcam_avatar"
# Larger files are refused before they are read (the paper config's G is about 190 MB).
MAX_AVATAR_BYTES = 400 << 20
HOME_ENV = "VCAM_HOME"
# The built-in avatar (scikit-image's astronaut photo), enrolled by each install for itself
# and cached per model; its creation time is fixed so that two installs with the same model
# make the same bytes (a call then needs to send nothing).
BUILTIN_AVATAR_NAME = "astronaut"
BUILTIN_CREATED = "built-in"


@dataclass(frozen=True)
class Avatar:
    """A loaded (or freshly enrolled) avatar."""

    name: str
    config: ModelConfig
    generator_state: dict[str, torch.Tensor]
    crops: np.ndarray
    landmarks: np.ndarray
    info: dict
    checksum: str = ""  # of the bundle it was loaded from; empty for a fresh enrollment
    backdrop: Backdrop | None = None  # the photo around the face, for paste-back

    @property
    def neutral_landmarks(self) -> np.ndarray:
        return self.landmarks[0]

    @property
    def neutral_crop(self) -> np.ndarray:
        return self.crops[0]

    def generator(self) -> PersonalisedGenerator:
        """The personalised generator, eval mode, on the CPU."""
        return build_generator(self.config, self.generator_state)

    def tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"generator.{key}": value.detach().cpu().contiguous()
                   for key, value in self.generator_state.items()}
        tensors["enrollment.crops"] = torch.from_numpy(np.ascontiguousarray(self.crops))
        tensors["enrollment.landmarks"] = torch.from_numpy(
            np.ascontiguousarray(self.landmarks, dtype=np.float32))
        if self.backdrop is not None:
            tensors["backdrop.image"] = torch.from_numpy(np.array(self.backdrop.image, copy=True))
            tensors["backdrop.to_crop"] = torch.from_numpy(
                np.ascontiguousarray(self.backdrop.to_crop, dtype=np.float32))
        return tensors

    def metadata(self) -> dict:
        return {"format": AVATAR_FORMAT, "version": AVATAR_VERSION, "name": self.name,
                "config": self.config.to_dict(), **self.info}


def build_generator(config: ModelConfig, state: dict[str, torch.Tensor]) -> PersonalisedGenerator:
    """A deployable personalised generator (plain weights) loaded from ``state``."""
    generator = Generator(config, spectral_norm=False).eval()
    psi = torch.zeros(1, generator.adain_param_count)
    personalised = PersonalisedGenerator(generator, psi, trainable_psi=False)
    personalised.load_state_dict(state)
    return personalised.eval().requires_grad_(False)


def checksum(tensors: dict[str, torch.Tensor], metadata: dict) -> str:
    """SHA-256 over the tensors (name, dtype, shape, bytes) and the canonical metadata."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        tensor = tensors[key].contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    digest.update(json.dumps(metadata, sort_keys=True).encode())
    return digest.hexdigest()


def avatar_bytes(avatar: Avatar) -> bytes:
    tensors, metadata = avatar.tensors(), avatar.metadata()
    document = metadata | {"checksum": checksum(tensors, metadata)}
    return save_tensors(tensors, metadata={METADATA_KEY: json.dumps(document, sort_keys=True)})


def save_avatar(avatar: Avatar, path: Path, force: bool = False) -> Path:
    """Write the bundle (temp file, then rename); refuses to overwrite without ``force``."""
    if path.exists() and not force:
        raise UserError(f"{path} already exists: pass --force to replace it")
    atomic_write_bytes(path, avatar_bytes(avatar))
    return path


def load_avatar(path: Path) -> Avatar:
    """Read and verify a bundle: size, format, version, contents and checksum; one-line errors."""
    if not path.is_file():
        raise UserError(f"avatar {path} does not exist")
    size = path.stat().st_size
    if size > MAX_AVATAR_BYTES:
        raise UserError(f"{path} is {size >> 20} MB, larger than any avatar: refused")
    try:
        tensors, document = read_bundle(path)
    except (SafetensorError, OSError, ValueError, KeyError) as error:
        raise UserError(f"{path} is not a readable avatar (truncated or corrupt: "
                        f"{str(error).splitlines()[0][:120]})") from None
    return verified(path, tensors, document)


def read_bundle(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    with safe_open(str(path), framework="pt") as bundle:
        header = bundle.metadata() or {}
        tensors = {key: bundle.get_tensor(key) for key in bundle.keys()}  # noqa: SIM118
    document = json.loads(header[METADATA_KEY])
    if not isinstance(document, dict):
        raise ValueError("its metadata is not a JSON object")
    return tensors, document


def verified(path: Path, tensors: dict[str, torch.Tensor], document: dict) -> Avatar:
    """The avatar, once format, version, contents (see ``vcam.avatar_checks``) and checksum
    have passed; a one-line ``UserError`` otherwise."""
    if document.get("format") != AVATAR_FORMAT:
        raise UserError(f"{path} is not a vcam avatar")
    if document.get("version") not in READABLE_VERSIONS:
        raise UserError(f"{path} is avatar format {str(document.get('version'))[:20]}; this "
                        f"vcam reads {', '.join(map(str, READABLE_VERSIONS))}: enroll again "
                        "with this version")
    try:
        config = check_bundle(tensors, document)
        backdrop = stored_backdrop(tensors)
    except BundleProblem as error:
        raise UserError(f"{path} is not a usable avatar: {error}") from None
    stored = document.pop("checksum", None)
    if not isinstance(stored, str) or stored != checksum(tensors, document):
        raise UserError(f"{path} failed its checksum: the file was altered or damaged")
    info = {key: value for key, value in document.items()
            if key not in ("format", "version", "name", "config")}
    state = {key.removeprefix(GENERATOR_PREFIX): value for key, value in tensors.items()
             if key.startswith(GENERATOR_PREFIX)}
    return Avatar(document["name"], config, state, tensors["enrollment.crops"].numpy(),
                  tensors["enrollment.landmarks"].numpy(), info, stored, backdrop)


def stored_backdrop(tensors: dict[str, torch.Tensor]) -> Backdrop | None:
    """The bundle's optional backdrop (entries already checked by ``check_bundle``);
    ``BundleProblem`` when only half of it is there or its transform is unusable."""
    image, to_crop = tensors.get("backdrop.image"), tensors.get("backdrop.to_crop")
    if image is None and to_crop is None:
        return None
    if image is None or to_crop is None:
        raise BundleProblem("backdrop.image and backdrop.to_crop come together")
    try:
        return Backdrop(image.numpy(), to_crop.numpy())
    except ValueError as error:
        raise BundleProblem(str(error)) from None


def vcam_home() -> Path:
    """The user's data folder (``$VCAM_HOME`` overrides the platform's default)."""
    override = os.environ.get(HOME_ENV)
    if override:
        return Path(override)
    from platformdirs import user_data_dir

    return Path(user_data_dir("vcam", appauthor=False))


def builtin_cache_dir() -> Path:
    """Where the built-in avatar is cached, one bundle per model."""
    return vcam_home() / "cache"


def avatars_dir() -> Path:
    return vcam_home() / "avatars"


def check_name(name: str) -> str:
    if not valid_name(name):
        raise UserError(f"avatar name {name!r}: use letters, digits, '-', '_' or '.' (at most 100)")
    return name


def avatar_path(name: str) -> Path:
    return avatars_dir() / f"{check_name(name)}{SUFFIX}"


def resolve_avatar(name_or_path: str) -> Path:
    """A bundle by name (in the data folder) or by path."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".safetensors" or candidate.exists():
        return candidate
    path = avatar_path(name_or_path)
    if not path.exists():
        known = ", ".join(entry["name"] for entry in list_avatars()) or "none yet"
        raise UserError(f"no avatar named {name_or_path!r} (enrolled: {known}); "
                        "create one with `vcam enroll PHOTO --name NAME`")
    return path


def list_avatars() -> list[dict]:
    """Name, path, config, shots (K), fine-tuning steps, creation time and coverage (what
    the stored enrollment landmarks span, vcam.coverage) of each bundle."""
    from vcam.coverage import coverage_summary

    entries = []
    for path in sorted(avatars_dir().glob(f"*{SUFFIX}")):
        try:
            with safe_open(str(path), framework="pt") as bundle:
                document = json.loads((bundle.metadata() or {})[METADATA_KEY])
                landmarks = bundle.get_tensor("enrollment.landmarks").numpy()
            if not isinstance(document, dict):
                raise ValueError("metadata is not a JSON object")
            coverage = coverage_summary(landmarks)
        except (SafetensorError, OSError, ValueError, KeyError):
            entries.append({"name": path.name.removesuffix(SUFFIX), "path": str(path),
                            "error": "unreadable"})
            continue
        entries.append({"name": document.get("name"), "path": str(path),
                        "config": document.get("config_name", "?"),
                        "shots": coverage.frames, "coverage": coverage.to_dict(),
                        "finetune_steps": document.get("finetune_steps"),
                        "created": document.get("created"),
                        "megabytes": round(path.stat().st_size / 1e6, 1)})
    return entries


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
