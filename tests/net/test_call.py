"""Landmark-only calls: fault injection, loopback ICE, the default basis, the session under
hostile input, in-process calls, and two-process calls over loopback (`vcam call serve` and
`vcam call join` in subprocesses) made of the runtime's stages (a clip tracked with dlib, the
demo input, ONNX Runtime rendering into mp4 files and a virtual camera), with injected loss
and with a peer that vanishes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import VIRTUALCAM_BACKEND
from tests.net.conftest import video_facts
from vcam.avatar import load_avatar
from vcam.data.synthetic import moving_face_frames, write_video
from vcam.landmarks.shape_basis import synthetic_shape_basis
from vcam.models.store import default_shape_basis
from vcam.net.avatar_exchange import ExchangeSettings, describe_avatar
from vcam.net.call import CallFailed, CallSession, CallSettings, LocalSide, join_call, serve_call
from vcam.net.call_runner import finish
from vcam.net.codec import Decoder, Encoder
from vcam.net.connection import (
    ChannelTap,
    Connection,
    IceSettings,
    describe_locally,
    keep_candidates,
)
from vcam.net.control import (
    AvatarOffer,
    AvatarRequest,
    Bye,
    KeyRequest,
    Ping,
    Ready,
    encode_chunk,
    encode_message,
    parse_message,
)
from vcam.net.jitter import JitterSettings
from vcam.net.media import CapturedLandmarks, PipelineRenderer, ReceiveSettings, SendSettings
from vcam.net.playout import CallbackRenderer, LandmarkInbox, PeerAvatar, RendererStop
from vcam.net.send import FaultSettings, LandmarkSample
from vcam.net.signaling import SignalingSettings
from vcam.runtime.avatars import RendererSettings
from vcam.runtime.compositor import CompositorSettings
from vcam.runtime.session import InputSpec
from vcam.runtime.sinks import SinkSpec

REPO = Path(__file__).resolve().parents[2]
LOOPBACK_ICE = IceSettings(host_addresses=("127.0.0.1",))
# The call commands as `vcam call ...` would run them; the process leaves without the
# interpreter's teardown (torch's alone takes a second or two on a busy machine).
ENTRY = ("import os, sys; from vcam.cli import main; "
         "code = main(sys.argv[1:] + sys.stdin.readline().split()); "
         "sys.stdout.flush(); sys.stderr.flush(); os._exit(code)")
CLIP_FPS = 15
WIDTH, HEIGHT = 160, 120


# -- pieces ----------------------------------------------------------------------------------


def test_loopback_ice_offers_only_127_0_0_1_and_restores_aioice():
    import aioice.ice
    from aiortc import RTCPeerConnection

    original = aioice.ice.get_host_addresses

    async def offer() -> str:
        pc = RTCPeerConnection()
        pc.createDataChannel("control")
        try:
            return await describe_locally(pc, await pc.createOffer(), LOOPBACK_ICE)
        finally:
            await pc.close()

    sdp = asyncio.run(offer())
    candidates = [line for line in sdp.splitlines() if line.startswith("a=candidate:")]
    assert candidates and all(line.split()[4] == "127.0.0.1" for line in candidates)
    assert aioice.ice.get_host_addresses is original
    foreign = sdp + "a=candidate:1 1 udp 1 192.0.2.2 5000 typ host\r\n"
    assert "192.0.2.2" not in keep_candidates(foreign, ("127.0.0.1",))
    assert keep_candidates(foreign, None) == foreign


def test_the_synthetic_basis_is_deterministic_and_codes_faces_well():
    basis = synthetic_shape_basis()
    assert basis.fingerprint == synthetic_shape_basis().fingerprint
    from calibration.sets import neutral_face

    face = neutral_face(64) + np.float32(1.5)
    encoder, decoder = Encoder(basis, 64), Decoder(basis, 64)
    decoded = decoder.decode(encoder.encode(face, 0))
    assert decoded is not None and np.abs(decoded.landmarks - face).max() < 0.5


# -- the session under hostile input ----------------------------------------------------------


class FakeChannel:
    def __init__(self, label: str) -> None:
        self.label = label
        self.readyState = "open"
        self.bufferedAmount = 0
        self.bufferedAmountLowThreshold = 0
        self.sent: list = []

    def on(self, event, handler) -> None:
        pass

    def send(self, data) -> None:
        self.sent.append(data)


class FakePeerConnection:
    connectionState = "connected"

    def on(self, event, handler) -> None:
        pass

    async def close(self) -> None:
        pass


def counting_renderer(peer: PeerAvatar, fps: float) -> CallbackRenderer:
    """A renderer that only checks and counts what it is handed (no torch, no thread)."""

    def check(landmarks: np.ndarray) -> None:
        assert landmarks.shape == (68, 2) and np.isfinite(landmarks).all()

    return CallbackRenderer(check)


class SyntheticSource:
    """The calibration neutral face nodding at ``fps`` for ``seconds`` (no video, no dlib)."""

    def __init__(self, crop: int, fps: float = 25.0, seconds: float = 30.0) -> None:
        from calibration.sets import neutral_face

        self.face, self.fps, self.count = neutral_face(crop), fps, int(seconds * fps)
        self.closed = False

    def samples(self, stop: threading.Event):
        started = time.monotonic()
        for index in range(self.count):
            if stop.wait(max(0.0, started + index / self.fps - time.monotonic())):
                return
            offset = np.float32(2 * np.sin(index / 5))
            yield LandmarkSample(self.face + offset, time.monotonic_ns() // 1000)

    def close(self) -> None:
        self.closed = True


def local_side(path: Path, source=None) -> LocalSide:
    avatar = load_avatar(path)
    return LocalSide(avatar, path, describe_avatar(path, avatar), synthetic_shape_basis(), source,
                     counting_renderer)


@pytest.fixture(scope="module")
def astro_side(avatars) -> LocalSide:
    return local_side(avatars["astro"])


def hostile_messages():
    valid = [encode_message(message) for message in (
        Ping(), Ready(), KeyRequest(), AvatarRequest(), AvatarOffer(10, "ab" * 32),
        Bye("x", 1, 1, 1))]
    return st.lists(st.one_of(
        st.sampled_from(valid), st.text(max_size=100), st.binary(max_size=100),
        st.builds(encode_chunk, st.integers(0, 100), st.binary(max_size=50))), max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(control=hostile_messages(), landmarks=st.lists(st.binary(max_size=80), max_size=6))
def test_the_session_receive_path_never_raises(astro_side, control, landmarks):
    async def feed() -> Counter:
        connection = Connection(FakePeerConnection(), ChannelTap(FakeChannel("control")),
                                ChannelTap(FakeChannel("landmarks")))
        session = CallSession(connection, astro_side, CallSettings(share_avatar=True),
                              asyncio.Event(), lambda message: None)
        session.attach()
        session.landmarks_in = LandmarkInbox(astro_side.basis, 64, JitterSettings(),
                                             session.want_key)
        hello = session.hello()
        session.on_control(encode_message(hello))
        for data in control:
            session.on_control(data)
        for data in landmarks:
            session.on_landmarks(data)
        await asyncio.sleep(0)
        for task in session.tasks:
            task.cancel()
        assert session.landmarks_in.errors == 0
        return session.control_inbox.bad

    bad = asyncio.run(feed())
    assert bad.get("internal", 0) == 0


def test_a_call_that_ends_before_sending_releases_the_landmark_source(avatars):
    source = SyntheticSource(64)

    async def call():
        connection = Connection(FakePeerConnection(), ChannelTap(FakeChannel("control")),
                                ChannelTap(FakeChannel("landmarks")))
        return await CallSession(connection, local_side(avatars["astro"], source),
                                 CallSettings(hello_timeout_s=0.1), asyncio.Event(),
                                 lambda message: None).run()

    report = asyncio.run(call())
    assert report.failed and "no hello" in report.ended_by
    assert source.closed  # no sender ever took it


def test_a_peer_with_another_protocol_or_basis_is_refused_clearly(astro_side):
    async def check(**changes) -> str:
        connection = Connection(FakePeerConnection(), ChannelTap(FakeChannel("control")),
                                ChannelTap(FakeChannel("landmarks")))
        session = CallSession(connection, astro_side, CallSettings(), asyncio.Event(),
                              lambda message: None)
        with pytest.raises(CallFailed) as failed:
            session.check_hello(dataclasses.replace(session.hello(), **changes))
        return str(failed.value)

    assert "--shape-basis" in asyncio.run(check(shape_basis="0" * 64))
    assert "update one side" in asyncio.run(check(version=2))
    assert "update one side" in asyncio.run(check(codec=0xA1))


def answers_to_hello(receiver: LocalSide, hello, timeout: float = 20.0) -> list[str]:
    """The control messages (but pings) a session sends once it has the peer's hello."""
    def answers(control: FakeChannel) -> list[str]:
        kinds = [type(parse_message(message)).__name__ for message in control.sent]
        return [kind for kind in kinds if kind != "Ping"]

    async def exchange() -> list[str]:
        control = FakeChannel("control")
        connection = Connection(FakePeerConnection(), ChannelTap(control),
                                ChannelTap(FakeChannel("landmarks")))
        session = CallSession(connection, receiver, CallSettings(), asyncio.Event(),
                              lambda message: None)
        session.attach()
        setup = asyncio.ensure_future(session.setup())
        session.on_control(encode_message(hello))
        deadline = time.monotonic() + timeout
        while len(answers(control)) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        setup.cancel()
        for task in session.tasks:
            task.cancel()
        if session.renderer is not None:
            session.renderer.close()
        return answers(control)

    return asyncio.run(exchange())


