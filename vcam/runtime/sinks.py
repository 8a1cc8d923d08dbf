"""Where the output canvas goes: the virtual camera, a preview window, an mp4 file.

Every sink is a context manager (opened on entry, released on exit, also after an error or
Ctrl-C) whose ``send`` validates the canvas before using it. Canvases are RGB; each sink
converts to what its library wants (pyvirtualcam takes RGB, OpenCV windows BGR, the H.264
file sink of :mod:`vcam.runtime.file_sink` YUV 4:2:0).
"""

from __future__ import annotations

import os
import platform
import queue
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from vcam.errors import UserError
from vcam.runtime.controls import Controls, handle_key
from vcam.runtime.frames import Frame, check_canvas
from vcam.runtime.handoff import Handoff
from vcam.runtime.preview import PreviewLayout, overlay_lines
from vcam.runtime.stats import StatsSnapshot

SINK_KINDS = ("virtualcam", "window", "file")
V4L2LOOPBACK_SETUP = "sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=vcam"
WINDOW_TITLE = "vcam"


@dataclass(frozen=True)
class SinkSpec:
    """A parsed ``--sink``: ``virtualcam``, ``window`` or ``file:PATH``."""

    kind: str
    path: Path | None = None

    @classmethod
    def parse(cls, text: str) -> SinkSpec:
        kind, _, rest = text.partition(":")
        if kind == "file" and rest:
            return cls("file", Path(rest))
        if kind in SINK_KINDS and kind != "file" and not rest:
            return cls(kind)
        raise UserError(f"--sink {text}: choose virtualcam, window or file:PATH.mp4")


class Sink(Protocol):
    """An output. Every sink gets each new frame once, as it comes; ``steady`` sinks (the
    virtual camera) also get the last one again when nothing new came for a while."""

    name: str
    steady: bool

    def __enter__(self) -> Sink: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def check(self) -> None:
        """``UserError`` unless it can open here (without keeping anything open)."""
        ...

    def send(self, canvas: np.ndarray, frame: Frame, stats: StatsSnapshot) -> None: ...


def virtual_camera_help(system: str) -> str:
    """How to create a virtual camera device on this operating system."""
    if system == "Linux":
        return (f"create one with `{V4L2LOOPBACK_SETUP}` (install v4l2loopback-dkms first), "
                "or use --sink window / --sink file:out.mp4")
    return ("install OBS Studio 28 or later and start its virtual camera once "
            "(Start Virtual Camera), or use --sink window / --sink file:out.mp4")


class VirtualCameraSink:
    """Frames to a virtual camera through pyvirtualcam (v4l2loopback on Linux, the OBS
    virtual camera on Windows and macOS), RGB at the requested size, declared at ``fps``: each
    frame as it comes, the last one again while none does (the pipeline's output stage)."""

    name = "virtualcam"
    steady = True

    def __init__(self, width: int, height: int, fps: float, device: str | None = None,
                 backend: str | None = None) -> None:
        self.width, self.height, self.fps = width, height, fps
        self.device, self.backend = device, backend
        self._camera = None
        self.frames_sent = 0

    def __enter__(self) -> VirtualCameraSink:
        import pyvirtualcam

        try:
            self._camera = pyvirtualcam.Camera(
                self.width, self.height, self.fps, fmt=pyvirtualcam.PixelFormat.RGB,
                device=self.device, backend=self.backend)
        except (RuntimeError, KeyError, ValueError) as error:
            reason = " ".join(str(error).split())[:160]
            raise UserError(f"no virtual camera device ({reason}): "
                            f"{virtual_camera_help(platform.system())}") from None
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._camera is not None:
            self._camera.close()
            self._camera = None

    def check(self) -> None:
        """``UserError`` unless the virtual camera opens here (it is opened and closed)."""
        with self:
            pass

    @property
    def device_name(self) -> str:
        return self._camera.device if self._camera is not None else ""

    def send(self, canvas: np.ndarray, frame: Frame, stats: StatsSnapshot) -> None:
        check_canvas(canvas, self.width, self.height)
        if self._camera is None:
            raise RuntimeError("the virtual camera is not open")
        self._camera.send(canvas)
        self.frames_sent += 1


class Display(Protocol):
    """A desktop window (OpenCV's highgui, or a stand-in where there is no display)."""

    def check(self) -> None:
        """``UserError`` unless a window can open here (a cheap check, from any thread)."""
        ...

    def open(self, title: str) -> None: ...

    def show(self, title: str, bgr: np.ndarray) -> None: ...

    def poll_key(self, title: str, milliseconds: int) -> int:
        """The key pressed (-1: none; 27 also when the window was closed)."""
        ...

    def close(self, title: str) -> None: ...


