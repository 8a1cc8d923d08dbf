"""Fixtures of the call tests: two tiny avatars, and what a video file holds."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from vcam.avatar import avatar_bytes
from vcam.enroll import Photo, enroll
from vcam.models.store import load_models
from vcam.train.finetune import FineTuneSettings


@pytest.fixture(scope="session")
def avatars(tiny_model, dlib_detector, astronaut_image, tmp_path_factory) -> dict[str, Path]:
    """Two different tiny avatars, 'astro' and 'bob', as bundle files."""
    folder = tmp_path_factory.mktemp("avatars")
    models = load_models(tiny_model)
    paths = {}
    for name, photo in (("astro", astronaut_image),
                        ("bob", np.ascontiguousarray(astronaut_image[:, ::-1]))):
        avatar, _ = enroll([Photo(name, photo)], name, models, dlib_detector,
                           FineTuneSettings())
        paths[name] = folder / f"{name}.avatar.safetensors"
        paths[name].write_bytes(avatar_bytes(avatar))
    return paths


def video_facts(path: Path) -> tuple[int, int, int]:
    """Frame count, width and height of a video file, read back with OpenCV."""
    capture = cv2.VideoCapture(str(path))
    try:
        return (int(capture.get(cv2.CAP_PROP_FRAME_COUNT)),
                int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    finally:
        capture.release()
