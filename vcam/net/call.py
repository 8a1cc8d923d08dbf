"""A landmark-only call: two peers, each sending its own face landmarks and rendering the
other's avatar.

Network work lives in one asyncio loop: signaling (``vcam.net.signaling``), the WebRTC peer
connection (aiortc) and its two data channels, ``landmarks`` (unordered, no retransmits:
codec packets, a lost one is concealed, never resent) and ``control`` (reliable: hello, the
avatar exchange, key requests, pings and bye; see ``vcam.net.control``). Blocking work runs in
threads: the landmark source (video decoding and face tracking) encodes packets and hands
them to the loop with ``run_coroutine_threadsafe``; the renderer runs the generator on the
latest landmarks handed to it (``vcam.net.media`` builds both from the real-time runtime's
stages). A playout loop ticks at the sender's frame rate and takes landmarks from the jitter
buffer, so the renderer sees a steady stream whatever the network did. A call ends on bye, on
the peer's silence (no message for ``peer_timeout_s``), on a lost connection or closed
channel, at ``max_seconds``, when the local video ends, when the renderer stops by itself
(its preview window was closed), or on request (Ctrl-C); either way a bye goes out when it
can and a report of the call comes back.

Loopback calls: aioice, aiortc's ICE, never offers 127.0.0.1 as a candidate and has no
setting for it. ``IceSettings.host_addresses`` limits the host candidates to the addresses
given (e.g. ``("127.0.0.1",)`` when both peers are on one machine) by standing in for
``aioice.ice.get_host_addresses`` only while candidates are gathered, and drops every other
candidate from both session descriptions, so no packet goes anywhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vcam import __version__
from vcam.avatar import Avatar, load_avatar
from vcam.errors import UserError
from vcam.net.avatar_exchange import (
    ExchangeSettings,
    IncomingAvatar,
    TransferRefused,
    check_declared_size,
    chunk_messages,
    load_received,
    local_copy,
)
from vcam.net.codec import MAGIC_VERSION, CodecSettings, Decoder, Encoder
from vcam.net.control import (
    CAPABILITIES,
    PROTOCOL_VERSION,
    AvatarInfo,
    AvatarOffer,
    AvatarRequest,
    AvatarResult,
    Bye,
    Chunk,
    ControlInbox,
    ControlMessage,
    Hello,
    KeyRequest,
    Ping,
    Ready,
    encode_message,
)
from vcam.net.jitter import JitterBuffer, JitterSettings
from vcam.net.shape_basis import ShapeBasis, fit_shape_basis
from vcam.net.signaling import (
    CallBusy,
    OfferRefused,
    SignalingServer,
    SignalingSettings,
    send_offer,
)

LANDMARKS_LABEL = "landmarks"
CONTROL_LABEL = "control"
EARLY_MESSAGES = 256
# How often the call checks for silence, Ctrl-C and the end of --max-seconds.
WATCH_INTERVAL_S = 0.1


# ---------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class IceSettings:
    """STUN/TURN server URLs (none by default), TURN credentials, and the addresses host
    candidates are limited to (None: every interface, aioice's default)."""

    servers: tuple[str, ...] = ()
    username: str | None = None
    credential: str | None = None
    host_addresses: tuple[str, ...] | None = None


@dataclass(frozen=True)
class FaultSettings:
    """Faults injected on the landmark send path, for tests: each packet is dropped with
    probability ``drop``, else held back behind the next one with probability ``reorder``;
    ``seed`` makes it repeatable."""

    drop: float = 0.0
    reorder: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.drop <= 1 and 0 <= self.reorder <= 1):
            raise ValueError("drop and reorder are probabilities in 0..1")


@dataclass(frozen=True)
class CallSettings:
    """Everything about a call but who and where: codec, jitter buffer, avatar exchange,
    injected faults, duration (``max_seconds`` 0: no limit) and the timeouts."""

    codec: CodecSettings = field(default_factory=CodecSettings)
    jitter: JitterSettings = field(default_factory=JitterSettings)
    exchange: ExchangeSettings = field(default_factory=ExchangeSettings)
    faults: FaultSettings = field(default_factory=FaultSettings)
    share_avatar: bool = False
    max_seconds: float = 0.0
    connect_timeout_s: float = 20.0
    hello_timeout_s: float = 10.0
    setup_timeout_s: float = 300.0
    peer_timeout_s: float = 5.0
    ping_interval_s: float = 1.0
    key_request_interval_s: float = 0.2

    def __post_init__(self) -> None:
        if self.max_seconds < 0 or min(self.connect_timeout_s, self.hello_timeout_s,
                                       self.setup_timeout_s, self.peer_timeout_s,
                                       self.ping_interval_s) <= 0:
            raise ValueError("max_seconds must not be negative and timeouts must be positive")
        if self.ping_interval_s >= self.peer_timeout_s:
            raise ValueError("pings must come more often than the peer timeout")


# ---------------------------------------------------------------------------------------
# The default shape basis

BASIS_CROP = 256
BASIS_COMPONENTS = 11
BASIS_GRID = 2.0 ** -24
BASIS_POSES = {"yaw": (-30, -15, 0, 15, 30), "pitch": (-15, 0, 15), "roll": (-10, 0, 10),
               "scale": (0.9, 1.1), "shift_x": (-0.04, 0.04)}
BASIS_EXPRESSIONS = {"mouth_open": (0.0, 0.5, 1.0), "blink": (0.0, 1.0),
                     "brow_raise": (0.0, 1.0)}


