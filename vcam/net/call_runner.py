"""Running one landmark-only call from the options of `vcam call serve|join`
(``vcam.commands.call``): ``run_serve(args)`` and ``run_join(args)`` return the exit code
(0: the call ran and ended, however it ended; 2 with a one-line message: it could not start
or was refused).

Both sides are made of the real-time runtime's stages (``vcam.net.media``): one's landmarks
come from `vcam run`'s inputs and landmark stage, and the peer's avatar goes through its
render, composite and sink stages. The call's asyncio loop runs in a thread of its own: the
main thread runs the preview window (some platforms, macOS among them, allow windows
nowhere else) and takes Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

from vcam.avatar import MAX_AVATAR_BYTES, load_avatar, resolve_avatar
from vcam.errors import UserError
from vcam.landmarks.shape_basis import load_shape_basis
from vcam.models.store import default_shape_basis
from vcam.net.avatar_exchange import ExchangeSettings, describe_avatar
from vcam.net.call import CallSettings, LocalSide, join_call, serve_call
from vcam.net.connection import IceSettings
from vcam.net.defaults import DEFAULT_SINK
from vcam.net.jitter import JitterSettings
from vcam.net.media import (
    CapturedLandmarks,
    PipelineRenderer,
    ReceiveSettings,
    SendSettings,
    check_outputs,
)
from vcam.net.packing import CodecSettings, PackingSettings
from vcam.net.playout import PeerAvatar, Renderer, RendererFactory
from vcam.net.report import CallReport
from vcam.net.send import FaultSettings
from vcam.net.signaling import (
    SignalingSettings,
    is_loopback,
    new_token,
    url_host,
)
from vcam.net.voice import builtin_avatar_path, speakers, voice_source
from vcam.runtime.avatars import RendererSettings
from vcam.runtime.compositor import Background, CompositorSettings
from vcam.runtime.retarget import RetargetSettings
from vcam.runtime.session import InputSpec, default_threads
from vcam.runtime.sinks import MainThreadDisplay, SinkSpec

ICE_URL = re.compile(r"(stun|stuns|turn|turns):[^\s?]+(\?transport=(udp|tcp))?")
UNSPECIFIED_HOSTS = ("0.0.0.0", "::", "")
# How often the call's loop looks whether the main thread was asked to end the call.
STOP_POLL_S = 0.1


# ---------------------------------------------------------------------------------------
# Arguments


def max_avatar_bytes(megabytes: float | None) -> int:
    return MAX_AVATAR_BYTES if megabytes is None else int(megabytes * 2**20)


def call_settings(args: argparse.Namespace) -> CallSettings:
    try:
        return CallSettings(
            jitter=JitterSettings(target_delay_ms=args.jitter_ms),
            codec=CodecSettings(step_px=args.landmark_step),
            packing=PackingSettings(frames_per_packet=args.frames_per_packet),
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


def send_settings(args: argparse.Namespace) -> SendSettings:
    return SendSettings(fps=args.fps, loop=args.loop, landmarks=args.landmarks,
                        retarget=RetargetSettings(mode=args.retarget))


def receive_settings(args: argparse.Namespace) -> ReceiveSettings:
    width, height = args.size
    compositor = CompositorSettings(width, height, Background.parse(args.background),
                                    mirror=args.mirror)
    renderer = RendererSettings(args.backend, args.threads or default_threads(), args.device)
    sinks = tuple(SinkSpec.parse(text) for text in (args.sink or [DEFAULT_SINK]))
    return ReceiveSettings(sinks, renderer, compositor, args.virtualcam_device)


def renderer_factory(settings: ReceiveSettings, windows: MainThreadDisplay) -> RendererFactory:
    def make(peer: PeerAvatar, fps: float) -> Renderer:
        return PipelineRenderer(peer, fps, settings, display=windows, log=status)

    return make


def local_side(args: argparse.Namespace, windows: MainThreadDisplay) -> LocalSide:
    """One's avatar, basis, landmark source and renderer (its preview window served by
    ``windows``); every option and device (camera, video file, detector files, sinks)
    checked before any network."""
    send = send_settings(args)
    receive = receive_settings(args)
    spec = None if args.input == "none" else InputSpec.parse(args.input)
    path = resolve_avatar(args.avatar) if args.avatar else builtin_avatar_path(args.landmarks)
    avatar = load_avatar(path)
    basis = load_shape_basis(args.shape_basis) if args.shape_basis else default_shape_basis()
    check_outputs(receive)
    info = describe_avatar(path, avatar)
    voice = voice_source(args.audio_input, args.loop)
    try:
        source = None if spec is None else CapturedLandmarks(spec, avatar, send)  # opened last
    except BaseException:
        if voice is not None:
            voice.close()
        raise
    return LocalSide(avatar, path, info, basis, source, renderer_factory(receive, windows),
                     voice, lambda: speakers(status))


# ---------------------------------------------------------------------------------------
# Running


def run_serve(args: argparse.Namespace) -> int:
    """`vcam call serve`: wait for one peer, run the call, print its report."""
    try:
        signaling = SignalingSettings(host=args.host, port=args.port)
    except ValueError as error:
        raise UserError(f"--port {args.port}: {error}") from None
    settings, ice = call_settings(args), ice_settings(args, args.host)
    windows = MainThreadDisplay()
    local, token = local_side(args, windows), new_token()

    def announce(url: str) -> None:
        print_listening(url, token, args.json)

    with releasing_input(local):
        report = run_until_stopped(lambda stop: serve_call(
            local, settings, signaling, ice, token, announce, stop, status, args.wait_seconds),
            windows)
    if report is None:
        status("nobody joined")
        return 0
    return finish(report, args.json)


def run_join(args: argparse.Namespace) -> int:
    """`vcam call join URL --token T`: join, run the call, print its report."""
    settings, ice = call_settings(args), ice_settings(args, url_host(args.url))
    windows = MainThreadDisplay()
    local = local_side(args, windows)
    with releasing_input(local):
        report = run_until_stopped(lambda stop: join_call(
            local, settings, args.url, args.token, SignalingSettings(), ice, stop, status),
            windows)
    return finish(report, args.json)


@contextlib.contextmanager
def releasing_input(local: LocalSide) -> Iterator[None]:
    """Release one's input (the camera) when the block ends, whatever became of the call (a
    call that ran has released it already, one that never started has not); not when a
    second Ctrl-C interrupts, as the call's threads may still be reading it."""
    interrupted = False
    try:
        yield
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        if local.source is not None and not interrupted:
            local.source.close()