@pytest.mark.parametrize("shares", [True, False], ids=["shared", "not-shared"])
def test_a_hello_does_not_tell_the_peer_whether_one_holds_its_avatar(avatars, vcam_home,
                                                                     shares):
    bob = local_side(avatars["bob"], SyntheticSource(64))
    hello = hello_of(bob, shares_avatar=shares)
    receiver = local_side(avatars["astro"])
    without = answers_to_hello(receiver, hello)
    (vcam_home / "avatars").mkdir(parents=True)
    (vcam_home / "avatars" / "bob.avatar.safetensors").write_bytes(avatars["bob"].read_bytes())
    holding = answers_to_hello(receiver, hello)
    assert holding == without
    assert without == (["Hello", "AvatarRequest"] if shares else ["Hello", "Ready"])


def hello_of(side: LocalSide, **changes):
    """The hello a session of ``side`` sends, with ``changes``."""
    async def make():
        connection = Connection(FakePeerConnection(), ChannelTap(FakeChannel("control")),
                                ChannelTap(FakeChannel("landmarks")))
        return CallSession(connection, side, CallSettings(), asyncio.Event(),
                           lambda message: None).hello()

    return dataclasses.replace(asyncio.run(make()), **changes)


# -- in-process calls (two sessions, one loop, real aiortc over loopback) ---------------------