def default_shape_basis() -> ShapeBasis:
    """The basis both peers derive when none is given: PCA (``fit_shape_basis``) of a
    built-in synthetic set (the calibration package's neutral face through a fixed grid of
    head poses and expressions, 2160 shapes), keeping the 11 components whose variances are
    well apart, each sign-fixed and every number rounded to a 2**-24 grid so that machines
    whose arithmetic differs in the last bits still agree on the fingerprint."""
    from calibration.sets import Expression, HeadPose, apply_expression, apply_pose, neutral_face

    neutral = neutral_face(BASIS_CROP)
    shapes = [apply_pose(apply_expression(neutral, Expression(**expression)), HeadPose(**pose),
                         BASIS_CROP)
              for pose in grid(BASIS_POSES) for expression in grid(BASIS_EXPRESSIONS)]
    fitted = fit_shape_basis(np.asarray(shapes), BASIS_COMPONENTS, BASIS_CROP)
    signs = np.sign(fitted.components[np.arange(fitted.count),
                                      np.abs(fitted.components).argmax(axis=1)])
    return ShapeBasis(on_grid(fitted.mean), on_grid(fitted.components * signs[:, None]),
                      on_grid(fitted.stddevs), fitted.samples)


def grid(axes: dict[str, tuple[float, ...]]) -> Iterator[dict[str, float]]:
    names = list(axes)
    for values in itertools.product(*(axes[name] for name in names)):
        yield dict(zip(names, values))


def on_grid(values: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(values, np.float64) / BASIS_GRID) * BASIS_GRID


# ---------------------------------------------------------------------------------------
# ICE


def rtc_configuration(ice: IceSettings) -> Any:
    from aiortc import RTCConfiguration, RTCIceServer

    servers = [RTCIceServer(urls=url, username=ice.username, credential=ice.credential)
               for url in ice.servers]
    return RTCConfiguration(iceServers=servers)


@contextlib.contextmanager
def host_candidates_limited_to(addresses: tuple[str, ...] | None) -> Iterator[None]:
    """While the block runs (candidate gathering), aioice sees only ``addresses`` as the
    machine's own; nothing changes when ``addresses`` is None."""
    if addresses is None:
        yield
        return
    import aioice.ice

    original = aioice.ice.get_host_addresses

    def limited(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [address for address in addresses if (":" in address and use_ipv6)
                or (":" not in address and use_ipv4)]

    aioice.ice.get_host_addresses = limited
    try:
        yield
    finally:
        aioice.ice.get_host_addresses = original


def keep_candidates(sdp: str, addresses: tuple[str, ...] | None) -> str:
    """The session description without candidates on other addresses."""
    if addresses is None:
        return sdp
    lines = [line for line in sdp.splitlines()
             if not line.startswith("a=candidate:") or candidate_address(line) in addresses]
    return "\r\n".join(lines) + "\r\n"


def candidate_address(line: str) -> str | None:
    fields = line.split()
    return fields[4] if len(fields) > 4 else None


# ---------------------------------------------------------------------------------------
# Send path: source -> encoder -> fault injector -> landmarks channel


@dataclass(frozen=True)
class LandmarkSample:
    """Landmarks (68, 2) float32 in the sender's avatar-crop pixels, and when the frame was
    captured (sender's monotonic µs)."""

    landmarks: np.ndarray
    capture_us: int


class LandmarkSource(Protocol):
    """Where one's own landmarks come from; ``samples`` blocks (it runs in a thread) and
    stops when ``stop`` is set or the source ends."""

    fps: float

    def samples(self, stop: threading.Event) -> Iterator[LandmarkSample]: ...

    def close(self) -> None:
        """Release the input (it may be called more than once)."""
        ...


class FaultInjector:
    """Drops and reorders packets as ``FaultSettings`` say; counts what it did."""

    def __init__(self, settings: FaultSettings) -> None:
        self.settings = settings
        self.random = random.Random(settings.seed)
        self.held: bytes | None = None
        self.dropped = 0
        self.reordered = 0

    def process(self, packet: bytes) -> list[bytes]:
        """The packets to send now, in order."""
        if self.random.random() < self.settings.drop:
            self.dropped += 1
            return []
        if self.held is None and self.random.random() < self.settings.reorder:
            self.held = packet
            self.reordered += 1
            return []
        held, self.held = self.held, None
        return [packet] if held is None else [packet, held]

    def flush(self) -> list[bytes]:
        held, self.held = self.held, None
        return [] if held is None else [held]


class LandmarkSender:
    """A worker thread: samples from the source, encoded, handed to ``deliver`` on the
    loop. ``request_key`` may be called from any thread; ``on_end`` runs on the loop when the
    source ends."""

    def __init__(self, source: LandmarkSource, encoder: Encoder,
                 deliver: Callable[[bytes], Coroutine[Any, Any, None]],
                 loop: asyncio.AbstractEventLoop, on_end: Callable[[], None]) -> None:
        self.source = source
        self.encoder = encoder
        self.deliver = deliver
        self.loop = loop
        self.on_end = on_end
        self.stop = threading.Event()
        self.key_wanted = threading.Event()
        self.encoded = 0
        self.error: str | None = None
        self.thread = threading.Thread(target=self.run, name="vcam-call-sender", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def request_key(self) -> None:
        self.key_wanted.set()

    def run(self) -> None:
        try:
            for sample in self.source.samples(self.stop):
                if self.stop.is_set():
                    break
                self.send(sample)
        except Exception as error:  # reported, then the call ends like any source end
            self.error = f"{type(error).__name__}: {error}"
        finally:
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self.on_end)

    def send(self, sample: LandmarkSample) -> None:
        if self.key_wanted.is_set():
            self.key_wanted.clear()
            self.encoder.request_key()
        packet = self.encoder.encode(sample.landmarks, sample.capture_us)
        self.encoded += 1
        future = asyncio.run_coroutine_threadsafe(self.deliver(packet), self.loop)
        future.result(timeout=5.0)

    def close(self, timeout: float = 5.0) -> None:
        """Stop and wait for the thread (blocking: call it from a thread)."""
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout)
        self.source.close()