def display_available(environ: dict[str, str] | os._Environ[str], system: str) -> bool:
    """Whether a desktop session is reachable (on Linux: X11 or Wayland)."""
    if system != "Linux":
        return True
    return bool(environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"))


class OpenCvDisplay:
    """OpenCV windows; refuses to open without a display instead of aborting the process."""

    def check(self) -> None:
        if not display_available(os.environ, platform.system()):
            raise UserError("--sink window needs a desktop display (DISPLAY is not set): use "
                            "--sink virtualcam or --sink file:out.mp4 here")

    def open(self, title: str) -> None:
        self.check()
        cv2.namedWindow(title, cv2.WINDOW_NORMAL)

    def show(self, title: str, bgr: np.ndarray) -> None:
        cv2.imshow(title, bgr)

    def poll_key(self, title: str, milliseconds: int) -> int:
        key = cv2.waitKey(milliseconds)
        if cv2.getWindowProperty(title, cv2.WND_PROP_VISIBLE) < 1:
            return 27
        return key

    def close(self, title: str) -> None:
        cv2.destroyWindow(title)
        cv2.waitKey(1)


class DisplayCall:
    """One call of a display's method, handed from the thread that makes it to the thread
    that runs it."""

    def __init__(self, method: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.method, self.args = method, args
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            self.result = self.method(*self.args)
        except BaseException as error:  # the caller raises it; Ctrl-C also goes on here
            self.error = error
            if not isinstance(error, Exception):
                raise
        finally:
            self.done.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()


class MainThreadDisplay:
    """A display whose windows live on the thread that runs :meth:`serve` (the main thread:
    some platforms, macOS among them, allow windows nowhere else). Any other thread may
    use it: each call is handed over and waited for, so it only returns once ``serve`` ran
    it; after :meth:`finish` calls fail instead."""

    def __init__(self, display: Display | None = None) -> None:
        self.display = display or OpenCvDisplay()
        self._calls: queue.Queue[DisplayCall] = queue.Queue()
        self._lock = threading.Lock()
        self._finished = False

    def check(self) -> None:
        self.display.check()

    def open(self, title: str) -> None:
        self._call(self.display.open, title)

    def show(self, title: str, bgr: np.ndarray) -> None:
        self._call(self.display.show, title, bgr)

    def poll_key(self, title: str, milliseconds: int) -> int:
        return self._call(self.display.poll_key, title, milliseconds)

    def close(self, title: str) -> None:
        self._call(self.display.close, title)

    def _call(self, method: Callable[..., Any], *args: Any) -> Any:
        call = DisplayCall(method, args)
        with self._lock:
            if self._finished:
                raise RuntimeError("the preview window's thread has stopped")
            self._calls.put(call)
        call.done.wait()
        if call.error is not None:
            raise call.error
        return call.result

    def serve(self, until: threading.Event, poll_seconds: float = 0.05) -> None:
        """Run the calls handed over until ``until`` is set (blocking)."""
        while not until.is_set():
            try:
                call = self._calls.get(timeout=poll_seconds)
            except queue.Empty:
                continue
            call.run()

    def finish(self) -> None:
        """Stop taking calls: the ones still waiting, and any later one, fail."""
        with self._lock:
            self._finished = True
        while True:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                return
            call.fail(RuntimeError("the preview window's thread has stopped"))


class WindowSink:
    """The preview: driver | landmarks | avatar with the stats, and the keyboard.

    The output stage composes the preview (``send``); the main thread shows it and reads
    keys (``pump``), because some platforms allow windows only on the main thread (a
    ``MainThreadDisplay`` serves a sink pumped from another thread).
    """

    name = "window"
    steady = False

    def __init__(self, width: int, height: int, controls: Controls, avatar_names: list[str],
                 crop_sizes: list[int], display: Display | None = None) -> None:
        """``avatar_names`` and ``crop_sizes``: of each avatar, by index."""
        self.width, self.height = width, height
        self.controls = controls
        self.avatar_names = avatar_names
        self.crop_sizes = crop_sizes
        self.display = display or OpenCvDisplay()
        self._layout = PreviewLayout(width, height)
        self._latest: Handoff[np.ndarray] = Handoff("preview")
        self._bgr = np.empty_like(self._layout.image)
        self._open = False
        self.frames_shown = 0

    def check(self) -> None:
        """``UserError`` unless the window can open here."""
        self.display.check()

    def __enter__(self) -> WindowSink:
        self.display.open(WINDOW_TITLE)
        self._open = True
        print("vcam preview: q/Esc quit, n reset neutral face, o overlay, "
              f"1-{len(self.avatar_names)} avatar", file=sys.stderr)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._open:
            self._open = False
            self.display.close(WINDOW_TITLE)

    def send(self, canvas: np.ndarray, frame: Frame, stats: StatsSnapshot) -> None:
        check_canvas(canvas, self.width, self.height)
        index = frame.avatar_index
        lines = (overlay_lines(stats, frame, self.avatar_names[index])
                 if self.controls.overlay.is_set() else [])
        preview = self._layout.compose(frame, canvas, lines, self.crop_sizes[index],
                                       self.crop_sizes[0])
        self._latest.put(preview.copy())  # the layout's buffer is reused for the next frame

    def pump(self, wait_seconds: float) -> None:
        """Main thread: show the newest preview (waiting up to ``wait_seconds`` for one) and
        act on a key press."""
        preview = self._latest.get(timeout=wait_seconds)
        if preview is not None:
            self.display.show(WINDOW_TITLE, cv2.cvtColor(preview, cv2.COLOR_RGB2BGR,
                                                         dst=self._bgr))
            self.frames_shown += 1
        handle_key(self.display.poll_key(WINDOW_TITLE, 1), self.controls)
