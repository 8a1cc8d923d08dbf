"""Landmark packets that carry several frames, sent at a lower rate than they are rendered.

A WebRTC data-channel message costs 93 B of headers on the wire (SCTP 12 + DATA chunk 16 +
DTLS record 37 + UDP/IPv4 28; see ``vcam.net.wire``), more than one frame's coded landmarks
(10-45 B), so one frame a message spends most of the stream on headers. Here the sender
packs ``frames_per_packet`` frames (6 by default: 5 messages/s at 30 fps) into one message,
and may keep only ``send_fps`` frames a second (the receiver's jitter buffer interpolates
the rest). The price is latency: a packet leaves with its last frame, so its first waited
five frame intervals, and the receiver's playout must run a packet interval (200 ms by
default) behind the sender's clock to always hold the frame after the one it shows
(``playout_delay_ms``), against one frame interval for a frame a packet.

The quantiser step (``CodecSettings.step_px``, 3 px) and the packing were chosen by
measurement (``vcam bench codec --quality``: the shipped model's renders from the landmarks
a call plays out, on 6 identities it held out, against its renders from the original
landmarks; SSIM, mean and 5th percentile): every frame at 0.6 px 0.998 (0.996), at 1 px
0.996 (0.992), 2 px 0.987 (0.971), 3 px 0.976 (0.944); 1 px of Gaussian landmark noise, the
detector's own scatter, 0.977 (0.951). So at 3 px the coding costs the picture what the
detector already does, and finer steps buy little; 3 px is also the finest step that keeps
6 frames a packet under 8 kbit/s on the wire (on those identities with the shipped basis:
3.8 kbit/s of payload, 7.7 on the wire; at 2 px 9.0). Sending 15 fps, 3 a packet,
interpolated, costs as much on the wire at 1.5 px but loses more (0.970, 0.853:
interpolation misses fast motion), so every frame is sent.

The frames are coded as ``vcam.net.codec`` codes one (the same orthonormal shape basis,
quantiser and range coder), one range-coded payload for the whole packet: the first frame's
integer coefficients in a key packet, else their change since the last frame of the key
packet it names; each later frame's change since the frame before it (a packet arrives whole
or not at all, so only the first frame depends on another packet). A key every
``key_every_packets`` packets, or when the receiver asks.

Packet layout (big-endian)::

    0      1  magic/version   0xA2 (0xA1 is vcam.net.codec's frame a packet)
    1      1  flags           bit 7 = key; bits 0-6 = delta: how many frames back the first
                              frame of its key packet is (1-127); 0 in a key
    2      2  sequence        of the first frame, uint16, wraps; the others follow it
    4      4  capture time    of the first frame, uint32 µs of the sender's clock, wraps
    8      1  frames          how many frames (1-MAX_FRAMES_PER_PACKET)
    key:  9  1  step code       quantiser step = code / 16384 crop sizes
          10 2  basis id        first 16 bits of the shape basis' SHA-256
    ...       frames - 1 bytes  each later frame's capture time after the one before, in ms
    ...       payload         range-coded: per frame level (5 bits), slope (3 bits), 136 values
    -2     2  checksum        as vcam.net.codec's (CRC-16/GENIBUS of length and body)

``PackedDecoder.decode_frames`` takes any bytes and never raises: bad packets are counted
and dropped.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass

import numpy as np

from vcam.landmarks.shape_basis import ShapeBasis
from vcam.net.codec import (
    CHECKSUM,
    DISTANCE_MASK,
    HEADER,
    KEY_FLAG,
    KEY_HEADER,
    MAX_MAGNITUDE,
    MAX_PACKET_BYTES,
    SCALE_BITS,
    SEQUENCE_MODULUS,
    SLOPE_BITS,
    STALE_WINDOW,
    STEP_UNIT,
    TIMESTAMP_MODULUS,
    BadPacket,
    CodecSettings,
    Decoder,
    LandmarkFrame,
    MagnitudeModels,
    RangeDecoder,
    RangeEncoder,
    ShapeQuantiser,
    StoredKey,
    basis_id,
    checksum,
    unwrap_counter,
    verified_body,
)

PACKED_MAGIC_VERSION = 0xA2
FRAME_COUNT = struct.Struct(">B")
MAX_FRAMES_PER_PACKET = 15
MAX_GAP_MS = 255
# A frame is kept when at least this share of the send interval has passed since the last
# kept one: a 30 fps camera's frames (33 +- a few ms apart) sent at 15 fps keep every other.
KEEP_FRACTION = 0.75


@dataclass(frozen=True)
class PackingSettings:
    """``send_fps``: frames sent per second at most (the rest are skipped; the receiver
    interpolates); ``frames_per_packet``: frames in one message; ``key_every_packets``: a
    key packet every so many packets. The defaults (every frame of a 30 fps camera, 6 a
    packet, a key a second) keep the landmarks under 8 kbit/s on the wire (README)."""

    send_fps: float = 30.0
    frames_per_packet: int = 6
    key_every_packets: int = 5

    def __post_init__(self) -> None:
        if not 1.0 <= self.send_fps <= 120.0:
            raise ValueError("send_fps must be in 1..120")
        if not 1 <= self.frames_per_packet <= MAX_FRAMES_PER_PACKET:
            raise ValueError(f"frames_per_packet must be in 1..{MAX_FRAMES_PER_PACKET}")
        if not 1 <= self.key_every_packets * self.frames_per_packet <= DISTANCE_MASK:
            raise ValueError(f"key_every_packets x frames_per_packet must be in "
                             f"1..{DISTANCE_MASK}")

    @property
    def packets_per_second(self) -> float:
        return self.send_fps / self.frames_per_packet

    def playout_delay_ms(self, margin_ms: float = 20.0) -> float:
        """The least playout delay that still interpolates every rendered frame: a packet
        interval (the frame after the one shown comes with the next packet) plus a margin
        for the network's jitter."""
        return 1000.0 * self.frames_per_packet / self.send_fps + margin_ms


