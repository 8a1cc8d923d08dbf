"""`vcam train export`: a training run's latest (or a chosen) checkpoint as a model file that
ships: ``NAME.safetensors`` (E, G and D, FP16 or FP32) with ``NAME.json`` beside it
(config, step, settings, the identity split and the data counts), plus the landmark shape
basis the calls use, fitted on the run's training clips (``NAME.shape-basis.safetensors``
with its JSON). Every file is written aside and renamed; nothing is replaced without
``force``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.torch import load_file, save

from vcam.data.clips import Dataset, open_dataset
from vcam.errors import UserError
from vcam.files import atomic_write_bytes, atomic_write_text
from vcam.landmarks.shape_basis import fit_shape_basis, metadata_path, save_shape_basis
from vcam.models.store import MODEL_PREFIX, find_weights
from vcam.train.run import RUN_FILE

MODEL_FORMAT = "vcam-model"
MODEL_VERSION = 1
SHAPE_COMPONENTS = 16


@dataclass(frozen=True)
class ExportResult:
    model: str
    metadata: str
    shape_basis: str
    megabytes: float
    step: int


def shape_basis_path(model: Path) -> Path:
    """Where the shape basis of the model file ``model`` lives."""
    return model.with_name(model.stem + ".shape-basis.safetensors")


def run_folder_of(source: Path) -> Path:
    """The run folder holding ``source`` (a run or one of its checkpoint folders)."""
    for folder in (source, source.parent.parent):
        if (folder / RUN_FILE).is_file():
            return folder
    raise UserError(f"{source} is not a `vcam train meta` run or one of its checkpoints")


def data_counts(dataset: Dataset, identities: list[str]) -> dict:
    clips = [clip for clip in dataset.clips if clip.identity in set(identities)]
    return {"identities": len({clip.identity for clip in clips}), "clips": len(clips),
            "frames": int(sum(len(clip) for clip in clips))}


def model_metadata(plan: dict, state: dict, dataset: Dataset, weights: bytes,
                   half: bool) -> dict:
    split = plan["split"]
    return {"format": MODEL_FORMAT, "version": MODEL_VERSION, "config": plan["config"],
            "step": state["step"], "settings": plan["settings"], "split": split,
            "data": {"crop_size": dataset.size,
                     "train": data_counts(dataset, split["train"]),
                     "validation": data_counts(dataset, split["validation"])},
            "precision": "fp16" if half else "fp32",
            "sha256": hashlib.sha256(weights).hexdigest()}


def model_bytes(weights_path: Path, half: bool) -> bytes:
    tensors = {key: value for key, value in load_file(str(weights_path)).items()
               if key.startswith(MODEL_PREFIX)}
    if half:
        tensors = {key: value.half() if value.is_floating_point() else value
                   for key, value in tensors.items()}
    return save({key: value.contiguous() for key, value in tensors.items()})


def training_landmarks(dataset: Dataset, train_clips: list[str]) -> np.ndarray:
    chosen = set(train_clips)
    return np.concatenate([clip.landmarks for clip in dataset.clips
                           if clip.clip_id in chosen]).astype(np.float64)


def refuse_overwrite(paths: list[Path], force: bool) -> None:
    existing = [path for path in paths if path.exists()]
    if existing and not force:
        raise UserError(f"{existing[0]} exists: pass --force to replace it")


def export_model(source: Path, out: Path, data: Path | None = None, half: bool = True,
                 force: bool = False) -> ExportResult:
    """Write the model file ``out`` (see the module docstring) from a run or checkpoint."""
    if out.suffix != ".safetensors":
        raise UserError(f"--out {out} must end in .safetensors")
    basis_path = shape_basis_path(out)
    refuse_overwrite([out, metadata_path(out), basis_path], force)
    run = run_folder_of(source)
    plan = json.loads((run / RUN_FILE).read_text())
    weights_path, state = find_weights(source)
    dataset = open_dataset(data or Path(plan["data"]))
    weights = model_bytes(weights_path, half)
    basis = fit_shape_basis(training_landmarks(dataset, plan["train_clips"]),
                            SHAPE_COMPONENTS, dataset.size)
    metadata = model_metadata(plan, state, dataset, weights, half)
    save_shape_basis(basis, basis_path)
    atomic_write_bytes(out, weights)
    atomic_write_text(metadata_path(out), json.dumps(metadata, indent=1) + "\n")
    return ExportResult(str(out), str(metadata_path(out)), str(basis_path),
                        round(len(weights) / 1e6, 2), int(state["step"]))


def check_loads(out: Path) -> None:
    """Load the written model once, so a broken export fails here and not at a user's."""
    from vcam.models.store import load_models

    load_models(out)
