"""`vcam call serve` and `vcam call join`: the command line of a landmark-only call.

``add_call_arguments(commands)`` adds the ``call`` command (with ``serve`` and ``join``) to
the subparsers of the ``vcam`` parser; nothing is parsed at import. ``run_serve(args)`` and
``run_join(args)`` run one call and return the exit code (0: the call ran and ended, however
it ended; 2 with a one-line message: it could not start or was refused). ``main(argv)`` is
the same as a standalone program (``python -m vcam.net.cli_call call serve ...``).

Until the real-time runtime's render, composite and sink stages are connected, the call
renders with stand-ins kept here: ``VideoLandmarkSource`` (a webcam or a video file, tracked
with dlib in the sender's thread) and ``AvatarRenderer`` (the peer avatar's generator in a
worker thread, writing to an mp4 file or only counting frames).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from vcam.avatar import MAX_AVATAR_BYTES, Avatar, load_avatar, resolve_avatar
from vcam.errors import UserError
from vcam.net.avatar_exchange import ExchangeSettings, describe_avatar
from vcam.net.call import (
    CallReport,
    CallSettings,
    FaultSettings,
    IceSettings,
    LandmarkSample,
    LocalSide,
    Renderer,
    RendererFactory,
    default_shape_basis,
    join_call,
    serve_call,
)
from vcam.net.call_args import add_call_arguments
from vcam.net.jitter import JitterSettings, monotonic_us
from vcam.net.signaling import (
    SignalingSettings,
    is_loopback,
    new_token,
    url_host,
)

DEFAULT_FPS = 25.0
MAX_FPS = 120.0
ICE_URL = re.compile(r"(stun|stuns|turn|turns):[^\s?]+(\?transport=(udp|tcp))?")
UNSPECIFIED_HOSTS = ("0.0.0.0", "::", "")


# ---------------------------------------------------------------------------------------
# Stand-ins for the runtime: a landmark source and a renderer with simple sinks


class VideoLandmarkSource:
    """Landmarks of the largest face in a webcam (an index) or a video file, tracked with
    ``FaceTracker`` on dlib and mapped into the sender's avatar-crop pixels with the crop
    transform enrollment uses. A file plays at its own frame rate (looping with ``loop``).
    ``samples`` blocks: it runs in the sender's thread."""

    def __init__(self, spec: str, crop_size: int, loop: bool = False,
                 detector: Any = None) -> None:
        self.spec = spec
        self.is_camera = spec.isdigit()
        self.crop_size = crop_size
        self.loop = loop and not self.is_camera
        self.capture = self.open()
        self.fps = self.frame_rate()
        self.tracker: Any = None
        self.loaded = threading.Event()
        self.load_error: Exception | None = None
        threading.Thread(target=self.load_tracker, args=(detector,),
                         name="vcam-call-detector", daemon=True).start()

    def load_tracker(self, detector: Any) -> None:
        """Load the detector in the background (it takes a second or two) while the call
        connects."""
        from vcam.landmarks import FaceTracker, create_detector

        try:
            self.tracker = FaceTracker(detector if detector is not None
                                       else create_detector("dlib"))
        except Exception as error:
            self.load_error = error
        finally:
            self.loaded.set()

    def wait_for_tracker(self, stop: threading.Event) -> Any:
        while not self.loaded.wait(0.1):
            if stop.is_set():
                return None
        if self.load_error is not None:
            raise self.load_error
        return self.tracker

    def open(self) -> Any:
        import cv2

        if not self.is_camera and not Path(self.spec).is_file():
            raise UserError(f"--input {self.spec}: no such video file (or give a camera index)")
        capture = cv2.VideoCapture(int(self.spec) if self.is_camera else self.spec)
        if not capture.isOpened():
            raise UserError(f"--input {self.spec}: cannot open it as a camera or video")
        return capture

    def frame_rate(self) -> float:
        import cv2

        fps = float(self.capture.get(cv2.CAP_PROP_FPS) or 0.0)
        return fps if 1.0 <= fps <= MAX_FPS else DEFAULT_FPS

    def read(self) -> np.ndarray | None:
        """The next BGR frame; at the end of a looping file, the first one again."""
        ok, frame = self.capture.read()
        if not ok and self.loop:
            self.capture.release()
            self.capture = self.open()
            if self.tracker is not None:
                self.tracker.reset()
            ok, frame = self.capture.read()
        return frame if ok else None

    def samples(self, stop: threading.Event) -> Iterator[LandmarkSample]:
        if self.wait_for_tracker(stop) is None:
            return
        started, index = time.monotonic(), 0
        while not stop.is_set():
            frame = self.read()
            if frame is None:
                return
            if not self.is_camera:
                if stop.wait(max(0.0, started + index / self.fps - time.monotonic())):
                    return
                index += 1
            sample = self.track(frame, monotonic_us())
            if sample is not None:
                yield sample

    def track(self, frame: np.ndarray, captured_us: int) -> LandmarkSample | None:
        import cv2

        from vcam.landmarks import crop_transform_for

        assert self.tracker is not None
        face = self.tracker.update(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), captured_us / 1e6)
        if face is None:
            return None
        transform = crop_transform_for(face.points, self.crop_size)
        return LandmarkSample(transform.to_crop(face.points), captured_us)

    def close(self) -> None:
        self.capture.release()