async def in_process_call(server: LocalSide, client: LocalSide, server_settings: CallSettings,
                          client_settings: CallSettings):
    announced: asyncio.Queue[str] = asyncio.Queue()
    signaling = SignalingSettings(port=0, timeout_s=20.0)
    token, stop = "test-token", asyncio.Event()
    serving = asyncio.ensure_future(serve_call(server, server_settings, signaling, LOOPBACK_ICE,
                                               token, announced.put_nowait, stop, print))
    url = await asyncio.wait_for(announced.get(), 20)
    joined = await asyncio.wait_for(join_call(client, client_settings, url, token, signaling,
                                              LOOPBACK_ICE, stop, print), 60)
    served = await asyncio.wait_for(serving, 30)
    return served, joined


def test_an_avatar_over_the_receivers_limit_ends_the_call_on_both_sides(avatars, vcam_home):
    size = avatars["bob"].stat().st_size
    limited = CallSettings(exchange=ExchangeSettings(max_bytes=size - 1))
    served, joined = asyncio.run(in_process_call(
        local_side(avatars["astro"]), local_side(avatars["bob"], SyntheticSource(64)),
        limited, CallSettings(share_avatar=True)))
    assert served.failed and "limit" in served.ended_by
    assert joined.failed and "refused" in joined.ended_by
    assert not (vcam_home / "avatars" / "bob.avatar.safetensors").exists()