def run_until_stopped(start: Callable[[asyncio.Event], Awaitable[Any]],
                      windows: MainThreadDisplay) -> Any:
    """Run the call's loop in a thread of its own while this thread runs the preview
    window's calls (``windows``) until the call is over; the first Ctrl-C (or SIGTERM) ends
    the call politely, a second Ctrl-C interrupts. Returns what ``start(stop)`` returned, or
    raises what it raised."""
    requested, done = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    def run_loop() -> None:
        try:
            outcome["result"] = asyncio.run(stopped_on_request(start, requested))
        except BaseException as error:  # raised again in this thread
            outcome["error"] = error
        finally:
            done.set()

    restore = install_stop_signals(requested)
    try:
        threading.Thread(target=run_loop, name="vcam-call-loop", daemon=True).start()
        windows.serve(done)
    finally:
        windows.finish()
        restore()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


async def stopped_on_request(start: Callable[[asyncio.Event], Awaitable[Any]],
                             requested: threading.Event) -> Any:
    """``start(stop)``, ``stop`` being set once ``requested`` is (from another thread)."""
    stop = asyncio.Event()

    async def forward() -> None:
        while not requested.is_set():
            await asyncio.sleep(STOP_POLL_S)
        stop.set()

    forwarding = asyncio.ensure_future(forward())
    try:
        return await start(stop)
    finally:
        forwarding.cancel()


def install_stop_signals(requested: threading.Event) -> Callable[[], None]:
    """Ctrl-C and SIGTERM set ``requested``, once: then they act as before (a second Ctrl-C
    interrupts). Only the main thread can take signals; returns what puts the handlers
    back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}

    def on_signal(signum: int, frame: object) -> None:
        status("ending the call (Ctrl-C again to interrupt)")
        requested.set()
        signal.signal(signum, previous[signum] or signal.SIG_DFL)

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler or signal.SIG_DFL)

    for signum in previous:
        signal.signal(signum, on_signal)
    return restore


def status(message: str) -> None:
    print(f"vcam call: {message}", file=sys.stderr, flush=True)


def print_listening(url: str, token: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"event": "listening", "url": url, "token": token}), flush=True)
        return
    print(f"waiting for a peer at {url}\nto join, run:\n"
          f"  vcam call join {url} --token={token} --avatar YOUR_AVATAR", flush=True)
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
