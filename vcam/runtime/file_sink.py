"""The file sink: an H.264 mp4 that every player and browser plays, written safely.

Frames are encoded with libx264 (PyAV) in yuv420p, the moov atom up front (``+faststart``)
so a browser starts playing before the whole file has arrived. The video is written to a
temporary file beside the destination and renamed into place when the sink closes after a
run; a run that fails to start (or writes no frame) leaves nothing behind. An existing file
is refused unless ``force``, and so is the file the input is read from, even with ``force``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from vcam.errors import UserError
from vcam.runtime.frames import Frame, check_canvas
from vcam.runtime.stats import StatsSnapshot

# x264 settings: "superfast" keeps a 720p encode at a few ms per frame on one laptop core,
# which a live 30 frames/s run can afford; CRF 21 is visually clean for faces.
X264_PRESET = "superfast"
X264_CRF = 21


def same_file(first: Path, second: Path) -> bool:
    """Whether two paths name one file (the same path, or links to one file)."""
    if first.resolve() == second.resolve():
        return True
    try:
        return first.exists() and second.exists() and os.path.samefile(first, second)
    except OSError:
        return False


def check_output_file(path: Path, width: int, height: int, force: bool,
                      inputs: Sequence[Path] = ()) -> None:
    """``UserError`` unless ``path`` may be written: an .mp4 that is none of ``inputs``, not
    an existing file (unless ``force``), at a size H.264 in yuv420p can hold (even sides)."""
    option = f"--sink file:{path}"
    if path.suffix.lower() != ".mp4":
        raise UserError(f"{option}: the file sink writes .mp4 files")
    if any(same_file(path, source) for source in inputs):
        raise UserError(f"{option} is the input video: write the output to another file")
    if path.is_dir():
        raise UserError(f"{option} is a folder: give a file name ending in .mp4")
    if path.exists() and not force:
        raise UserError(f"{option} already exists: pass --force to replace it")
    if width % 2 or height % 2:
        raise UserError(f"--size {width}x{height}: an H.264 file needs an even width and "
                        "height")


def frame_rate(fps: float) -> Fraction:
    """The container's rate: exact for whole numbers, NTSC-style 30000/1001 and the like."""
    return Fraction(fps).limit_denominator(1001)


class FileSink:
    """An H.264 mp4 file at the output size and rate (see the module's notes)."""

    name = "file"
    steady = False

    def __init__(self, path: Path, width: int, height: int, fps: float, force: bool = False,
                 inputs: Sequence[Path] = ()) -> None:
        """``inputs``: files the run reads (never to be written over)."""
        self.path, self.width, self.height, self.fps = path, width, height, fps
        self.force = force
        self.inputs = tuple(inputs)
        self._container = None
        self._stream = None
        self._temporary: Path | None = None
        self.frames_written = 0

    @property
    def is_open(self) -> bool:
        return self._container is not None

    def check(self) -> None:
        """``UserError`` unless the file may be written here (nothing is written)."""
        check_output_file(self.path, self.width, self.height, self.force, self.inputs)

    def __enter__(self) -> FileSink:
        import av

        self.check()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp.mp4",
                                        dir=self.path.parent)
        os.close(handle)
        self._temporary = Path(name)
        try:
            self._container = av.open(name, "w", format="mp4",
                                      options={"movflags": "+faststart"})
            stream = self._container.add_stream("libx264", rate=frame_rate(self.fps))
            stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
            stream.options = {"preset": X264_PRESET, "crf": str(X264_CRF)}
            self._stream = stream
        except BaseException:
            self._discard()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        if self._container is None:
            return
        if exc_type is not None or self.frames_written == 0:
            self._discard()  # a run that failed, or never produced a frame: no file
            return
        try:
            self._finish()
        except BaseException:
            self._discard()
            raise
        self._place()

    def send(self, canvas: np.ndarray, frame: Frame, stats: StatsSnapshot) -> None:
        from av import VideoFrame

        check_canvas(canvas, self.width, self.height)
        if self._stream is None or self._container is None:
            raise RuntimeError(f"{self.path} is not open")
        planes = cv2.cvtColor(canvas, cv2.COLOR_RGB2YUV_I420)
        picture = VideoFrame.from_ndarray(planes, format="yuv420p")
        picture.pts = self.frames_written
        for packet in self._stream.encode(picture):
            self._container.mux(packet)
        self.frames_written += 1

    def _finish(self) -> None:
        assert self._stream is not None and self._container is not None
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        self._container = None

    def _place(self) -> None:
        """Rename the finished file into place (0644, like every file vcam writes)."""
        assert self._temporary is not None
        os.chmod(self._temporary, 0o644)
        if self.path.exists() and not self.force:
            kept, self._temporary = self._temporary, None
            raise UserError(f"{self.path} appeared while recording and was left alone: the "
                            f"recording is {kept}")
        os.replace(self._temporary, self.path)
        self._temporary = None

    def _discard(self) -> None:
        if self._container is not None:
            with contextlib.suppress(Exception):  # the file is removed either way
                self._container.close()
            self._container = None
        self._stream = None
        if self._temporary is not None:
            self._temporary.unlink(missing_ok=True)
            self._temporary = None

