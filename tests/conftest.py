"""Shared fixtures and helpers: the astronaut photo and its face, one dlib detector per
session, the shared corpus, tiny datasets and models, fast training settings, and a virtual
camera device that records what it is sent (registered through pyvirtualcam's own backend
registry)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import pyvirtualcam

from vcam.data.synthetic import astronaut
from vcam.landmarks.align import crop_face, crop_transform_for
from vcam.landmarks.detector import create_detector
from vcam.models.losses import LossWeights
from vcam.models.vgg import find_default_vgg_weights
from vcam.shared import shared_data_dir

REPO = Path(__file__).resolve().parents[1]
VIRTUALCAM_BACKEND = "vcam-test-recorder"


@pytest.fixture(scope="session")
def astronaut_image() -> np.ndarray:
    return astronaut()


@pytest.fixture(scope="session")
def dlib_detector():
    return create_detector("dlib")


@pytest.fixture(scope="session")
def face(astronaut_image, dlib_detector) -> tuple[np.ndarray, np.ndarray]:
    """The astronaut's 256 px face crop and its landmarks in crop coordinates."""
    points = dlib_detector.detect(astronaut_image)[0].points
    transform = crop_transform_for(points, size=256)
    return crop_face(astronaut_image, transform), transform.to_crop(points)


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


def vgg_path() -> str | None:
    found = find_default_vgg_weights()
    return str(found) if found else None


def fast_settings(**changes):
    """Tiny-model training settings: high learning rates, no identity network (speed)."""
    from vcam.train.meta import MetaSettings

    values = dict(shots=2, batch=2, steps=6, lr_generator=2e-3, lr_discriminator=2e-3,
                  identity_loss=False, vgg_weights=vgg_path(), checkpoint_every=3,
                  sample_every=1000, log_every=1, loader_workers=0,
                  losses=LossWeights(pixel=0.0 if vgg_path() else 1.0))
    values.update(changes)
    return MetaSettings(**values)


class RecordingVirtualCamera:
    """A virtual camera device for pyvirtualcam's backend registry (keyword arguments as
    pyvirtualcam.Camera passes them); it records every frame it is sent (flat, as
    pyvirtualcam hands them on) and when."""

    instances: ClassVar[list[RecordingVirtualCamera]] = []

    def __init__(self, *, width: int, height: int, fps: float, fourcc: int,
                 device: str | None, **extra) -> None:
        self.width, self.height, self.fps, self.fourcc = width, height, fps, fourcc
        self.frames: list[np.ndarray] = []
        self.times: list[float] = []
        self.closed = False
        RecordingVirtualCamera.instances.append(self)

    def device(self) -> str:
        return "/dev/video-test"

    def native_fourcc(self) -> int:
        return self.fourcc

    def send(self, frame: np.ndarray) -> None:
        self.times.append(time.perf_counter())
        self.frames.append(frame.copy())

    @property
    def last(self) -> np.ndarray:
        return self.frames[-1]

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def recording_virtualcam():
    """The devices opened through pyvirtualcam's ``VIRTUALCAM_BACKEND`` during the test."""
    RecordingVirtualCamera.instances.clear()
    pyvirtualcam.register_backend(VIRTUALCAM_BACKEND, RecordingVirtualCamera)
    yield RecordingVirtualCamera.instances
    pyvirtualcam.camera.BACKENDS.pop(VIRTUALCAM_BACKEND, None)
