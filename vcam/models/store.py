"""The meta-learned networks as one object, and loading them from a run, a checkpoint or a
model file (safetensors + JSON; never a pickle)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from vcam.errors import UserError
from vcam.landmarks.shape_basis import ShapeBasis, load_shape_basis, synthetic_shape_basis
from vcam.models.config import ModelConfig
from vcam.models.discriminator import Discriminator
from vcam.models.embedder import Embedder
from vcam.models.generator import Generator

MODEL_PREFIX = "models."


class MetaModels(nn.Module):
    """E, G and D together (one state dict, one device move). ``num_videos`` None: E and G
    only (``discriminator`` is None), all that rendering and feed-forward enrollment use."""

    def __init__(self, config: ModelConfig, num_videos: int | None) -> None:
        super().__init__()
        self.config = config
        self.embedder = Embedder(config)
        self.generator = Generator(config)
        self.discriminator = None if num_videos is None else Discriminator(config, num_videos)


def find_weights(path: Path) -> tuple[Path, dict]:
    """The weights file and metadata of a run folder (its latest checkpoint), a checkpoint
    folder, or a model file ``NAME.safetensors`` with ``NAME.json`` beside it."""
    if path.is_dir():
        pointer = path / "checkpoints" / "latest"
        if pointer.is_file():
            path = path / "checkpoints" / pointer.read_text().strip()
        weights, meta = path / "weights.safetensors", path / "state.json"
    else:
        weights, meta = path, path.with_suffix(".json")
    if not weights.is_file() or not meta.is_file():
        raise UserError(f"{path} is not a vcam model: pass a run folder, a checkpoint folder "
                        "or a .safetensors model file with its .json beside it")
    try:
        return weights, json.loads(meta.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read {meta}: {error}") from None


def load_models(path: Path, device: torch.device | str = "cpu",
                discriminator: bool = True) -> MetaModels:
    """The meta-learned E, G and D (eval mode) from ``path`` (see :func:`find_weights`);
    without ``discriminator``, E and G only (inference: rendering, feed-forward enrollment)."""
    weights_path, meta = find_weights(path)
    try:
        config = ModelConfig.from_dict(meta["config"])
        weights = load_file(str(weights_path))
    except (KeyError, ValueError, OSError) as error:
        raise UserError(f"{weights_path} is not a readable vcam model ({error})") from None
    own = {key.removeprefix(MODEL_PREFIX): value.float() for key, value in weights.items()
           if key.startswith(MODEL_PREFIX)}
    columns = own.get("discriminator.video_embeddings")
    if columns is None:
        raise UserError(f"{weights_path} holds no discriminator: it is not a vcam model")
    if not discriminator:
        own = {key: value for key, value in own.items() if not key.startswith("discriminator.")}
    models = MetaModels(config, columns.shape[1] if discriminator else None)
    try:
        models.load_state_dict(own)
    except RuntimeError as error:
        raise UserError(f"{weights_path} does not match its config: "
                        f"{str(error).splitlines()[0]}") from None
    return models.to(device).eval()


def model_checksum(path: Path) -> str:
    """SHA-256 of the weights a model path resolves to (see :func:`find_weights`)."""
    weights_path, _ = find_weights(path)
    digest = hashlib.sha256()
    with weights_path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shipped_weights_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "weights"


def shipped_shape_basis_path() -> Path | None:
    """The landmark shape basis shipped with the default model (``vcam train export``
    writes it beside the model), or None when this copy ships none."""
    path = shipped_weights_dir() / "default.shape-basis.safetensors"
    return path if path.is_file() else None


def default_shape_basis() -> ShapeBasis:
    """The basis calls encode with unless ``--shape-basis`` says otherwise: the one shipped
    with the default model (PCA of its training landmarks), else the built-in synthetic
    one."""
    shipped = shipped_shape_basis_path()
    return load_shape_basis(shipped) if shipped is not None else synthetic_shape_basis()


def default_model_path() -> Path:
    """The model shipped with vcam (``vcam/weights/default.safetensors``)."""
    path = shipped_weights_dir() / "default.safetensors"
    if not path.is_file():
        raise UserError("this copy of vcam ships no default model yet: pass --model RUN "
                        "(a folder made by `vcam train meta`)")
    return path
