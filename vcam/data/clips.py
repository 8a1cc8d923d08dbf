"""The preprocessed dataset format, and reading it at random for K-shot episodes.

A dataset is a folder with ``dataset.json`` and one folder per clip::

    DIR/dataset.json              format, crop size, clips and skipped sources
    DIR/<clip_id>/clip.json       source, identity, fps, frame counts
    DIR/<clip_id>/arrays.safetensors
        landmarks      float32 (T, 68, 2)  in crop pixel coordinates
        transforms     float64 (T, 2, 3)   source pixels -> crop pixels
        source_frames  int64   (T,)        index of each kept frame in the source
    DIR/<clip_id>/frames/000000.jpg ...   aligned RGB crops, S x S

A clip folder appears whole (it is written elsewhere and renamed into place), so any folder
with a ``clip.json`` is complete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from safetensors.numpy import load_file

from vcam.errors import UserError

DATASET_FORMAT = "vcam-clips"
FORMAT_VERSION = 1
DATASET_FILE = "dataset.json"
CLIP_FILE = "clip.json"
ARRAYS_FILE = "arrays.safetensors"
FRAMES_DIR = "frames"


def frame_name(index: int) -> str:
    return f"{index:06d}.jpg"


@dataclass(frozen=True)
class Clip:
    """One preprocessed clip: its metadata, landmarks and crop transforms in memory; frames
    are read from disk on demand."""

    path: Path
    meta: dict
    landmarks: np.ndarray
    transforms: np.ndarray
    source_frames: np.ndarray

    @classmethod
    def open(cls, path: Path) -> Clip:
        try:
            meta = json.loads((path / CLIP_FILE).read_text())
            arrays = load_file(str(path / ARRAYS_FILE))
        except (OSError, ValueError) as error:
            raise UserError(f"{path} is not a readable preprocessed clip ({error})") from None
        return cls(path, meta, arrays["landmarks"], arrays["transforms"],
                   arrays["source_frames"])

    @property
    def clip_id(self) -> str:
        return self.meta["id"]

    @property
    def identity(self) -> str:
        return self.meta["identity"]

    def __len__(self) -> int:
        return len(self.landmarks)

    def frame(self, index: int) -> np.ndarray:
        """The aligned RGB uint8 crop of kept frame ``index``."""
        image = cv2.imread(str(self.path / FRAMES_DIR / frame_name(index)), cv2.IMREAD_COLOR)
        if image is None:
            raise UserError(f"{self.path / FRAMES_DIR / frame_name(index)} is missing or "
                            "corrupt: preprocess this clip again")
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@dataclass(frozen=True)
class Dataset:
    root: Path
    size: int
    clips: tuple[Clip, ...]

    @property
    def identities(self) -> list[str]:
        return sorted({clip.identity for clip in self.clips})


def open_dataset(root: Path) -> Dataset:
    """Open a folder written by ``vcam preprocess``; a one-line error if it is not one."""
    info = read_dataset_info(root)
    if info is None:
        raise UserError(f"{root} is not a preprocessed dataset: run "
                        f"`vcam preprocess VIDEOS... --out {root}` first")
    clips = tuple(Clip.open(path.parent) for path in sorted(root.glob(f"*/{CLIP_FILE}")))
    if not clips:
        raise UserError(f"{root} holds no preprocessed clips: run `vcam preprocess` on videos "
                        "with a visible face")
    return Dataset(root, int(info["size"]), clips)


def read_dataset_info(root: Path) -> dict | None:
    try:
        info = json.loads((root / DATASET_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("format") != DATASET_FORMAT:
        return None
    if info.get("version") != FORMAT_VERSION:
        raise UserError(f"{root} was written by another vcam version (format "
                        f"{info.get('version')}, this one reads {FORMAT_VERSION}): "
                        "preprocess again")
    return info
