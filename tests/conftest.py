"""Shared fixtures: the astronaut photo, one dlib detector per session, the shared corpus."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from vcam.data.synthetic import astronaut
from vcam.landmarks.detector import create_detector

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("VCAM_SHARED_DATA", REPO.parent / "shared" / "data"))


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
