"""Training checkpoints: safetensors for every tensor (weights, optimiser moments) and JSON
for the rest. Nothing is pickled.

A checkpoint is a folder ``RUN/checkpoints/step-NNNNNNN/`` written under a temporary name and
renamed into place; ``RUN/checkpoints/latest`` (a one-line text file, replaced atomically)
names the newest complete one. Older ones are pruned, keeping ``keep`` of them.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vcam.errors import UserError
from vcam.files import atomic_write_text

CHECKPOINTS = "checkpoints"
LATEST = "latest"
WEIGHTS_FILE = "weights.safetensors"
OPTIMISER_FILE = "optimisers.safetensors"
STATE_FILE = "state.json"
# The networks a checkpoint holds: MODELS is the model (what evaluation, export and --init
# read); TRAINED, when present, the weights being optimised while MODELS is their average.
MODELS = "models"
TRAINED = "training"
# The run's mouth critic (vcam.models.mouth_critic), when it has one: kept to resume, never
# exported.
MOUTH_CRITIC = "mouth_critic"


@dataclass(frozen=True)
class Checkpoint:
    folder: Path
    state: dict
    weights: dict[str, torch.Tensor]
    optimisers: dict[str, torch.Tensor]

    @property
    def step(self) -> int:
        return int(self.state["step"])


def module_tensors(modules: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    return {f"{name}.{key}": value.detach().cpu().contiguous().clone()
            for name, module in modules.items() for key, value in module.state_dict().items()}


def optimiser_tensors(optimisers: dict[str, torch.optim.Optimizer]
                      ) -> tuple[dict[str, torch.Tensor], dict[str, list]]:
    """Optimiser moments as flat tensors, and their parameter groups for JSON."""
    tensors, groups = {}, {}
    for name, optimiser in optimisers.items():
        state = optimiser.state_dict()
        for index, values in state["state"].items():
            for key, value in values.items():
                tensors[f"{name}.{index}.{key}"] = torch.as_tensor(value).detach().cpu().clone()
        groups[name] = state["param_groups"]
    return tensors, groups


def save_checkpoint(run: Path, step: int, modules: dict[str, torch.nn.Module],
                    optimisers: dict[str, torch.optim.Optimizer], state: dict,
                    keep: int = 2) -> Path:
    """Write a checkpoint for ``step`` and point ``latest`` at it."""
    root = run / CHECKPOINTS
    final = root / f"step-{step:07d}"
    partial = root / f".step-{step:07d}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        tensors, groups = optimiser_tensors(optimisers)
        save_file(module_tensors(modules), str(partial / WEIGHTS_FILE))
        save_file(tensors, str(partial / OPTIMISER_FILE))
        full_state = state | {"step": step, "param_groups": groups}
        (partial / STATE_FILE).write_text(json.dumps(full_state, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    atomic_write_text(root / LATEST, final.name + "\n")
    prune(root, keep)
    return final


def prune(root: Path, keep: int) -> None:
    folders = sorted(path for path in root.glob("step-*") if path.is_dir())
    for folder in folders[:-keep] if keep > 0 else []:
        shutil.rmtree(folder, ignore_errors=True)


def latest_checkpoint(run: Path) -> Path | None:
    pointer = run / CHECKPOINTS / LATEST
    if not pointer.is_file():
        return None
    folder = run / CHECKPOINTS / pointer.read_text().strip()
    return folder if (folder / STATE_FILE).is_file() else None


def load_checkpoint(folder: Path) -> Checkpoint:
    """Read a checkpoint folder (or a run folder, meaning its latest checkpoint)."""
    if (folder / CHECKPOINTS).is_dir():
        latest = latest_checkpoint(folder)
        if latest is None:
            raise UserError(f"{folder} has no complete checkpoint yet")
        folder = latest
    try:
        state = json.loads((folder / STATE_FILE).read_text())
        weights = load_file(str(folder / WEIGHTS_FILE))
        optimisers = (load_file(str(folder / OPTIMISER_FILE))
                      if (folder / OPTIMISER_FILE).exists() else {})
    except (OSError, ValueError) as error:
        raise UserError(f"{folder} is not a readable vcam checkpoint ({error})") from None
    return Checkpoint(folder, state, weights, optimisers)


def module_state(checkpoint: Checkpoint, name: str) -> dict[str, torch.Tensor]:
    """The state dict of the networks saved under ``name``."""
    prefix = f"{name}."
    return {key[len(prefix):]: value for key, value in checkpoint.weights.items()
            if key.startswith(prefix)}


def holds_module(checkpoint: Checkpoint, name: str) -> bool:
    return any(key.startswith(f"{name}.") for key in checkpoint.weights)


def restore_modules(checkpoint: Checkpoint, modules: dict[str, torch.nn.Module]) -> None:
    for name, module in modules.items():
        module.load_state_dict(module_state(checkpoint, name))


def restore_optimisers(checkpoint: Checkpoint,
                       optimisers: dict[str, torch.optim.Optimizer]) -> None:
    for name, optimiser in optimisers.items():
        prefix = f"{name}."
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in checkpoint.optimisers.items():
            if key.startswith(prefix):
                index, field = key[len(prefix):].split(".", 1)
                state.setdefault(int(index), {})[field] = value
        optimiser.load_state_dict({"state": state,
                                   "param_groups": checkpoint.state["param_groups"][name]})