class HangingUpRenderer(CallbackRenderer):
    """Counts frames and hangs up by itself after ``after`` of them, as q in the preview
    window does; keeps the peer's avatar it was made for."""

    def __init__(self, peer: PeerAvatar, after: int) -> None:
        super().__init__(lambda landmarks: None)
        self.peer, self.after = peer, after

    @property
    def stopped(self) -> RendererStop | None:
        return RendererStop("hung up from the preview window") if self.rendered >= self.after \
            else None


def test_a_renderer_that_stops_by_itself_ends_the_call_for_both(avatars, vcam_home):
    made: list[HangingUpRenderer] = []

    def factory(peer: PeerAvatar, fps: float) -> HangingUpRenderer:
        made.append(HangingUpRenderer(peer, after=10))
        return made[-1]

    server = dataclasses.replace(local_side(avatars["astro"]), renderer_factory=factory)
    served, joined = asyncio.run(in_process_call(
        server, local_side(avatars["bob"], SyntheticSource(64)), CallSettings(),
        CallSettings(share_avatar=True)))
    assert not served.failed and served.ended_by == "hung up from the preview window", served
    assert not joined.failed and "peer ended" in joined.ended_by, joined
    assert served.playout["rendered"] >= 10
    (renderer,) = made
    assert renderer.peer.avatar.name == "bob" and renderer.peer.call_only  # no --keep


class BrokenWindow:
    """A preview window that breaks at its first picture."""

    def check(self) -> None:
        pass

    def open(self, title: str) -> None:
        pass

    def show(self, title: str, bgr: np.ndarray) -> None:
        raise RuntimeError("the window broke")

    def poll_key(self, title: str, milliseconds: int) -> int:
        return -1

    def close(self, title: str) -> None:
        pass


def test_a_sink_that_fails_mid_call_ends_it_as_a_failure(avatars, vcam_home, capsys):
    """The runtime's pipeline on this side (torch, a preview window that breaks): the call
    ends as failed here, which the command line reports with exit code 2."""
    shown = ReceiveSettings((SinkSpec("window"),), RendererSettings("torch", 1, "cpu"),
                            CompositorSettings(WIDTH, HEIGHT))
    server = dataclasses.replace(
        local_side(avatars["astro"]),
        renderer_factory=lambda peer, fps: PipelineRenderer(peer, fps, shown,
                                                            display=BrokenWindow()))
    served, joined = asyncio.run(in_process_call(
        server, local_side(avatars["bob"], SyntheticSource(64)), CallSettings(),
        CallSettings(share_avatar=True)))
    assert served.failed and "showing the peer failed: the window broke" in served.ended_by
    assert not joined.failed and "peer ended" in joined.ended_by, joined
    capsys.readouterr()
    assert finish(served, as_json=False) == 2
    assert capsys.readouterr().err == f"vcam: error: {served.ended_by}\n"


# -- two processes -----------------------------------------------------------------------------