# ---------------------------------------------------------------------------------------
# Receive path: landmarks channel -> decoder -> jitter buffer -> playout -> renderer


@dataclass(frozen=True)
class PeerAvatar:
    """The avatar the peer is rendered with, and the user's own bundle of it: a copy the
    user had, or one kept with ``--keep``. ``path`` None: received for this call only, so
    nothing made from it (compiled models, engines) may outlive the call."""

    avatar: Avatar
    path: Path | None = None

    @property
    def call_only(self) -> bool:
        return self.path is None


@dataclass(frozen=True)
class RendererStop:
    """Why a renderer stopped by itself during the call (its window was closed, a sink
    failed); ``failed``: the call ends as a failure."""

    reason: str
    failed: bool = False


class Renderer(Protocol):
    """Where played-out landmarks go: the pluggable render stage. ``start`` blocks (it runs
    in a thread); ``submit`` is called from the loop once per frame slot with (68, 2) float32
    landmarks in the crop pixels of the peer's avatar and must not block; ``close`` blocks;
    ``counts`` holds at least ``rendered`` and ``skipped`` (and ``rejected``: landmarks it
    dropped as unusable, if it checks them); ``stopped`` is None while it runs, else why it
    stopped by itself (the call then ends)."""

    def start(self) -> None: ...

    def submit(self, landmarks: np.ndarray) -> None: ...

    def close(self) -> None: ...

    @property
    def counts(self) -> dict[str, int]: ...

    @property
    def stopped(self) -> RendererStop | None: ...


# (the peer's avatar, the peer's frame rate) -> the renderer of this call
RendererFactory = Callable[[PeerAvatar, float], Renderer]


class CallbackRenderer:
    """A plain render callback as a ``Renderer``: ``callback(landmarks)`` once per frame
    slot, on the loop (so it must only hand the landmarks on, e.g. to a latest-wins queue)."""

    def __init__(self, callback: Callable[[np.ndarray], None]) -> None:
        self.callback = callback
        self.rendered = 0

    def start(self) -> None:
        pass

    def submit(self, landmarks: np.ndarray) -> None:
        self.callback(landmarks)
        self.rendered += 1

    def close(self) -> None:
        pass

    @property
    def counts(self) -> dict[str, int]:
        return {"rendered": self.rendered, "skipped": 0}

    @property
    def stopped(self) -> RendererStop | None:
        return None


class LandmarkInbox:
    """Packets from the landmarks channel into frames in the jitter buffer. ``receive``
    never raises: the decoder counts bad packets, anything unexpected goes to ``errors``."""

    def __init__(self, basis: ShapeBasis, crop_size: int, settings: JitterSettings,
                 want_key: Callable[[], None]) -> None:
        self.decoder = Decoder(basis, crop_size)
        self.jitter = JitterBuffer(settings)
        self.want_key = want_key
        self.bytes = 0
        self.errors = 0
        self.sequences: list[int] = []

    def receive(self, data: object) -> None:
        try:
            if isinstance(data, bytes | bytearray):
                self.bytes += len(data)
            frame = self.decoder.decode(data)
            if frame is not None:
                self.jitter.push(frame)
                self.note_sequence(frame.sequence)
            if self.decoder.wants_key:
                self.want_key()
        except Exception:
            self.errors += 1

    def note_sequence(self, sequence: int) -> None:
        """Keep the lowest and highest sequence number decoded (for the loss estimate)."""
        if not self.sequences:
            self.sequences = [sequence, sequence]
        self.sequences = [min(self.sequences[0], sequence), max(self.sequences[1], sequence)]


@dataclass
class PlayoutCounts:
    """Frame slots since the first frame was due; ``played``: slots whose landmarks went to
    the renderer; ``missed``: slots the loop woke up too late for."""

    slots: int = 0
    played: int = 0
    missed: int = 0