def encode_frame(models: MagnitudeModels, coder: RangeEncoder, values: np.ndarray) -> None:
    level, slope = models.best_profile(values)
    coder.encode(level, 1, SCALE_BITS)
    coder.encode(slope, 1, SLOPE_BITS)
    models.encode(coder, values, models.profile(level, slope))


def decode_frame(models: MagnitudeModels, coder: RangeDecoder) -> np.ndarray:
    level = coder.raw(SCALE_BITS)
    slope = coder.raw(SLOPE_BITS)
    return np.array(models.decode(coder, models.profile(level, slope)), dtype=np.int64)


def changes(later: np.ndarray, earlier: np.ndarray) -> np.ndarray:
    return np.clip(later - earlier, -MAX_MAGNITUDE, MAX_MAGNITUDE)


class PackedEncoder:
    """Landmarks -> packets of several frames. ``encode`` takes every captured frame and
    returns the packets that are ready (none while one is filling); ``request_key`` makes
    the next packet a key; ``flush`` sends a packet that is not full. Counts: ``kept`` and
    ``skipped`` frames, ``packed`` (kept frames in packets made)."""

    def __init__(self, basis: ShapeBasis, crop_size: float,
                 settings: CodecSettings | None = None,
                 packing: PackingSettings | None = None, first_sequence: int = 0) -> None:
        self.settings = settings or CodecSettings()
        self.packing = packing or PackingSettings()
        self.quantiser = ShapeQuantiser(basis, crop_size)
        self.models = MagnitudeModels()
        self.basis_id = basis_id(basis)
        self.step = self.settings.step_code * STEP_UNIT
        self.sequence = first_sequence % SEQUENCE_MODULUS
        self.frames: list[np.ndarray] = []
        self.times: list[int] = []  # capture µs as the receiver will rebuild them
        self.key_values: np.ndarray | None = None
        self.key_sequence = 0
        self.packets_since_key = 0
        self.key_requested = True
        self.last_kept_us: int | None = None
        self.kept = 0
        self.skipped = 0
        self.packed = 0

    def request_key(self) -> None:
        self.key_requested = True

    @property
    def filling(self) -> bool:
        """Whether kept frames wait for a packet that is not full yet (see :meth:`flush`)."""
        return bool(self.frames)

    def keeps(self, capture_us: int) -> bool:
        """Whether a frame captured at ``capture_us`` is sent (at most ``send_fps``)."""
        interval = 1e6 / self.packing.send_fps
        last = self.last_kept_us
        if last is not None and 0 <= capture_us - last < KEEP_FRACTION * interval:
            self.skipped += 1
            return False
        self.last_kept_us = capture_us
        self.kept += 1
        return True

    def encode(self, landmarks: np.ndarray, capture_us: int) -> list[bytes]:
        """One captured frame's (68, 2) crop-pixel landmarks at ``capture_us`` (the
        sender's monotonic µs); the packets to send now."""
        if not self.keeps(capture_us):
            return []
        values = self.quantiser.quantise(landmarks, self.step)
        ready = []
        if self.times and not 1 <= self.gap_ms(capture_us) <= MAX_GAP_MS:
            ready.append(self.flush())
        self.times.append(capture_us if not self.times
                          else self.times[-1] + 1000 * self.gap_ms(capture_us))
        self.frames.append(values)
        if len(self.frames) >= self.packing.frames_per_packet:
            ready.append(self.flush())
        return ready

    def gap_ms(self, capture_us: int) -> int:
        return round((capture_us - self.times[-1]) / 1000)

    def flush(self) -> bytes:
        """The packet of the frames collected so far (there must be one)."""
        frames, times = self.frames, self.times
        self.frames, self.times = [], []
        self.packed += len(frames)
        distance = (self.sequence - self.key_sequence) % SEQUENCE_MODULUS
        key = (self.key_requested or self.key_values is None
               or self.packets_since_key >= self.packing.key_every_packets
               or distance > DISTANCE_MASK)
        coder = RangeEncoder()
        if key:
            flags, extension = KEY_FLAG, KEY_HEADER.pack(self.settings.step_code, self.basis_id)
            encode_frame(self.models, coder, frames[0])
            self.key_sequence, self.packets_since_key, self.key_requested = self.sequence, 0, False
        else:
            flags, extension = distance, b""
            encode_frame(self.models, coder, changes(frames[0], self.key_values))
        for earlier, later in itertools.pairwise(frames):
            encode_frame(self.models, coder, changes(later, earlier))
        if key:
            self.key_values = frames[-1]
        self.packets_since_key += 1
        gaps = bytes((later - earlier) // 1000 for earlier, later in itertools.pairwise(times))
        packet = build_packed(flags, self.sequence, times[0], len(frames),
                              extension + gaps, coder.finish())
        self.sequence = (self.sequence + len(frames)) % SEQUENCE_MODULUS
        return packet


def build_packed(flags: int, sequence: int, capture_us: int, frames: int, extension: bytes,
                 payload: bytes) -> bytes:
    body = HEADER.pack(PACKED_MAGIC_VERSION, flags, sequence, capture_us % TIMESTAMP_MODULUS)
    body += FRAME_COUNT.pack(frames) + extension + payload
    if len(body) + CHECKSUM.size > MAX_PACKET_BYTES:
        raise ValueError(f"a landmark packet would exceed {MAX_PACKET_BYTES} bytes")
    return body + CHECKSUM.pack(checksum(body))


@dataclass(frozen=True)
class PackedPacket:
    """A parsed, checksum-verified packet (sequence and time still wrapped)."""

    key: bool
    distance: int
    sequence: int
    capture_us: int
    gaps_ms: bytes
    step_code: int
    basis_id: int
    payload: bytes

    @property
    def frames(self) -> int:
        return len(self.gaps_ms) + 1


def parse_packed(data: object) -> PackedPacket:
    """Check and split a datagram; raises ``BadPacket`` with the reason."""
    body = verified_body(data)
    if len(body) < HEADER.size + FRAME_COUNT.size:
        raise BadPacket("truncated")
    magic_version, flags, sequence, capture_us = HEADER.unpack_from(body)
    if magic_version != PACKED_MAGIC_VERSION:
        raise BadPacket("version")
    key, distance = bool(flags & KEY_FLAG), flags & DISTANCE_MASK
    (frames,) = FRAME_COUNT.unpack_from(body, HEADER.size)
    if key == bool(distance) or not 1 <= frames <= MAX_FRAMES_PER_PACKET:
        raise BadPacket("flags")
    position = HEADER.size + FRAME_COUNT.size
    step_code = basis = 0
    if key:
        if len(body) < position + KEY_HEADER.size:
            raise BadPacket("truncated")
        step_code, basis = KEY_HEADER.unpack_from(body, position)
        position += KEY_HEADER.size
        if step_code == 0:
            raise BadPacket("flags")
    gaps = body[position:position + frames - 1]
    if len(gaps) < frames - 1:
        raise BadPacket("truncated")
    if 0 in gaps:
        raise BadPacket("flags")
    return PackedPacket(key, distance, sequence, capture_us, gaps, step_code, basis,
                        body[position + frames - 1:])


class PackedDecoder(Decoder):
    """Packets of several frames -> frames, with ``Decoder``'s rules and counters, which
    here count frames (a bad packet counts as one): ``received`` frames arrived,
    ``decoded``, ``stale``, ``duplicate`` and ``missing_key`` frames, ``bad`` packets (and
    the frames of a key of another basis). A key packet's last frame is what its deltas
    refer to."""

    def decode(self, data: bytes) -> LandmarkFrame | None:
        """The newest frame of a packet, or None (use ``decode_frames`` for them all)."""
        frames = self.decode_frames(data)
        return frames[-1] if frames else None

    def decode_frames(self, data: object) -> list[LandmarkFrame]:
        """The frames of a packet, oldest first; none for a packet that is bad, stale, a
        duplicate or lacks its key."""
        try:
            packet = parse_packed(data)
        except BadPacket as error:
            self.counts["received"] += 1
            self.bad_reasons[error.reason] += 1
            return []
        self.counts["received"] += packet.frames
        first = unwrap_counter(packet.sequence, self.newest, SEQUENCE_MODULUS)
        if not self.is_fresh(first):
            self.counts[self.refused_as(first)] += packet.frames - 1
            return []
        values, step = self.packet_values(packet, first)
        if values is None:
            return []
        return self.accept_frames(packet, first, values, step)

    def refused_as(self, sequence: int) -> str:
        return "duplicate" if sequence in self.seen else "stale"

    def packet_values(self, packet: PackedPacket, first: int
                      ) -> tuple[list[np.ndarray] | None, float]:
        """Every frame's absolute integer coefficients and their step, or (None, 0)
        (counted) for a key of another basis or a delta without its key."""
        if packet.key:
            if packet.basis_id != self.basis_id:
                self.bad_reasons["basis"] += packet.frames
                return None, 0.0
            start, step = np.zeros(0, dtype=np.int64), packet.step_code * STEP_UNIT
        else:
            key = self.keys.get(first - packet.distance)
            if key is None:
                self.counts["missing_key"] += packet.frames
                self.key_wanted = True
                return None, 0.0
            start, step = key.values, key.step
        coder = RangeDecoder(packet.payload)
        values = []
        for _ in range(packet.frames):
            change = decode_frame(self.models, coder)
            start = change if not values and packet.key else start + change
            values.append(start)
        return values, step

    def accept_frames(self, packet: PackedPacket, first: int, values: list[np.ndarray],
                      step: float) -> list[LandmarkFrame]:
        if packet.key:
            self.store_key(first, StoredKey(values[-1], step))
        last = first + packet.frames - 1
        self.newest = last if self.newest is None else max(self.newest, last)
        self.seen.update(range(first, last + 1))
        self.seen = {seen for seen in self.seen if seen >= self.newest - STALE_WINDOW}
        capture = unwrap_counter(packet.capture_us, self.newest_capture, TIMESTAMP_MODULUS)
        times = [capture]
        for gap in packet.gaps_ms:
            times.append(times[-1] + 1000 * gap)
        if last == self.newest:
            self.newest_capture = times[-1]
        self.counts["decoded"] += packet.frames
        return [LandmarkFrame(first + index, time_us,
                              self.quantiser.reconstruct(frame_values, step), packet.key)
                for index, (time_us, frame_values) in enumerate(zip(times, values))]
