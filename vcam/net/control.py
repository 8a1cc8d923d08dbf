"""The control channel of a landmark-only call: small JSON messages and avatar chunks.

The control channel is a reliable, ordered WebRTC data channel. Text messages are JSON
objects of at most ``MAX_CONTROL_BYTES`` UTF-8 bytes with a ``type`` field:

``hello``
    ``protocol`` ("vcam-call"), ``version`` (int), ``app`` (vcam's version), ``capabilities``
    (list of strings), ``codec`` (the landmark packet format), ``shape_basis`` (SHA-256 hex
    fingerprint of the basis this side encodes with), ``avatar`` (``name``, ``sha256`` of the
    bundle file, ``size`` in bytes, ``image_size`` of its crops), ``shares_avatar`` (bool: the
    bundle may be asked for), ``sends_landmarks`` (bool) and ``fps`` (the sender's rate).
``avatar_request``
    Asks the peer for its bundle (only after its hello said it shares it).
``avatar_offer``
    ``size`` and ``sha256`` of the bundle that follows as binary chunks.
``avatar_result``
    ``ok`` (bool) and ``reason``: the receiver's verdict on a transfer.
``ready``
    This side can render the peer: landmarks may flow.
``key_request``
    The receiver lost a key packet: the next landmark packet should be a key.
``ping``
    Keep-alive, about once a second; silence means the peer is gone.
``audio_clock``
    ``origin_us``: when the first sample of this side's voice was captured (its monotonic
    microseconds, the clock of its landmark packets' capture times).
``bye``
    ``reason`` and the sender's counters (``packets_encoded``, ``packets_sent``,
    ``bytes_sent``) so the peer can report loss.

Binary messages are avatar chunks: ``CHUNK_MAGIC`` (4 bytes), the offset of the chunk in the
bundle (uint32, big-endian), then at most ``CHUNK_BYTES - 8`` bytes of the bundle.

Everything from the peer is hostile: ``parse_message`` checks every field's type and bounds
and raises ``BadMessage`` with a reason; ``ControlInbox.receive`` never raises and counts
what it drops.
"""

from __future__ import annotations

import json
import re
import struct
from collections import Counter
from dataclasses import dataclass
from typing import Any

PROTOCOL = "vcam-call"
PROTOCOL_VERSION = 1
MAX_CONTROL_BYTES = 4096
CHUNK_BYTES = 16 * 1024
CHUNK_MAGIC = b"VCAC"
CHUNK_HEADER = struct.Struct(">4sI")
CHUNK_PAYLOAD_BYTES = CHUNK_BYTES - CHUNK_HEADER.size
MAX_TEXT = 200
MAX_NAME = 64
MAX_CAPABILITIES = 16
MAX_COUNTER = (1 << 53) - 1
MAX_BUNDLE_BYTES = (1 << 32) - 1
# The frame rates a hello may announce: a call runs at MIN_FPS to MAX_FPS frames/s.
MIN_FPS, MAX_FPS = 1.0, 120.0
CAPABILITIES = ("landmarks/1", "avatar-transfer/1", "key-request/1", "audio/1")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
NAME_CHARACTERS = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


class BadMessage(Exception):
    """A message that cannot be used; ``reason`` is the counter it goes to."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class AvatarInfo:
    """Which avatar a side shows: its name, the SHA-256 and size of its bundle file, and the
    size of its crops (the coordinates its landmarks are sent in)."""

    name: str
    sha256: str
    size: int
    image_size: int


@dataclass(frozen=True)
class Hello:
    """The first message each side sends."""

    version: int
    app: str
    capabilities: tuple[str, ...]
    codec: int
    shape_basis: str
    avatar: AvatarInfo
    shares_avatar: bool
    sends_landmarks: bool
    fps: float
    protocol: str = PROTOCOL


@dataclass(frozen=True)
class AvatarRequest:
    """Please send your avatar bundle."""


@dataclass(frozen=True)
class AvatarOffer:
    """A bundle of ``size`` bytes with this SHA-256 follows as chunks."""

    size: int
    sha256: str


@dataclass(frozen=True)
class AvatarResult:
    """The receiver's verdict on a transfer."""

    ok: bool
    reason: str = ""