async def playout_loop(inbox: LandmarkInbox, renderer: Renderer, fps: float,
                       ended: asyncio.Event, counts: PlayoutCounts) -> None:
    """Hand the renderer the jitter buffer's landmarks once per frame slot."""
    period = 1.0 / fps
    tick = time.monotonic()
    while not ended.is_set():
        delay = tick - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        playout = inbox.jitter.frame_at()
        if playout is not None or counts.slots:
            counts.slots += 1
        if playout is not None:
            renderer.submit(playout.landmarks)
            counts.played += 1
        tick += period
        late = int((time.monotonic() - tick) // period)
        if late > 0:
            tick += late * period
            if counts.slots:
                counts.slots += late
                counts.missed += late


# ---------------------------------------------------------------------------------------
# Channels


class ChannelTap:
    """Listens on a data channel from the moment it exists: messages that arrive before a
    handler is set are kept (at most ``EARLY_MESSAGES``) and handed over with it."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.handler: Callable[[object], None] | None = None
        self.early: deque[object] = deque(maxlen=EARLY_MESSAGES)
        self.opened = asyncio.Event()
        self.closed = asyncio.Event()
        channel.on("message", self.on_message)
        channel.on("open", self.opened.set)
        channel.on("close", self.closed.set)
        if channel.readyState == "open":
            self.opened.set()

    def on_message(self, data: object) -> None:
        if self.handler is None:
            self.early.append(data)
        else:
            self.handler(data)

    def set_handler(self, handler: Callable[[object], None]) -> None:
        self.handler = handler
        while self.early:
            handler(self.early.popleft())

    def send(self, data: str | bytes) -> bool:
        """Send if the channel is open; False otherwise (never raises)."""
        if self.channel.readyState != "open":
            return False
        try:
            self.channel.send(data)
        except Exception:
            return False
        return True


@dataclass
class Connection:
    """A connected peer connection and its two channels."""

    pc: Any
    control: ChannelTap
    landmarks: ChannelTap


def is_landmarks_channel(channel: Any) -> bool:
    return (channel.label == LANDMARKS_LABEL and not channel.ordered
            and channel.maxRetransmits == 0)


def is_control_channel(channel: Any) -> bool:
    return (channel.label == CONTROL_LABEL and channel.ordered
            and channel.maxRetransmits is None and channel.maxPacketLifeTime is None)


async def describe_locally(pc: Any, description: Any, ice: IceSettings) -> str:
    """Set the local description (gathering candidates) and return its SDP, filtered."""
    with host_candidates_limited_to(ice.host_addresses):
        await pc.setLocalDescription(description)
    return keep_candidates(pc.localDescription.sdp, ice.host_addresses)


async def wait_open(connection: Connection, timeout: float) -> None:
    waits = [connection.control.opened.wait(), connection.landmarks.opened.wait()]
    try:
        await asyncio.wait_for(asyncio.gather(*waits), timeout)
    except asyncio.TimeoutError:
        await connection.pc.close()
        raise UserError(f"could not connect to the peer within {timeout:.0f} s (no ICE route "
                        "between the two machines? try --ice-server)") from None


async def join_connection(url: str, token: str, signaling: SignalingSettings,
                          ice: IceSettings, settings: CallSettings) -> Connection:
    """Offer a connection to the call at ``url`` and wait for both channels to open."""
    from aiortc import RTCPeerConnection, RTCSessionDescription

    pc = RTCPeerConnection(rtc_configuration(ice))
    landmarks = ChannelTap(pc.createDataChannel(LANDMARKS_LABEL, ordered=False,
                                                maxRetransmits=0))
    control = ChannelTap(pc.createDataChannel(CONTROL_LABEL))
    try:
        offer_sdp = await describe_locally(pc, await pc.createOffer(), ice)
        answer = await send_offer(url, token, offer_sdp, signaling)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(
                keep_candidates(answer, ice.host_addresses), "answer"))
        except Exception as error:
            raise UserError(f"the call server's answer is unusable ({error})") from None
    except BaseException:
        await pc.close()
        raise
    connection = Connection(pc, control, landmarks)
    await wait_open(connection, settings.connect_timeout_s)
    return connection


class Answerer:
    """Answers the first authorised offer with a new peer connection (later ones are
    busy) and collects its two channels."""

    def __init__(self, ice: IceSettings) -> None:
        self.ice = ice
        self.pc: Any = None
        self.taps: dict[str, ChannelTap] = {}
        self.foreign_channels = 0
        self.abandoned = 0
        self.answered = asyncio.Event()

    async def __call__(self, offer_sdp: str) -> str:
        from aiortc import RTCPeerConnection, RTCSessionDescription

        if self.pc is not None:
            raise CallBusy
        self.pc = pc = RTCPeerConnection(rtc_configuration(self.ice))
        pc.on("datachannel", self.on_channel)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(
                keep_candidates(offer_sdp, self.ice.host_addresses), "offer"))
            answer = await describe_locally(pc, await pc.createAnswer(), self.ice)
        except Exception as error:
            self.pc = None
            await pc.close()
            raise OfferRefused(str(error) or type(error).__name__) from None
        self.answered.set()
        return answer

    def on_channel(self, channel: Any) -> None:
        label = (LANDMARKS_LABEL if is_landmarks_channel(channel) else
                 CONTROL_LABEL if is_control_channel(channel) else None)
        if label is None or label in self.taps:
            self.foreign_channels += 1
            channel.close()
            return
        self.taps[label] = ChannelTap(channel)

    async def connection(self, timeout: float) -> Connection:
        """The connection once both channels are open; ``UserError`` after ``timeout`` or
        when the attempt fails."""
        deadline = time.monotonic() + timeout
        while len(self.taps) < 2:
            if time.monotonic() > deadline or self.pc.connectionState in ("failed", "closed"):
                raise UserError(f"the peer did not connect within {timeout:.0f} s")
            await asyncio.sleep(0.05)
        connection = Connection(self.pc, self.taps[CONTROL_LABEL], self.taps[LANDMARKS_LABEL])
        await wait_open(connection, max(0.1, deadline - time.monotonic()))
        return connection

    async def free(self) -> None:
        """Close a failed or abandoned attempt, so that the next offer is answered."""
        pc, self.pc = self.pc, None
        self.taps.clear()
        self.answered.clear()
        self.abandoned += 1
        if pc is not None:
            await pc.close()


async def serve_connection(token: str, signaling: SignalingSettings, ice: IceSettings,
                           settings: CallSettings, announce: Callable[[str], None],
                           stop: asyncio.Event, wait_s: float = 0.0) -> Connection | None:
    """Listen for one peer; None if ``stop`` is set (or ``wait_s`` passes) before it comes.
    An answered offer whose peer never connects frees the call for the next offer."""
    answerer = Answerer(ice)
    server = SignalingServer(signaling, token, answerer)
    announce(await server.start())
    deadline = time.monotonic() + wait_s if wait_s else None
    try:
        while await first_offer(answerer, stop, deadline):
            try:
                return await answerer.connection(settings.connect_timeout_s)
            except UserError:
                await answerer.free()
        return None
    finally:
        await server.close()


async def first_offer(answerer: Answerer, stop: asyncio.Event, deadline: float | None) -> bool:
    """Whether an offer was answered before ``stop`` or the deadline."""
    waits = [asyncio.ensure_future(answerer.answered.wait()), asyncio.ensure_future(stop.wait())]
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    _, pending = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return answerer.answered.is_set() and not stop.is_set()


# ---------------------------------------------------------------------------------------
# The call itself


@dataclass
class LocalSide:
    """What this side brings: its avatar (and the bundle's path, for sharing), the basis it
    encodes with, its landmark source (None: watch only) and how it renders the peer."""

    avatar: Avatar
    avatar_path: Path
    info: AvatarInfo
    basis: ShapeBasis
    source: LandmarkSource | None
    renderer_factory: RendererFactory


class CallFailed(Exception):
    """The call cannot go on; the message says why, on one line."""


@dataclass
class SendCounts:
    packets: int = 0
    bytes: int = 0
    key_requests: int = 0


@dataclass(frozen=True)
class CallReport:
    """How a call went. ``seconds``: from the moment both sides were ready; ``sent`` and
    ``received``: the landmarks channel (payload bytes); ``playout``: frame slots and what
    the renderer did with them; ``control``: bad control messages by reason."""

    ended_by: str
    failed: bool
    seconds: float
    sent: dict
    received: dict
    playout: dict
    control: dict

    def to_dict(self) -> dict:
        return dict(vars(self))

    def lines(self) -> list[str]:
        sent, received, playout = self.sent, self.received, self.playout
        lines = [f"call ended after {self.seconds:.1f} s: {self.ended_by}"]
        if sent["packets_encoded"]:
            injected = (f" (injected: {sent['injected_drops']} dropped, "
                        f"{sent['injected_reorders']} reordered)"
                        if sent["injected_drops"] or sent["injected_reorders"] else "")
            lines.append(f"sent: {sent['packets']} packets, {sent['kbit_per_s']:.1f} kbit/s on "
                         f"the landmarks channel{injected}")
        if received:
            lines.append(
                f"received: {received['packets']} packets, {received['kbit_per_s']:.1f} "
                f"kbit/s, {received['decoded']} decoded, loss {received['loss']:.1%}, "
                f"{received['bad']} bad; concealed: {received['interpolated']} interpolated, "
                f"{received['held']} held, {received['late']} late")
        if playout:
            lines.append(f"rendered {playout['rendered']} of {playout['slots']} frame slots "
                         f"({playout['rendered_fraction']:.1%}), {playout['skipped']} skipped, "
                         f"{playout['output']} sent to the sinks"
                         + (f", {playout['rejected']} unusable landmark sets dropped"
                            if playout.get("rejected") else ""))
        if self.control.get("bad"):
            lines.append(f"bad control messages: {self.control['bad']}")
        return lines


class CallSession:
    """One call on an open connection, from hello to bye."""

    def __init__(self, connection: Connection, local: LocalSide, settings: CallSettings,
                 stop: asyncio.Event, log: Callable[[str], None]) -> None:
        self.connection = connection
        self.local = local
        self.settings = settings
        self.stop = stop
        self.log = log
        self.ended = asyncio.Event()
        self.end_reason = ""
        self.failed = False
        self.control_inbox = ControlInbox()
        self.peer_hello: asyncio.Future[Hello] = asyncio.get_running_loop().create_future()
        self.peer_ready = asyncio.Event()
        self.peer_bye: Bye | None = None
        self.incoming: IncomingAvatar | None = None
        self.incoming_done: asyncio.Future[None] | None = None
        self.sending_avatar = False
        self.landmarks_in: LandmarkInbox | None = None
        self.renderer: Renderer | None = None
        self.sender: LandmarkSender | None = None
        self.injector = FaultInjector(settings.faults)
        self.sent = SendCounts()
        self.playout = PlayoutCounts()
        self.last_heard = time.monotonic()
        self.last_key_request = 0.0
        self.media_started: float | None = None
        self.media_ended: float | None = None
        self.tasks: list[asyncio.Task] = []
        self.buffer_low = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------

    async def run(self) -> CallReport:
        self.attach()
        try:
            await self.until_ended(self.setup(), self.settings.setup_timeout_s,
                                   "setting up the call took too long")
            if not self.ended.is_set():
                await self.media()
        except CallFailed as error:
            self.end(str(error), failed=True)
        finally:
            await self.shutdown()
        return self.report()

    def attach(self) -> None:
        pc = self.connection.pc
        pc.on("connectionstatechange", self.on_connection_state)
        self.connection.control.channel.on("bufferedamountlow", self.buffer_low.set)
        self.connection.control.set_handler(self.on_control)
        self.connection.landmarks.set_handler(self.on_landmarks)
        self.spawn(self.watch())

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        self.tasks.append(asyncio.ensure_future(coroutine))

    def end(self, reason: str, failed: bool = False) -> None:
        if not self.ended.is_set():
            self.end_reason, self.failed = reason, failed
            self.ended.set()

    async def until_ended(self, awaitable: Any, timeout: float, message: str) -> Any:
        """Await ``awaitable`` unless the call ends first (then None) or ``timeout`` passes
        (then ``CallFailed(message)``)."""
        task = asyncio.ensure_future(awaitable)
        ended = asyncio.ensure_future(self.ended.wait())
        try:
            done, _ = await asyncio.wait([task, ended], timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        if not done:
            raise CallFailed(message)
        return None

    async def watch(self) -> None:
        """Pings the peer, and ends the call on silence, on request or at ``max_seconds``."""
        settings = self.settings
        last_ping = 0.0
        while not self.ended.is_set():
            now = time.monotonic()
            if now - last_ping >= settings.ping_interval_s:
                self.send(Ping())
                last_ping = now
            await asyncio.sleep(min(settings.ping_interval_s, WATCH_INTERVAL_S))
            now = time.monotonic()
            if now - self.last_heard > settings.peer_timeout_s:
                self.end(f"the peer went silent for {settings.peer_timeout_s:.0f} s "
                         "(gone or disconnected)")
            elif self.stop.is_set():
                self.end("hung up here")
            elif self.connection.control.closed.is_set():
                self.end("the peer closed the control channel")
            elif self.renderer is not None and (stopped := self.renderer.stopped) is not None:
                self.end(stopped.reason, stopped.failed)
            elif (settings.max_seconds and self.media_started is not None
                  and now - self.media_started >= settings.max_seconds):
                self.end(f"--max-seconds {settings.max_seconds:g} reached")

    def on_connection_state(self) -> None:
        if self.connection.pc.connectionState in ("failed", "closed"):
            self.end(f"the connection {self.connection.pc.connectionState}")

    # -- setup: hello, avatars, ready -----------------------------------------------

    async def setup(self) -> None:
        self.send(self.hello())
        try:
            hello = await asyncio.wait_for(asyncio.shield(self.peer_hello),
                                           self.settings.hello_timeout_s)
        except asyncio.TimeoutError:
            raise CallFailed("the peer sent no hello: is it a vcam call?") from None
        self.check_hello(hello)
        avatar = await self.peer_avatar(hello) if hello.sends_landmarks else None
        if avatar is not None:
            await self.start_renderer(avatar, hello)
        self.send(Ready())
        if self.local.source is not None:
            await self.peer_ready.wait()

    def hello(self) -> Hello:
        source = self.local.source
        return Hello(PROTOCOL_VERSION, __version__, CAPABILITIES, MAGIC_VERSION,
                     self.local.basis.fingerprint, self.local.info, self.settings.share_avatar,
                     source is not None, float(source.fps) if source is not None else 25.0)

    def check_hello(self, hello: Hello) -> None:
        if hello.version != PROTOCOL_VERSION or hello.codec != MAGIC_VERSION:
            raise CallFailed(f"the peer runs vcam {hello.app} (call protocol {hello.version}, "
                             f"codec {hello.codec:#x}); this vcam speaks protocol "
                             f"{PROTOCOL_VERSION}, codec {MAGIC_VERSION:#x}: update one side")
        if hello.shape_basis != self.local.basis.fingerprint:
            raise CallFailed("the peer uses another shape basis (fingerprint "
                             f"{hello.shape_basis[:12]}, here {self.local.basis.fingerprint[:12]})"
                             ": pass the same --shape-basis on both sides")

    async def peer_avatar(self, hello: Hello) -> PeerAvatar | None:
        """The peer's avatar (None: it cannot be shown). What the peer sees depends on its
        hello only, never on whether this side holds the avatar it names: a shared avatar
        is always transferred, and without sharing the call goes on either way."""
        if hello.shares_avatar:
            return await self.receive_avatar(hello.avatar)
        path = await asyncio.to_thread(local_copy, hello.avatar)
        try:
            if path is not None:
                self.log(f"rendering the peer as {hello.avatar.name!r} from {path}")
                return PeerAvatar(await asyncio.to_thread(load_avatar, path), path)
        except UserError as error:
            self.log(f"the peer is not shown: {error}")
            return None
        self.log(f"the peer is not shown: you have no copy of its avatar "
                 f"{hello.avatar.name!r} and it does not share it (it can pass --share-avatar)")
        return None

    async def receive_avatar(self, info: AvatarInfo) -> PeerAvatar:
        try:
            check_declared_size(info, self.settings.exchange)
        except TransferRefused as error:
            self.send(AvatarResult(False, str(error)))
            raise CallFailed(str(error)) from None
        self.incoming = incoming = IncomingAvatar(info, self.settings.exchange)
        self.incoming_done = asyncio.get_running_loop().create_future()
        self.log(f"receiving the peer's avatar {info.name!r} ({info.size / 1e6:.1f} MB)")
        self.send(AvatarRequest())
        await self.incoming_done
        try:
            data = await asyncio.to_thread(incoming.verified_bytes)
            avatar = await asyncio.to_thread(load_received, data, info,
                                             self.settings.exchange.keep)
        except TransferRefused as error:
            self.send(AvatarResult(False, str(error)))
            raise CallFailed(str(error)) from None
        self.send(AvatarResult(True))
        # Kept among the user's avatars (--keep, unless one of that name was there): the
        # bundle on disk, whose compiled forms may be cached like any of the user's.
        kept = (await asyncio.to_thread(local_copy, info)
                if self.settings.exchange.keep else None)
        return PeerAvatar(avatar, kept)

    async def start_renderer(self, avatar: PeerAvatar, hello: Hello) -> None:
        self.landmarks_in = LandmarkInbox(self.local.basis, hello.avatar.image_size,
                                          self.settings.jitter, self.want_key)
        renderer = self.local.renderer_factory(avatar, hello.fps)
        try:
            await asyncio.to_thread(renderer.start)
        except BaseException as error:  # failed, or the call ended while it was starting
            await asyncio.to_thread(renderer.close)
            if isinstance(error, Exception):
                raise CallFailed(f"cannot render the peer's avatar: {error}") from None
            raise
        self.renderer = renderer

    # -- media ----------------------------------------------------------------------

    async def media(self) -> None:
        self.media_started = time.monotonic()
        if self.renderer is not None and self.landmarks_in is not None:
            self.spawn(playout_loop(self.landmarks_in, self.renderer,
                                    self.peer_hello.result().fps, self.ended, self.playout))
        if self.local.source is not None:
            encoder = Encoder(self.local.basis, self.local.info.image_size, self.settings.codec)
            self.sender = LandmarkSender(self.local.source, encoder, self.deliver,
                                         asyncio.get_running_loop(), self.on_source_end)
            self.sender.start()
        self.log("call running")
        await self.ended.wait()

    async def deliver(self, packet: bytes) -> None:
        for data in self.injector.process(packet):
            self.send_packet(data)

    def send_packet(self, data: bytes) -> None:
        if self.connection.landmarks.send(data):
            self.sent.packets += 1
            self.sent.bytes += len(data)

    def on_source_end(self) -> None:
        error = self.sender.error if self.sender is not None else None
        if not self.ended.is_set() and not (self.sender and self.sender.stop.is_set()):
            self.end(f"the landmark source failed ({error})" if error
                     else "the local video ended", failed=error is not None)

    def want_key(self) -> None:
        now = time.monotonic()
        if now - self.last_key_request >= self.settings.key_request_interval_s:
            self.last_key_request = now
            self.send(KeyRequest())

    # -- receiving ------------------------------------------------------------------

    def on_landmarks(self, data: object) -> None:
        self.last_heard = time.monotonic()
        if self.landmarks_in is not None:
            self.landmarks_in.receive(data)

    def on_control(self, data: object) -> None:
        self.last_heard = time.monotonic()
        message = self.control_inbox.receive(data)
        if message is None:
            return
        try:
            self.dispatch(message)
        except Exception:
            self.control_inbox.bad["internal"] += 1

    def dispatch(self, message: ControlMessage | Chunk) -> None:
        handlers: dict[type, Callable[[Any], None]] = {
            Hello: self.on_hello, AvatarRequest: self.on_avatar_request,
            AvatarOffer: self.on_avatar_offer, Chunk: self.on_chunk,
            AvatarResult: self.on_avatar_result, Ready: lambda _: self.peer_ready.set(),
            KeyRequest: self.on_key_request, Ping: lambda _: None, Bye: self.on_bye,
        }
        handlers[type(message)](message)

    def unexpected(self, what: str) -> None:
        self.control_inbox.bad[f"unexpected_{what}"] += 1

    def on_hello(self, hello: Hello) -> None:
        if self.peer_hello.done():
            self.unexpected("hello")
        else:
            self.peer_hello.set_result(hello)

    def on_key_request(self, _: KeyRequest) -> None:
        self.sent.key_requests += 1
        if self.sender is not None:
            self.sender.request_key()

    def on_bye(self, bye: Bye) -> None:
        self.peer_bye = bye
        self.end(f"the peer ended the call ({bye.reason})")

    def on_avatar_result(self, result: AvatarResult) -> None:
        if not result.ok:
            self.end(f"the peer refused this side's avatar: {result.reason}", failed=True)

    def on_avatar_request(self, _: AvatarRequest) -> None:
        if not self.settings.share_avatar or self.sending_avatar:
            self.unexpected("avatar_request")
            return
        self.sending_avatar = True
        self.spawn(self.send_avatar())

    def on_avatar_offer(self, offer: AvatarOffer) -> None:
        if self.incoming is None or self.incoming_done is None or self.incoming_done.done():
            self.unexpected("avatar_offer")
            return
        try:
            self.incoming.offer(offer)
        except TransferRefused as error:
            self.refuse_transfer(str(error))

    def on_chunk(self, chunk: Chunk) -> None:
        if self.incoming is None or self.incoming_done is None or self.incoming_done.done():
            self.unexpected("chunk")
            return
        try:
            if self.incoming.chunk(chunk):
                self.incoming_done.set_result(None)
        except TransferRefused as error:
            self.refuse_transfer(str(error))

    def refuse_transfer(self, reason: str) -> None:
        self.incoming = None
        self.send(AvatarResult(False, reason))
        self.end(f"refused the peer's avatar: {reason}", failed=True)

    # -- sending --------------------------------------------------------------------

    def send(self, message: ControlMessage) -> bool:
        return self.connection.control.send(encode_message(message))

    async def send_avatar(self) -> None:
        data, sha256 = await asyncio.to_thread(read_with_digest, self.local.avatar_path)
        if sha256 != self.local.info.sha256:
            self.end("this side's avatar file changed during the call", failed=True)
            return
        self.log(f"sending this side's avatar ({len(data) / 1e6:.1f} MB)")
        self.send(AvatarOffer(len(data), self.local.info.sha256))
        channel = self.connection.control.channel
        high_water = self.settings.exchange.high_water_bytes
        channel.bufferedAmountLowThreshold = high_water // 2
        for message in chunk_messages(data):
            while channel.bufferedAmount > high_water and not self.ended.is_set():
                self.buffer_low.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.buffer_low.wait(), 0.5)
            if self.ended.is_set() or not self.connection.control.send(message):
                return

    # -- the end --------------------------------------------------------------------

    async def shutdown(self) -> None:
        self.media_ended = time.monotonic()
        for task in self.tasks:
            task.cancel()
        if self.sender is not None:
            await asyncio.to_thread(self.sender.close)
            for data in self.injector.flush():
                self.send_packet(data)
        elif self.local.source is not None:  # the call ended before sending: release it here
            await asyncio.to_thread(self.local.source.close)
        await self.say_bye()
        if self.renderer is not None:
            await asyncio.to_thread(self.renderer.close)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.connection.pc.close(), 5.0)

    async def say_bye(self) -> None:
        encoded = self.sender.encoded if self.sender is not None else 0
        reason = self.end_reason if self.failed else "hung up"
        if self.send(Bye(reason[:200], encoded, self.sent.packets, self.sent.bytes)):
            deadline = time.monotonic() + 1.0
            while (self.connection.control.channel.bufferedAmount
                   and time.monotonic() < deadline):
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.05)

    def report(self) -> CallReport:
        started = self.media_started
        seconds = (self.media_ended or time.monotonic()) - started if started else 0.0
        return CallReport(self.end_reason, self.failed, seconds, self.sent_report(seconds),
                          self.received_report(seconds), self.playout_report(),
                          {"received": self.control_inbox.received,
                           "bad": dict(self.control_inbox.bad)})

    def sent_report(self, seconds: float) -> dict:
        return {"packets_encoded": self.sender.encoded if self.sender else 0,
                "packets": self.sent.packets, "bytes": self.sent.bytes,
                "kbit_per_s": kbit_per_second(self.sent.bytes, seconds),
                "injected_drops": self.injector.dropped,
                "injected_reorders": self.injector.reordered,
                "key_requests_received": self.sent.key_requests}

    def received_report(self, seconds: float) -> dict:
        inbox = self.landmarks_in
        if inbox is None:
            return {}
        decoder, jitter = inbox.decoder.stats, inbox.jitter.stats
        expected = self.expected_packets(inbox)
        return {"packets": decoder.received, "bytes": inbox.bytes,
                "kbit_per_s": kbit_per_second(inbox.bytes, seconds),
                "decoded": decoder.decoded, "bad": decoder.bad, "stale": decoder.stale,
                "duplicate": decoder.duplicate, "missing_key": decoder.missing_key,
                "bad_reasons": decoder.bad_reasons, "errors": inbox.errors,
                "peer_encoded": expected, "loss": loss_fraction(decoder.received, expected),
                "normal": jitter.normal, "interpolated": jitter.interpolated,
                "held": jitter.held, "late": jitter.late}

    def expected_packets(self, inbox: LandmarkInbox) -> int:
        """The peer's count from its bye, else the span of sequence numbers seen."""
        if self.peer_bye is not None:
            return self.peer_bye.packets_encoded
        low_high = inbox.sequences
        return low_high[1] - low_high[0] + 1 if low_high else 0

    def playout_report(self) -> dict:
        if self.renderer is None:
            return {}
        counts = self.renderer.counts
        rendered = counts.get("rendered", 0)
        return {"slots": self.playout.slots, "played": self.playout.played,
                "missed": self.playout.missed, "rendered": rendered,
                "output": counts.get("output", rendered), "skipped": counts.get("skipped", 0),
                "rejected": counts.get("rejected", 0),
                "rendered_fraction": rendered / self.playout.slots if self.playout.slots
                else 0.0}


def read_with_digest(path: Path) -> tuple[bytes, str]:
    """A file's bytes and their SHA-256 (blocking: run it in a thread)."""
    data = path.read_bytes()
    return data, hashlib.sha256(data).hexdigest()


def kbit_per_second(byte_count: int, seconds: float) -> float:
    return byte_count * 8 / 1000 / seconds if seconds > 0 else 0.0


def loss_fraction(received: int, expected: int) -> float:
    return max(0.0, 1 - received / expected) if expected > 0 else 0.0


# ---------------------------------------------------------------------------------------
# Entry points


async def serve_call(local: LocalSide, settings: CallSettings, signaling: SignalingSettings,
                     ice: IceSettings, token: str, announce: Callable[[str], None],
                     stop: asyncio.Event, log: Callable[[str], None],
                     wait_s: float = 0.0) -> CallReport | None:
    """Wait for one peer on the signaling server, then run the call with it; None if
    nobody came before ``stop`` (or ``wait_s``)."""
    connection = await serve_connection(token, signaling, ice, settings, announce, stop, wait_s)
    if connection is None:
        return None
    log("peer connected")
    return await CallSession(connection, local, settings, stop, log).run()


async def join_call(local: LocalSide, settings: CallSettings, url: str, token: str,
                    signaling: SignalingSettings, ice: IceSettings, stop: asyncio.Event,
                    log: Callable[[str], None]) -> CallReport:
    """Join the call at ``url`` and run it."""
    connection = await join_connection(url, token, signaling, ice, settings)
    log("connected")
    return await CallSession(connection, local, settings, stop, log).run()