class CountingSink:
    """Counts frames and keeps nothing."""

    def __init__(self) -> None:
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        self.frames += 1

    def close(self) -> None:
        pass


class VideoFileSink:
    """RGB frames into an mp4 file (OpenCV, mp4v), opened on the first frame."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path = path
        self.fps = fps
        self.writer: Any = None
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        import cv2

        if self.writer is None:
            height, width = frame.shape[:2]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"),
                                          self.fps, (width, height))
        self.writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None


class AvatarRenderer:
    """The peer avatar's generator on ``rasterise(points, size)`` in a worker thread; the
    newest landmarks win (one replaced before it was rendered counts as skipped)."""

    def __init__(self, avatar: Avatar, sink: Any, threads: int = 1) -> None:
        self.avatar = avatar
        self.sink = sink
        self.threads = threads
        self.size = avatar.config.image_size
        self.generator: Any = None
        self.condition = threading.Condition()
        self.pending: np.ndarray | None = None
        self.stopping = False
        self.tally: Counter[str] = Counter()
        self.thread = threading.Thread(target=self.run, name="vcam-call-render", daemon=True)

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.tally)

    def start(self) -> None:
        """Build the generator and render once to warm it up (blocking)."""
        import torch

        torch.set_num_threads(self.threads)
        self.generator = self.avatar.generator()
        self.render(self.avatar.neutral_landmarks)
        self.thread.start()

    def submit(self, landmarks: np.ndarray) -> None:
        with self.condition:
            if self.pending is not None:
                self.tally["skipped"] += 1
            self.pending = landmarks
            self.condition.notify()

    def run(self) -> None:
        while (landmarks := self.next_landmarks()) is not None:
            try:
                self.sink.write(self.render(landmarks))
                self.tally["rendered"] += 1
            except Exception:
                self.tally["errors"] += 1

    def next_landmarks(self) -> np.ndarray | None:
        with self.condition:
            while self.pending is None and not self.stopping:
                self.condition.wait()
            landmarks, self.pending = self.pending, None
            return landmarks

    def render(self, landmarks: np.ndarray) -> np.ndarray:
        """One RGB uint8 frame (size, size, 3) of the avatar with these landmarks."""
        import torch

        from vcam.landmarks import rasterise

        image = torch.from_numpy(rasterise(landmarks, self.size)).permute(2, 0, 1)[None]
        with torch.inference_mode():
            frame = self.generator(image.float() / 127.5 - 1.0)[0]
        pixels = ((frame.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
        return pixels.permute(1, 2, 0).contiguous().numpy()

    def close(self) -> None:
        """Render what is pending, stop the thread, close the sink (blocking)."""
        with self.condition:
            self.stopping = True
            self.condition.notify()
        if self.thread.is_alive():
            self.thread.join(10.0)
        self.sink.close()


def sink_for(spec: str, fps: float) -> Any:
    if spec == "count":
        return CountingSink()
    if spec.startswith("file:") and len(spec) > len("file:"):
        return VideoFileSink(Path(spec.removeprefix("file:")), fps)
    raise UserError(f"--sink {spec}: use 'count' or 'file:PATH'")


def renderer_factory(sink_spec: str) -> RendererFactory:
    sink_for(sink_spec, DEFAULT_FPS)  # check the spelling before the call starts

    def make(avatar: Avatar, fps: float) -> Renderer:
        return AvatarRenderer(avatar, sink_for(sink_spec, fps))

    return make


# ---------------------------------------------------------------------------------------
# Arguments


def max_avatar_bytes(megabytes: float | None) -> int:
    return MAX_AVATAR_BYTES if megabytes is None else int(megabytes * 2**20)


def call_settings(args: argparse.Namespace) -> CallSettings:
    try:
        return CallSettings(
            jitter=JitterSettings(target_delay_ms=args.jitter_ms),
            exchange=ExchangeSettings(max_bytes=max_avatar_bytes(args.max_avatar_mb),
                                      keep=args.keep),
            faults=FaultSettings(args.inject_loss, args.inject_reorder, args.inject_seed),
            share_avatar=args.share_avatar, max_seconds=args.max_seconds,
            peer_timeout_s=args.peer_timeout,
            ping_interval_s=min(1.0, args.peer_timeout / 3) if args.peer_timeout > 0 else 1.0)
    except ValueError as error:
        raise UserError(str(error)) from None


def ice_settings(args: argparse.Namespace, call_host: str) -> IceSettings:
    """ICE as asked; by default a call on loopback keeps its media on loopback too."""
    for url in args.ice_server:
        if not ICE_URL.fullmatch(url):
            raise UserError(f"--ice-server {url}: expected stun:HOST[:PORT] or "
                            "turn:HOST[:PORT][?transport=udp|tcp]")
    addresses: tuple[str, ...] | None = tuple(args.ice_address) or None
    if addresses is None and is_loopback(call_host):
        addresses = ("::1",) if call_host.strip("[]") == "::1" else ("127.0.0.1",)
    return IceSettings(tuple(args.ice_server), args.ice_username, args.ice_credential,
                       addresses)


def local_side(args: argparse.Namespace) -> LocalSide:
    """One's avatar, basis, landmark source and renderer, checked before any network."""
    from vcam.net.shape_basis import load_shape_basis

    path = resolve_avatar(args.avatar)
    avatar = load_avatar(path)
    basis = load_shape_basis(args.shape_basis) if args.shape_basis else default_shape_basis()
    factory = renderer_factory(args.sink)
    source = (None if args.input == "none"
              else VideoLandmarkSource(args.input, avatar.config.image_size, args.loop))
    return LocalSide(avatar, path, describe_avatar(path, avatar), basis, source, factory)


