"""A landmark-only call: two peers, each sending its own face landmarks and rendering the
other's avatar.

Network work lives in one asyncio loop: signaling (``vcam.net.signaling``), the WebRTC peer
connection (aiortc) and its two data channels, ``landmarks`` (unordered, no retransmits:
packets of several frames, ``vcam.net.packing``; a lost one is concealed, never resent) and
``control`` (reliable: hello, the avatar exchange, key requests, pings and bye; see
``vcam.net.control``). Blocking work runs in threads: the landmark source (video decoding and
face tracking) encodes packets and hands them to the loop with ``run_coroutine_threadsafe``;
the renderer runs the generator on the latest landmarks handed to it (``vcam.net.media``
builds both from the real-time runtime's stages). A playout loop ticks at the sender's frame
rate and takes landmarks from the jitter buffer, so the renderer sees a steady stream
whatever the network did. A call ends on bye, on the peer's silence (no message for
``peer_timeout_s``), on a lost connection or closed channel, at ``max_seconds``, when the
local video ends, when the renderer stops by itself (its preview window was closed), or on
request (Ctrl-C); either way a bye goes out when it can and a report of the call comes back.
The connection and its channels are ``vcam.net.connection``'s, the send path
``vcam.net.send``'s, the receive path and the renderer protocol ``vcam.net.playout``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vcam import __version__
from vcam.avatar import Avatar, load_avatar
from vcam.errors import UserError
from vcam.landmarks.shape_basis import ShapeBasis
from vcam.net.audio import AudioOutput, VoiceSource
from vcam.net.avatar_exchange import (
    ExchangeSettings,
    IncomingAvatar,
    TransferRefused,
    check_declared_size,
    chunk_messages,
    load_received,
    local_copy,
    read_with_digest,
)
from vcam.net.connection import Connection, IceSettings, join_connection, serve_connection
from vcam.net.control import (
    CAPABILITIES,
    PROTOCOL_VERSION,
    AudioClock,
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
from vcam.net.jitter import JitterSettings
from vcam.net.packing import PACKED_MAGIC_VERSION, CodecSettings, PackedEncoder, PackingSettings
from vcam.net.playout import (
    LandmarkInbox,
    PeerAvatar,
    PlayoutCounts,
    Renderer,
    RendererFactory,
    playout_loop,
)
from vcam.net.report import CallReport, SendCounts, kbit_per_second, loss_fraction
from vcam.net.send import FaultInjector, FaultSettings, LandmarkSender, LandmarkSource
from vcam.net.signaling import SignalingSettings
from vcam.net.voice import AudioLink, VoiceCall
from vcam.net.wire import WireCounts, wire_counts, wire_report

# How often the call checks for silence, Ctrl-C and the end of --max-seconds.
WATCH_INTERVAL_S = 0.1


@dataclass(frozen=True)
class CallSettings:
    """Everything about a call but who and where: codec, jitter buffer, avatar exchange,
    injected faults, duration (``max_seconds`` 0: no limit) and the timeouts."""

    codec: CodecSettings = field(default_factory=CodecSettings)
    packing: PackingSettings = field(default_factory=PackingSettings)
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
    voice: VoiceSource | None = None
    # The peer's voice goes to these (besides the renderer's recordings): the speakers.
    audio_outputs: Callable[[], list[AudioOutput]] = list


class CallFailed(Exception):
    """The call cannot go on; the message says why, on one line."""


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
        self.voice = VoiceCall(connection.audio, settings.jitter.target_delay_ms,
                               lambda origin_us: self.send(AudioClock(origin_us)))
        self.wire_start = WireCounts()
        self.wire_end = WireCounts()

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
        return Hello(PROTOCOL_VERSION, __version__, CAPABILITIES, PACKED_MAGIC_VERSION,
                     self.local.basis.fingerprint, self.local.info, self.settings.share_avatar,
                     source is not None, float(source.fps) if source is not None else 25.0)

    def check_hello(self, hello: Hello) -> None:
        if hello.version != PROTOCOL_VERSION or hello.codec != PACKED_MAGIC_VERSION:
            raise CallFailed(f"the peer runs vcam {hello.app} (call protocol {hello.version}, "
                             f"codec {hello.codec:#x}); this vcam speaks protocol "
                             f"{PROTOCOL_VERSION}, codec {PACKED_MAGIC_VERSION:#x}: "
                             "update one side")
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
        self.wire_start = await wire_counts(self.connection.pc)
        loop = asyncio.get_running_loop()
        if self.renderer is not None and self.landmarks_in is not None:
            self.spawn(playout_loop(self.landmarks_in, self.renderer,
                                    self.peer_hello.result().fps, self.ended, self.playout))
        if self.voice.peer_sends:
            self.voice.receive(self.landmarks_in.jitter if self.landmarks_in else None,
                               getattr(self.renderer, "audio_outputs", []),
                               self.local.audio_outputs)
        source = self.voice.landmark_source(self.local.source, loop)
        if source is not None:
            encoder = PackedEncoder(self.local.basis, self.local.info.image_size,
                                    self.settings.codec, self.settings.packing)
            self.sender = LandmarkSender(source, encoder, self.deliver, loop, self.on_source_end)
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
            AudioClock: lambda clock: self.voice.on_peer_clock(clock.origin_us),
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
        await self.voice.close()
        await self.say_bye()
        self.wire_end = await wire_counts(self.connection.pc)
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
                           "bad": dict(self.control_inbox.bad)},
                          self.wire_report(seconds), self.voice.report(seconds))

    def wire_report(self, seconds: float) -> dict:
        inbox = self.landmarks_in
        received = (inbox.bytes, inbox.packets) if inbox else (0, 0)
        return wire_report(self.wire_end - self.wire_start, seconds,
                           (self.sent.bytes, self.sent.packets), received)

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
        return {"packets": inbox.packets, "frames": decoder.received, "bytes": inbox.bytes,
                "kbit_per_s": kbit_per_second(inbox.bytes, seconds),
                "decoded": decoder.decoded, "bad": decoder.bad, "stale": decoder.stale,
                "duplicate": decoder.duplicate, "missing_key": decoder.missing_key,
                "bad_reasons": decoder.bad_reasons, "errors": inbox.errors,
                "peer_encoded": expected, "loss": loss_fraction(decoder.received, expected),
                "normal": jitter.normal, "interpolated": jitter.interpolated,
                "held": jitter.held, "late": jitter.late, "delay_ms": inbox.jitter.delay_us / 1e3}

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


# ---------------------------------------------------------------------------------------
# Entry points


async def serve_call(local: LocalSide, settings: CallSettings, signaling: SignalingSettings,
                     ice: IceSettings, token: str, announce: Callable[[str], None],
                     stop: asyncio.Event, log: Callable[[str], None],
                     wait_s: float = 0.0) -> CallReport | None:
    """Wait for one peer on the signaling server, then run the call with it; None if
    nobody came before ``stop`` (or ``wait_s``)."""
    connection = await serve_connection(token, signaling, ice, settings.connect_timeout_s,
                                        announce, stop, wait_s, AudioLink(local.voice))
    if connection is None:
        return None
    log("peer connected")
    return await CallSession(connection, local, settings, stop, log).run()


async def join_call(local: LocalSide, settings: CallSettings, url: str, token: str,
                    signaling: SignalingSettings, ice: IceSettings, stop: asyncio.Event,
                    log: Callable[[str], None]) -> CallReport:
    """Join the call at ``url`` and run it."""
    connection = await join_connection(url, token, signaling, ice,
                                      settings.connect_timeout_s, AudioLink(local.voice))
    log("connected")
    return await CallSession(connection, local, settings, stop, log).run()
