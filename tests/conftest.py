"""Shared fixtures: the astronaut photo, one dlib detector per session, the shared corpus."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vcam.data.synthetic import astronaut
from vcam.landmarks.detector import create_detector
from vcam.shared import shared_data_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def astronaut_image() -> np.ndarray:
    return astronaut()


@pytest.fixture(scope="session")
def dlib_detector():
    return create_detector("dlib")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    folder = shared_data_dir()
    if not (folder / "MANIFEST.tsv").is_file():
        pytest.skip(f"the shared corpus is not at {folder} (set VCAM_SHARED_DATA)")
    return folder


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A preprocessed 64 px dataset of three synthetic 'people' (the astronaut at three
    sizes and colourings), 16 frames each."""
    from vcam.data.preprocess import PreprocessSettings, run_preprocess
    from vcam.data.synthetic import moving_face_frames, write_video

    root = tmp_path_factory.mktemp("tiny")
    videos = root / "videos"
    videos.mkdir()
    for person in range(3):
        frames = (np.ascontiguousarray(np.roll(frame, person, axis=2))
                  for frame in moving_face_frames(16, 320, 240, face_size=90 + 10 * person))
        write_video(str(videos / f"person{person}.mp4"), frames)
    (root / "manifest.tsv").write_text("path\tidentity\n" + "".join(
        f"videos/person{person}.mp4\tperson{person}\n" for person in range(3)))
    run_preprocess([videos], root / "dataset", PreprocessSettings(size=64),
                   manifest=root / "manifest.tsv")
    return root / "dataset"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A `tiny` model (randomly initialised, seeded) saved as a training checkpoint."""
    import torch

    from vcam.models.config import get_config
    from vcam.models.store import MetaModels
    from vcam.train.checkpoint import save_checkpoint

    run = tmp_path_factory.mktemp("model") / "run"
    torch.manual_seed(0)
    config = get_config("tiny")
    save_checkpoint(run, 0, {"models": MetaModels(config, 3)}, {}, {"config": config.to_dict()})
    return run


@pytest.fixture
def vcam_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("VCAM_HOME", str(home))
    return home


def write_rgb(path: Path, image: np.ndarray) -> Path:
    import cv2

    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path