@dataclass(frozen=True)
class Ready:
    """This side can render the peer's avatar."""


@dataclass(frozen=True)
class KeyRequest:
    """Send a key packet next."""


@dataclass(frozen=True)
class Ping:
    """Keep-alive."""


@dataclass(frozen=True)
class AudioClock:
    """When this side's voice began, on its capture clock (µs)."""

    origin_us: int


@dataclass(frozen=True)
class Bye:
    """The call ends; the sender's landmark counters come along."""

    reason: str
    packets_encoded: int = 0
    packets_sent: int = 0
    bytes_sent: int = 0


@dataclass(frozen=True)
class Chunk:
    """A piece of an avatar bundle at ``offset``."""

    offset: int
    data: bytes


ControlMessage = (Hello | AvatarRequest | AvatarOffer | AvatarResult | Ready | KeyRequest | Ping
                  | Bye | AudioClock)
MESSAGE_TYPES: dict[type, str] = {
    Hello: "hello", AvatarRequest: "avatar_request", AvatarOffer: "avatar_offer",
    AvatarResult: "avatar_result", Ready: "ready", KeyRequest: "key_request", Ping: "ping",
    Bye: "bye", AudioClock: "audio_clock",
}


def encode_message(message: ControlMessage) -> str:
    """A message as compact JSON text; refuses one over ``MAX_CONTROL_BYTES``."""
    fields = message_fields(message)
    text = json.dumps({"type": MESSAGE_TYPES[type(message)], **fields}, separators=(",", ":"))
    if len(text.encode("utf-8")) > MAX_CONTROL_BYTES:
        raise ValueError(f"a control message would exceed {MAX_CONTROL_BYTES} bytes")
    return text


def message_fields(message: ControlMessage) -> dict[str, Any]:
    fields = dict(vars(message))
    if isinstance(message, Hello):
        fields["avatar"] = dict(vars(message.avatar))
        fields["capabilities"] = list(message.capabilities)
    return fields


def encode_chunk(offset: int, data: bytes) -> bytes:
    """One binary chunk message: magic, offset, bytes."""
    if len(data) > CHUNK_PAYLOAD_BYTES or not 0 <= offset <= MAX_BUNDLE_BYTES:
        raise ValueError("a chunk holds at most CHUNK_PAYLOAD_BYTES at a uint32 offset")
    return CHUNK_HEADER.pack(CHUNK_MAGIC, offset) + data


def parse_message(data: object) -> ControlMessage | Chunk:
    """Check and decode one control-channel message; raises ``BadMessage``."""
    if isinstance(data, bytes | bytearray | memoryview):
        return parse_chunk(bytes(data))
    if not isinstance(data, str):
        raise BadMessage("not_text")
    if len(data) > MAX_CONTROL_BYTES or len(data.encode("utf-8", "replace")) > MAX_CONTROL_BYTES:
        raise BadMessage("oversized")
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        raise BadMessage("json") from None
    if not isinstance(document, dict):
        raise BadMessage("not_object")
    parser = PARSERS.get(document.get("type")) if isinstance(document.get("type"), str) else None
    if parser is None:
        raise BadMessage("unknown_type")
    return parser(Fields(document))


def parse_chunk(data: bytes) -> Chunk:
    if len(data) > CHUNK_BYTES:
        raise BadMessage("oversized")
    if len(data) < CHUNK_HEADER.size:
        raise BadMessage("truncated")
    magic, offset = CHUNK_HEADER.unpack_from(data)
    if magic != CHUNK_MAGIC:
        raise BadMessage("chunk_magic")
    return Chunk(offset, data[CHUNK_HEADER.size:])


