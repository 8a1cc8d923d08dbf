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


def astronaut_library(dlib_detector, folder, mouth_input: str):
    """The astronaut enrolled with a seeded tiny warp-guided model, in a torch library."""
    torch.manual_seed(0)
    config = dataclasses.replace(get_config("tiny"), generator="warp", mouth_input=mouth_input)
    models = MetaModels(config, 1).eval()
    avatar, _ = enroll([Photo("astronaut", astronaut())], "astronaut", models, dlib_detector,
                       FineTuneSettings())
    path = save_avatar(avatar, folder / "a.avatar.safetensors")
    return AvatarLibrary([AvatarEntry(load_avatar(path), path)],
                         RendererSettings("torch", threads=1))


@pytest.fixture(scope="module")
def warp_library(dlib_detector, tmp_path_factory):
    """The astronaut with a warp-guided model shown the warp's stretched lips."""
    with astronaut_library(dlib_detector, tmp_path_factory.mktemp("warp"), "warp") as library:
        yield library


@pytest.fixture(scope="module")
def cavity_library(dlib_detector, tmp_path_factory):
    """The astronaut with a warp-guided model shown a dark cavity in an opening mouth."""
    with astronaut_library(dlib_detector, tmp_path_factory.mktemp("cavity"), "cavity") as library:
        yield library
