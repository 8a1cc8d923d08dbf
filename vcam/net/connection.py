"""The WebRTC side of a call: ICE settings, the peer connection and its two data channels.

``landmarks`` is unordered with no retransmits (codec packets: a lost one is concealed,
never resent); ``control`` is reliable (hello, the avatar exchange, key requests, pings and
bye; see ``vcam.net.control``). ``join_connection`` offers a connection through the
signaling server (``vcam.net.signaling``), ``serve_connection`` answers the first one.

Loopback calls: aioice, aiortc's ICE, never offers 127.0.0.1 as a candidate and has no
setting for it. ``IceSettings.host_addresses`` limits the host candidates to the addresses
given (e.g. ``("127.0.0.1",)`` when both peers are on one machine) by standing in for
``aioice.ice.get_host_addresses`` only while candidates are gathered, and drops every other
candidate from both session descriptions, so no packet goes anywhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from vcam.errors import UserError
from vcam.net.acknowledgements import reduce_acknowledgements
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


@dataclass(frozen=True)
class IceSettings:
    """STUN/TURN server URLs (none by default), TURN credentials, and the addresses host
    candidates are limited to (None: every interface, aioice's default)."""

    servers: tuple[str, ...] = ()
    username: str | None = None
    credential: str | None = None
    host_addresses: tuple[str, ...] | None = None



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
    audio: Any = None  # the voice's transceiver (vcam.net.voice.AudioLink), if any
    acknowledgements: Any = None  # vcam.net.acknowledgements.DelayedAcknowledgements


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
    """Wait for both channels; then the association's acknowledgements are thinned
    (``vcam.net.acknowledgements``)."""
    waits = [connection.control.opened.wait(), connection.landmarks.opened.wait()]
    try:
        await asyncio.wait_for(asyncio.gather(*waits), timeout)
    except asyncio.TimeoutError:
        await connection.pc.close()
        raise UserError(f"could not connect to the peer within {timeout:.0f} s (no ICE route "
                        "between the two machines? try --ice-server)") from None
    connection.acknowledgements = reduce_acknowledgements(connection.pc)


async def join_connection(url: str, token: str, signaling: SignalingSettings,
                          ice: IceSettings, connect_timeout_s: float,
                          audio: Any = None) -> Connection:
    """Offer a connection to the call at ``url`` and wait for both channels to open;
    ``audio``: the voice's ``AudioLink`` (None: data channels only)."""
    from aiortc import RTCPeerConnection, RTCSessionDescription

    pc = RTCPeerConnection(rtc_configuration(ice))
    landmarks = ChannelTap(pc.createDataChannel(LANDMARKS_LABEL, ordered=False,
                                                maxRetransmits=0))
    control = ChannelTap(pc.createDataChannel(CONTROL_LABEL))
    if audio is not None:
        audio.offer(pc)
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
    connection = Connection(pc, control, landmarks, audio)
    await wait_open(connection, connect_timeout_s)
    return connection


class Answerer:
    """Answers the first authorised offer with a new peer connection (later ones are
    busy) and collects its two channels."""

    def __init__(self, ice: IceSettings, audio: Any = None) -> None:
        self.ice = ice
        self.audio = audio
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
        if self.audio is not None:
            self.audio.listen(pc)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(
                keep_candidates(offer_sdp, self.ice.host_addresses), "offer"))
            if self.audio is not None:
                self.audio.answer(pc)
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
        connection = Connection(self.pc, self.taps[CONTROL_LABEL], self.taps[LANDMARKS_LABEL],
                                self.audio)
        await wait_open(connection, max(0.1, deadline - time.monotonic()))
        return connection

    async def free(self) -> None:
        """Close a failed or abandoned attempt, so that the next offer is answered."""
        pc, self.pc = self.pc, None
        self.taps.clear()
        self.answered.clear()
        self.abandoned += 1
        if self.audio is not None:  # the next attempt's voice track, not this one's
            self.audio.remote_track = None
        if pc is not None:
            await pc.close()


async def serve_connection(token: str, signaling: SignalingSettings, ice: IceSettings,
                           connect_timeout_s: float, announce: Callable[[str], None],
                           stop: asyncio.Event, wait_s: float = 0.0,
                           audio: Any = None) -> Connection | None:
    """Listen for one peer; None if ``stop`` is set (or ``wait_s`` passes) before it comes.
    An answered offer whose peer never connects frees the call for the next offer."""
    answerer = Answerer(ice, audio)
    server = SignalingServer(signaling, token, answerer)
    announce(await server.start())
    deadline = time.monotonic() + wait_s if wait_s else None
    try:
        while await first_offer(answerer, stop, deadline):
            try:
                return await answerer.connection(connect_timeout_s)
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