class Fields:
    """Typed, bounded access to a decoded JSON object; every failure is a ``BadMessage``."""

    def __init__(self, document: dict) -> None:
        self.document = document

    def get(self, name: str, kinds: type | tuple[type, ...]) -> Any:
        value = self.document.get(name)
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise BadMessage(f"field_{name}")
        return value

    def integer(self, name: str, low: int, high: int) -> int:
        value = self.get(name, int)
        if not low <= value <= high:
            raise BadMessage(f"field_{name}")
        return value

    def number(self, name: str, low: float, high: float) -> float:
        value = float(self.get(name, (int, float)))
        if not low <= value <= high:
            raise BadMessage(f"field_{name}")
        return value

    def text(self, name: str, limit: int = MAX_TEXT, pattern: re.Pattern | None = None) -> str:
        value = self.get(name, str)
        if len(value) > limit or (pattern is not None and not pattern.fullmatch(value)):
            raise BadMessage(f"field_{name}")
        return value

    def flag(self, name: str) -> bool:
        return self.get(name, bool)

    def texts(self, name: str, count: int, limit: int) -> tuple[str, ...]:
        values = self.get(name, list)
        if len(values) > count or not all(isinstance(v, str) and len(v) <= limit for v in values):
            raise BadMessage(f"field_{name}")
        return tuple(values)

    def nested(self, name: str) -> Fields:
        return Fields(self.get(name, dict))


def parse_avatar_info(fields: Fields) -> AvatarInfo:
    return AvatarInfo(fields.text("name", MAX_NAME, NAME_CHARACTERS),
                      fields.text("sha256", 64, SHA256_HEX),
                      fields.integer("size", 1, MAX_BUNDLE_BYTES),
                      fields.integer("image_size", 8, 4096))


def parse_hello(fields: Fields) -> Hello:
    protocol = fields.text("protocol", 32)
    if protocol != PROTOCOL:
        raise BadMessage("protocol")
    return Hello(fields.integer("version", 0, 1 << 16), fields.text("app", 32),
                 fields.texts("capabilities", MAX_CAPABILITIES, 32),
                 fields.integer("codec", 0, 255), fields.text("shape_basis", 64, SHA256_HEX),
                 parse_avatar_info(fields.nested("avatar")), fields.flag("shares_avatar"),
                 fields.flag("sends_landmarks"), fields.number("fps", MIN_FPS, MAX_FPS), protocol)


def parse_offer(fields: Fields) -> AvatarOffer:
    return AvatarOffer(fields.integer("size", 1, MAX_BUNDLE_BYTES),
                       fields.text("sha256", 64, SHA256_HEX))


def parse_result(fields: Fields) -> AvatarResult:
    return AvatarResult(fields.flag("ok"), fields.text("reason"))


def parse_bye(fields: Fields) -> Bye:
    return Bye(fields.text("reason"), fields.integer("packets_encoded", 0, MAX_COUNTER),
               fields.integer("packets_sent", 0, MAX_COUNTER),
               fields.integer("bytes_sent", 0, MAX_COUNTER))


PARSERS = {
    "hello": parse_hello,
    "avatar_request": lambda fields: AvatarRequest(),
    "avatar_offer": parse_offer,
    "avatar_result": parse_result,
    "ready": lambda fields: Ready(),
    "key_request": lambda fields: KeyRequest(),
    "ping": lambda fields: Ping(),
    "bye": parse_bye,
    "audio_clock": lambda fields: AudioClock(fields.integer("origin_us", 0, MAX_COUNTER)),
}


class ControlInbox:
    """Parses whatever arrives on the control channel; bad messages are counted in
    ``bad`` (by reason) and dropped. ``receive`` never raises."""

    def __init__(self) -> None:
        self.bad: Counter[str] = Counter()
        self.received = 0

    def receive(self, data: object) -> ControlMessage | Chunk | None:
        self.received += 1
        try:
            return parse_message(data)
        except BadMessage as error:
            self.bad[error.reason] += 1
        except Exception:  # a parser bug must not take the receive path down
            self.bad["internal"] += 1
        return None
