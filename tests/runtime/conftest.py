"""Fixtures of the runtime tests: a warp-guided avatar, loaded as `vcam run` loads one."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vcam.avatar import load_avatar, save_avatar
from vcam.data.synthetic import astronaut
from vcam.enroll import Photo, enroll
from vcam.models.config import get_config
from vcam.models.store import MetaModels
from vcam.runtime.avatars import AvatarEntry, AvatarLibrary, RendererSettings
from vcam.train.finetune import FineTuneSettings


@pytest.fixture(scope="module")
def warp_library(dlib_detector, tmp_path_factory):
    """The astronaut enrolled with a seeded tiny warp-guided model, in a torch library."""
    torch.manual_seed(0)
    models = MetaModels(dataclasses.replace(get_config("tiny"), generator="warp"), 1).eval()
    avatar, _ = enroll([Photo("astronaut", astronaut())], "astronaut", models, dlib_detector,
                       FineTuneSettings())
    path = save_avatar(avatar, tmp_path_factory.mktemp("warp") / "a.avatar.safetensors")
    with AvatarLibrary([AvatarEntry(load_avatar(path), path)],
                       RendererSettings("torch", threads=1)) as library:
        yield library
