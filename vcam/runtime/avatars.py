"""The avatars of a run and their loaded generator backends.

This object owns the models and backends; the real-time loop only calls :meth:`render`. All
avatars are loaded and warmed up before the pipeline starts, so switching between them live
costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.backend import (
    Backend,
    BackendOptions,
    BackendRegistry,
    NoBackendError,
    create_backend,
)
from vcam.avatar import Avatar
from vcam.compiled import generator_source
from vcam.errors import UserError
from vcam.warp import RUNTIME_WARP_SOURCE, WarpGuide


@dataclass(frozen=True)
class RendererSettings:
    """Which engine renders, with how many CPU threads (None: the library's choice), and in
    which precision (``int8``: ONNX Runtime's quantised model, exported once when missing)."""

    backend: str = "auto"
    threads: int | None = None
    device: str = "cpu"
    precision: str = "fp32"


@dataclass(frozen=True)
class AvatarEntry:
    """An avatar and the bundle it came from (None when enrolled on the fly).

    ``compiled_dir``: where its compiled forms (the FP32 ONNX file, TensorRT engines) are
    made and kept; None: the user's data folder, found by checksum (``vcam.compiled``). A
    caller that gives a folder owns it (e.g. a temporary one for an avatar used once).
    """

    avatar: Avatar
    path: Path | None = None
    compiled_dir: Path | None = None

    @property
    def name(self) -> str:
        return self.avatar.name


def load_backend(entry: AvatarEntry, settings: RendererSettings,
                 registry: BackendRegistry | None = None) -> Backend:
    """The entry's generator on the backend asked for, warmed up (``registry``: the
    backends to choose from; None: the built-in ones)."""
    source = generator_source(entry.avatar, settings.backend, settings.precision,
                              folder=entry.compiled_dir)
    engines = entry.compiled_dir / "engines" if entry.compiled_dir is not None else None
    options = BackendOptions(device=settings.device, threads=settings.threads,
                             precision=settings.precision, cache_dir=engines)
    try:
        backend = create_backend(settings.backend, source, options, registry)
    except NoBackendError as error:
        hint = ("" if settings.backend in ("auto", "torch")
                else f" (compile the avatar first: `vcam compile {entry.name} --backend onnx`)")
        raise UserError(f"{error}{hint}") from None
    except ValueError as error:
        raise UserError(str(error)) from None
    backend.warm_up()
    return backend


class AvatarLibrary:
    """Avatars with a warmed-up backend each; a context manager that closes them.
    ``registry``: the backends to choose from (None: the built-in ones)."""

    def __init__(self, entries: list[AvatarEntry], settings: RendererSettings = RendererSettings(),
                 registry: BackendRegistry | None = None) -> None:
        if not entries:
            raise ValueError("an avatar library needs at least one avatar")
        self.entries = entries
        self.settings = settings
        self.registry = registry
        self._backends: list[Backend] = []
        self._guides: dict[int, WarpGuide] = {}

    def __enter__(self) -> AvatarLibrary:
        try:
            for entry in self.entries:
                self._backends.append(load_backend(entry, self.settings, self.registry))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        for backend in self._backends:
            backend.close()
        self._backends.clear()

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def names(self) -> list[str]:
        return [entry.name for entry in self.entries]

    def avatar(self, index: int) -> Avatar:
        return self.entries[index].avatar

    def crop_size(self, index: int) -> int:
        return self.entries[index].avatar.config.image_size

    def describe(self) -> list[dict]:
        return [backend.describe().to_dict() for backend in self._backends]

    def warp_guide(self, index: int) -> WarpGuide | None:
        """The enrollment warp a warp-guided avatar's generator needs (None for direct)."""
        avatar = self.entries[index].avatar
        if avatar.config.generator != "warp":
            return None
        if index not in self._guides:
            self._guides[index] = WarpGuide(avatar.crops, avatar.landmarks, RUNTIME_WARP_SOURCE,
                                            cavity=avatar.config.mouth_cavity)
        return self._guides[index]

    def render(self, index: int, landmark_images: np.ndarray) -> np.ndarray:
        """(1, 3, S, S) float32 landmark image in [-1, 1] -> (1, 3, S, S) frame in [-1, 1]."""
        return self._backends[index].render(landmark_images)
