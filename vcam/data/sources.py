"""Finding clips among the user's inputs and reading their frames as RGB arrays."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vcam.errors import UserError

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mpg", ".mpeg", ".webm", ".gif", ".mov", ".mkv"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})
# Frame folders have no frame rate of their own.
FRAME_FOLDER_FPS = 25.0
# Frame rates a container may honestly claim; OpenCV reports -1 or 0 when it has none.
MAX_FPS = 1000.0


def sane_fps(reported: float, default: float) -> float:
    """The frame rate a video reports, or ``default`` when it reports none (0, -1, NaN) or an
    absurd one."""
    return float(reported) if 0 < reported <= MAX_FPS else default


@dataclass(frozen=True)
class ClipSource:
    """One clip: a video file or a folder of numbered frames. ``clip_id`` is stable across
    runs (a readable slug plus a hash of the absolute path)."""

    path: Path
    clip_id: str

    @property
    def is_frame_folder(self) -> bool:
        return self.path.is_dir()


def find_clips(inputs: list[Path]) -> list[ClipSource]:
    """Every clip in ``inputs`` (files, or folders searched recursively), sorted by path."""
    clips: dict[Path, ClipSource] = {}
    for given in inputs:
        if not given.exists():
            raise UserError(f"{given} does not exist")
        root = given.resolve()
        for path in clip_paths(root):
            clips.setdefault(path, ClipSource(path, clip_id_for(path, root)))
    return [clips[path] for path in sorted(clips)]


def clip_paths(root: Path) -> list[Path]:
    if root.is_file():
        if root.suffix.lower() not in VIDEO_SUFFIXES:
            raise UserError(f"{root} is not a video ({', '.join(sorted(VIDEO_SUFFIXES))}) "
                            "or a folder of frames")
        return [root]
    found = [path for path in root.rglob("*")
             if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES]
    folders = {path.parent for path in root.rglob("*")
               if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES}
    return found + sorted(folders)


def clip_id_for(path: Path, root: Path) -> str:
    relative = path.relative_to(root.parent) if path != root else Path(path.name)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(relative.with_suffix("").parts))
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    return f"{slug[-80:].strip('-.')}-{digest}"


def natural_key(path: Path) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def frame_files(folder: Path) -> list[Path]:
    return sorted((path for path in folder.iterdir()
                   if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES), key=natural_key)


class ClipReader:
    """Reads a clip's frames in order as RGB uint8 arrays; raises ``UserError`` for a file
    that cannot be opened as video."""

    def __init__(self, source: ClipSource) -> None:
        self.source = source
        if source.is_frame_folder:
            self._files = frame_files(source.path)
            self.fps = FRAME_FOLDER_FPS
            return
        capture = cv2.VideoCapture(str(source.path))
        if not capture.isOpened():
            raise UserError(f"{source.path} could not be read as a video")
        self.fps = sane_fps(capture.get(cv2.CAP_PROP_FPS), FRAME_FOLDER_FPS)
        capture.release()

    def frames(self) -> Iterator[np.ndarray | None]:
        """Each frame in order; None stands for a frame file that could not be decoded."""
        if self.source.is_frame_folder:
            for path in self._files:
                image = cv2.imread(str(path), cv2.IMREAD_COLOR)
                yield None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            return
        capture = cv2.VideoCapture(str(self.source.path))
        try:
            while True:
                ok, image = capture.read()
                if not ok:
                    return
                yield cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        finally:
            capture.release()