# ---------------------------------------------------------------------------------------
# Running


def run_serve(args: argparse.Namespace) -> int:
    """`vcam call serve`: wait for one peer, run the call, print its report."""
    try:
        signaling = SignalingSettings(host=args.host, port=args.port)
    except ValueError as error:
        raise UserError(f"--port {args.port}: {error}") from None
    settings, ice = call_settings(args), ice_settings(args, args.host)
    local, token = local_side(args), new_token()

    def announce(url: str) -> None:
        print_listening(url, token, args.json)

    report = run_until_stopped(lambda stop: serve_call(
        local, settings, signaling, ice, token, announce, stop, status, args.wait_seconds))
    if report is None:
        status("nobody joined")
        return 0
    return finish(report, args.json)


def run_join(args: argparse.Namespace) -> int:
    """`vcam call join URL --token T`: join, run the call, print its report."""
    settings, ice = call_settings(args), ice_settings(args, url_host(args.url))
    local = local_side(args)
    report = run_until_stopped(lambda stop: join_call(
        local, settings, args.url, args.token, SignalingSettings(), ice, stop, status))
    return finish(report, args.json)


def run_until_stopped(start: Callable[[asyncio.Event], Awaitable[Any]]) -> Any:
    """Run the call's loop; the first Ctrl-C (or SIGTERM) ends the call politely, a second
    Ctrl-C interrupts."""

    async def main() -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        installed = install_stop_signals(loop, stop)
        try:
            return await start(stop)
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)

    return asyncio.run(main())


def install_stop_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> list[int]:
    installed = []

    def on_signal(signum: int) -> None:
        status("ending the call (Ctrl-C again to interrupt)")
        stop.set()
        loop.remove_signal_handler(signum)

    if threading.current_thread() is not threading.main_thread():
        return installed
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, on_signal, signum)
            installed.append(signum)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    return installed


def status(message: str) -> None:
    print(f"vcam call: {message}", file=sys.stderr, flush=True)


def print_listening(url: str, token: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"event": "listening", "url": url, "token": token}), flush=True)
        return
    print(f"waiting for a peer at {url}\nto join, run:\n"
          f"  vcam call join {url} --token {token} --avatar YOUR_AVATAR", flush=True)
    if urlsplit(url).hostname in UNSPECIFIED_HOSTS:
        print("(listening on every interface: give the peer this machine's address in place "
              "of the one shown)", flush=True)


def finish(report: CallReport, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"event": "report", **report.to_dict()}), flush=True)
    else:
        print("\n".join(report.lines()), flush=True)
    if report.failed:
        print(f"vcam: error: {report.ended_by}", file=sys.stderr, flush=True)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vcam", description="vcam's call commands.")
    add_call_arguments(parser.add_subparsers(title="commands", metavar="COMMAND",
                                             required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    """The call commands as a program of their own (``vcam call ...`` without the rest)."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except UserError as error:
        print(f"vcam: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vcam: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