class Peer:
    """`vcam call ...` in a subprocess; its output lines are collected by threads."""

    def __init__(self, args: list[str], home: Path, temporary: Path | None = None) -> None:
        env = {**os.environ, "VCAM_HOME": str(home), "PYTHONUNBUFFERED": "1"}
        if temporary is not None:  # its own temporary folder, to see what it leaves there
            env["TMPDIR"] = str(temporary)
        self.process = subprocess.Popen(
            [sys.executable, "-c", ENTRY, "call", *args], cwd=REPO, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: queue.Queue[tuple[str, str]] = queue.Queue()
        self.output: list[str] = []
        for name, stream in (("out", self.process.stdout), ("err", self.process.stderr)):
            threading.Thread(target=self.collect, args=(name, stream), daemon=True).start()

    def collect(self, name: str, stream) -> None:
        for line in stream:
            self.lines.put((name, line.rstrip("\n")))

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                _, line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            self.output.append(line)
            if text in line:
                return line
        raise AssertionError(f"no {text!r} within {timeout} s:\n" + "\n".join(self.output))

    def tell(self, text: str) -> None:
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def finish(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            time.sleep(0.1)
            while not self.lines.empty():
                self.output.append(self.lines.get()[1])

    def report(self) -> dict:
        for line in reversed(self.output):
            if line.startswith("{") and '"report"' in line:
                return json.loads(line)
        raise AssertionError("no report:\n" + "\n".join(self.output))

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()


@pytest.fixture(scope="module")
def call_homes(avatars, tmp_path_factory) -> dict[str, Path]:
    """Two users: A has 'astro', B has 'bob'; and a 15 fps clip of a moving face."""
    root = tmp_path_factory.mktemp("call")
    homes = {}
    for user, name in (("a", "astro"), ("b", "bob")):
        homes[user] = root / user
        (homes[user] / "avatars").mkdir(parents=True)
        (homes[user] / "avatars" / avatars[name].name).write_bytes(avatars[name].read_bytes())
    homes["clip"] = root / "clip.mp4"
    write_video(str(homes["clip"]), moving_face_frames(45, 320, 240, face_size=100), CLIP_FPS)
    return homes


def serve_process(args: list[str], home: Path, temporary: Path | None = None
                  ) -> tuple[Peer, dict]:
    """`vcam call serve` in a subprocess, and the join details it printed."""
    voice = [] if "--audio-input" in args else ["--audio-input", "none"]
    serve = Peer(["serve", "--port", "0", "--avatar", "astro", "--json", *voice, *args], home,
                 temporary)
    serve.process.stdin.close()
    try:
        return serve, json.loads(serve.wait_for('"listening"', 90))
    except BaseException:
        serve.kill()
        raise




def test_two_way_call_between_two_processes_with_loss_injected_one_way(
        call_homes, avatars, vcam_home, tmp_path, recording_virtualcam):
    """A: `vcam call serve` in a subprocess, tracking a clip with dlib and showing B's
    avatar (received for this call only) through the runtime's pipeline, rendered by ONNX
    Runtime, in an mp4 file. B: this process, joining with the demo input, 10% loss and 10%
    reordering injected on its send path, and showing A's avatar (kept) in a virtual camera
    (pyvirtualcam, a recording device) and an mp4 file."""
    a_sees, b_sees, a_temporary = tmp_path / "a.mp4", tmp_path / "b.mp4", tmp_path / "a-tmp"
    a_temporary.mkdir()
    serve, listening = serve_process(
        ["--input", str(call_homes["clip"]), "--loop", "--share-avatar", "--size",
         f"{WIDTH}x{HEIGHT}", "--sink", f"file:{a_sees}"], call_homes["a"], a_temporary)
    settings = CallSettings(max_seconds=3.0, share_avatar=True,
                            exchange=ExchangeSettings(keep=True),
                            faults=FaultSettings(drop=0.1, reorder=0.1, seed=3))
    bob = load_avatar(avatars["bob"])
    shown = ReceiveSettings((SinkSpec("virtualcam"), SinkSpec("file", b_sees)),
                            RendererSettings("onnxruntime", 1, "cpu"),
                            CompositorSettings(WIDTH, HEIGHT),
                            virtualcam_backend=VIRTUALCAM_BACKEND)
    try:
        me = LocalSide(bob, avatars["bob"], describe_avatar(avatars["bob"], bob),
                       default_shape_basis(),  # what the serving CLI uses by default
                       CapturedLandmarks(InputSpec.parse("demo"), bob,
                                         SendSettings(fps=CLIP_FPS)),
                       lambda peer, fps: PipelineRenderer(peer, fps, shown))
        try:
            joined = asyncio.run(join_call(me, settings, listening["url"], listening["token"],
                                           SignalingSettings(), LOOPBACK_ICE, asyncio.Event(),
                                           lambda message: None))
        finally:
            assert me.source is not None
            me.source.close()  # released whatever became of the call (as the CLI does)
        assert serve.finish(60) == 0, "\n".join(serve.output)
    finally:
        serve.kill()
    served = serve.report()
    assert not joined.failed and "max-seconds" in joined.ended_by, joined
    assert "peer ended" in served["ended_by"], served
    # B -> A: 10% dropped and 10% reordered on B's send path; A -> B: clean.
    lossy, clean = served["received"], joined.received
    assert joined.sent["injected_drops"] > 0 and joined.sent["injected_reorders"] > 0
    assert 0.03 < lossy["loss"] < 0.25 and lossy["bad"] == 0
    assert clean["loss"] <= 0.02 and clean["bad"] == 0
    for playout in (served["playout"], joined.playout):
        assert playout["slots"] >= 2 * CLIP_FPS, playout
        assert playout["rendered"] >= 0.95 * playout["slots"], playout
    # What each side showed, read back.
    assert video_facts(a_sees) == (served["playout"]["output"], WIDTH, HEIGHT)
    assert video_facts(b_sees) == (joined.playout["output"], WIDTH, HEIGHT)
    (camera,) = recording_virtualcam
    assert (camera.width, camera.height, camera.fps) == (WIDTH, HEIGHT, CLIP_FPS)
    assert len(camera.frames) >= joined.playout["output"] and camera.closed
    assert {(frame.size, frame.dtype) for frame in camera.frames} == {
        (WIDTH * HEIGHT * 3, np.dtype(np.uint8))}
    # B kept A's avatar (and may cache its compiled model); A kept nothing of B's.
    assert (vcam_home / "avatars" / "astro.avatar.safetensors").exists()
    assert list((vcam_home / "compiled").glob("*/generator-fp32.onnx"))
    assert sorted(path.name for path in call_homes["a"].iterdir()) == ["avatars"]
    assert not (call_homes["a"] / "avatars" / "bob.avatar.safetensors").exists()
    # Its temporary folder holds nothing of vcam's (ONNX Runtime keeps a `.ses` file there).
    assert [path.name for path in a_temporary.iterdir() if path.name != ".ses"] == []


def test_a_peer_that_vanishes_ends_the_call_cleanly(call_homes, tmp_path):
    """Two processes; the serving one is killed mid-call; the joining one must end the call
    by itself within a few seconds, with exit code 0 and its report."""
    join = Peer(["join", "--avatar", "bob", "--json", "--audio-input", "none", "--input",
                 "demo", "--share-avatar",
                 "--max-seconds", "120", "--peer-timeout", "3",
                 "--sink", f"file:{tmp_path / 'b.mp4'}"],
                call_homes["b"])  # starts now, reads the URL and token from its stdin
    try:
        serve, listening = serve_process(["--input", "none", "--share-avatar", "--size",
                                          f"{WIDTH}x{HEIGHT}",
                                          "--sink", f"file:{tmp_path / 'a.mp4'}"],
                                         call_homes["a"], tmp_path)
    except BaseException:
        join.kill()
        raise
    try:
        join.tell(f"{listening['url']} --token {listening['token']}")
        join.wait_for("call running", 90)
        time.sleep(1.0)
        serve.kill()
        killed = time.monotonic()
        assert join.finish(30) == 0, "\n".join(join.output)
        elapsed = time.monotonic() - killed
    finally:
        serve.kill()
        join.kill()
    report = join.report()
    assert elapsed < 10, elapsed
    assert "silent" in report["ended_by"] or "connection" in report["ended_by"], report
    assert report["sent"]["packets"] > 0
