"""Landmark packets for landmark-only calls: 68 face landmarks per frame in a few bytes.

A shape (avatar-crop pixels / crop size) is transformed with the orthonormal shape basis
(PCA components, completed to all 136 dimensions so the completion carries the residual),
and each of the 136 coefficients is quantised with one uniform step (``CodecSettings``;
orthonormality makes the landmark error exactly the quantiser's). A key packet carries the
quantised coefficients; a delta packet their change since its key, so a delta decodes as
long as its own key arrived, whatever else was lost. The integers are range-coded under
Laplace models whose scale falls with the component index as a power law: each packet
sends the level and slope (8 bits) that code it best: 3x smaller than zigzag + varint, 2x
smaller than raw zlib or lzma of them (each packet alone, as loss demands; ``vcam bench
codec``). Calls send several frames a packet (``vcam.net.packing``), coded the same way.

Packet layout (big-endian)::

    0      1  magic/version   0xA1: high nibble 0xA marks a vcam landmark packet, low = 1
    1      1  flags           bit 7 = key; bits 0-6 = delta: how many sequence numbers back
                              its key is (1-127); 0 in a key
    2      2  sequence        uint16, wraps (serial-number arithmetic)
    4      4  capture time    uint32 microseconds of the sender's clock, wraps (~71 min)
    key:  8  1  step code       quantiser step = code / 16384 crop sizes
          9  2  basis id        first 16 bits of the shape basis' SHA-256
    ...       payload         range-coded: level (5 bits), slope (3 bits), 136 values
    -2     2  checksum        CRC-16/GENIBUS (binascii.crc_hqx, init and final XOR 0xFFFF)
                              of the length of everything before it (uint16), then of it

16 bits of checksum: SCTP's CRC-32c and DTLS's tag already guard each message; this one
catches foreign or mangled datagrams and bugs (one random datagram in 65536 passes).

``Decoder.decode`` takes any bytes and never raises: bad packets are counted and dropped.
"""

from __future__ import annotations

import binascii
import itertools
import math
import struct
from bisect import bisect_right
from collections import Counter, OrderedDict
from dataclasses import dataclass

import numpy as np

from vcam.landmarks.shape_basis import COORDINATES, ShapeBasis, denormalise, normalise

MAGIC_VERSION = 0xA1
MAX_PACKET_BYTES = 1200
HEADER = struct.Struct(">BBHI")
KEY_HEADER = struct.Struct(">BH")
CHECKSUM = struct.Struct(">H")
LENGTH = struct.Struct(">H")
MIN_PACKET_BYTES = HEADER.size + CHECKSUM.size
KEY_FLAG = 0x80
DISTANCE_MASK = 0x7F
MAX_KEY_INTERVAL = DISTANCE_MASK
STEP_UNIT = 1.0 / 16384
REFERENCE_CROP = 256
SEQUENCE_MODULUS = 1 << 16
TIMESTAMP_MODULUS = 1 << 32
# The decoder: packets more than STALE_WINDOW sequence numbers behind the newest are stale;
# it keeps the latest KEPT_KEYS keys (so reordered deltas across a key still decode), and
# after RESYNC_AFTER_STALE stale packets in a row takes the sender to have restarted.
STALE_WINDOW = 64
KEPT_KEYS = 4
RESYNC_AFTER_STALE = 30

# Entropy coding: a 32-bit range coder (LZMA-style carry handling) with 16-bit frequencies.
FREQUENCY_BITS = 16
RANGE_TOP = 1 << 24
WORD_MASK = 0xFFFFFFFF
# A magnitude below DIRECT_MAGNITUDES is one symbol; a larger one is the symbol of its octave
# [2^e, 2^(e+1)) followed by e raw bits.
DIRECT_MAGNITUDES = 16
FIRST_OCTAVE = 4
MAX_MAGNITUDE = (1 << 16) - 1
SYMBOLS = DIRECT_MAGNITUDES + MAX_MAGNITUDE.bit_length() - FIRST_OCTAVE
# Laplace models: level j has mean magnitude 2**(0.4 j - 4) quantiser steps (0.06 to 340).
# A packet picks a level and a slope; coefficient i (0-based) is then coded at level
# level - slope * 0.625 * log2(i + 1), rounded: coefficient variances fall with their index.
SCALE_BITS = 5
SLOPE_BITS = 3
LEVELS = 1 << SCALE_BITS
SLOPES = 1 << SLOPE_BITS
LEVEL_OCTAVES = 0.4
LOWEST_LEVEL_OCTAVE = -4.0
SLOPE_LEVELS_PER_OCTAVE = 0.625
# Table entries and profile levels are rounded from floating point; both ends must agree,
# so no value may lie within a hair of a rounding boundary (the tests check the margin).
ROUNDING_NUDGE = 0.5 + 2.0 ** -10


class RangeEncoder:
    """Arithmetic coding over integer frequency intervals, bytes out."""

    def __init__(self) -> None:
        self.low = 0
        self.range = WORD_MASK
        self.cache = 0
        self.pending = 1
        self.output = bytearray()

    def encode(self, start: int, size: int, total_bits: int) -> None:
        """Code the interval [start, start + size) of a total of 2**total_bits."""
        unit = self.range >> total_bits
        self.low += unit * start
        self.range = unit * size
        while self.range < RANGE_TOP:
            self.range <<= 8
            self.shift_low()

    def shift_low(self) -> None:
        if (self.low & WORD_MASK) < 0xFF000000 or self.low > WORD_MASK:
            carry = self.low >> 32
            byte = self.cache
            while self.pending:
                self.output.append((byte + carry) & 0xFF)
                byte = 0xFF
                self.pending -= 1
            self.cache = (self.low >> 24) & 0xFF
        self.pending += 1
        self.low = (self.low & 0x00FFFFFF) << 8

    def finish(self) -> bytes:
        """The coded bytes: the final value is the one in the last interval with the most
        trailing zero bits, and trailing zero bytes are left off (the decoder reads zeros
        past the end); the first byte is always zero and is left off too."""
        highest = self.low + self.range - 1
        for bits in range(32, -1, -1):
            mask = (1 << bits) - 1
            candidate = (self.low + mask) & ~mask
            if candidate <= highest:
                self.low = candidate
                break
        for _ in range(5):
            self.shift_low()
        return bytes(self.output[1:]).rstrip(b"\0")


class RangeDecoder:
    """The inverse of ``RangeEncoder``; any input decodes to something, nothing raises."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0
        self.range = WORD_MASK
        self.unit = 1
        self.code = 0
        for _ in range(4):
            self.code = (self.code << 8) | self.next_byte()

    def next_byte(self) -> int:
        position = self.position
        self.position += 1
        return self.data[position] if position < len(self.data) else 0

    def target(self, total_bits: int) -> int:
        """Where the code lies among 2**total_bits; follow with ``consume``."""
        self.unit = self.range >> total_bits
        return min(self.code // self.unit, (1 << total_bits) - 1)

    def consume(self, start: int, size: int) -> None:
        self.code -= self.unit * start
        self.range = self.unit * size
        while self.range < RANGE_TOP:
            self.range <<= 8
            self.code = ((self.code << 8) | self.next_byte()) & WORD_MASK

    def raw(self, bits: int) -> int:
        value = self.target(bits)
        self.consume(value, 1)
        return value


def magnitude_symbol(magnitude: int) -> tuple[int, int]:
    """The symbol of a magnitude and how many raw bits follow it."""
    if magnitude < DIRECT_MAGNITUDES:
        return magnitude, 0
    octave = magnitude.bit_length() - 1
    return DIRECT_MAGNITUDES + octave - FIRST_OCTAVE, octave


def symbol_ranges() -> list[tuple[int, float, int]]:
    """For every symbol: the smallest magnitude, the end of its range and its raw bits."""
    ranges = [(magnitude, magnitude + 1.0, 0) for magnitude in range(DIRECT_MAGNITUDES)]
    for octave in range(FIRST_OCTAVE, MAX_MAGNITUDE.bit_length()):
        ranges.append((1 << octave, float(2 << octave), octave))
    last_start, _, last_bits = ranges[-1]
    ranges[-1] = (last_start, math.inf, last_bits)
    return ranges


def laplace_symbol_probabilities(scale: float) -> list[float]:
    """P(symbol) for the magnitude of a Laplace variable of mean magnitude ``scale``
    rounded to an integer."""
    return [max(0.0, math.exp(-max(start - 0.5, 0.0) / scale) - math.exp(-(end - 0.5) / scale))
            for start, end, _ in symbol_ranges()]


def frequency_targets(probabilities: list[float]) -> list[float]:
    """The unrounded frequencies: the share of 2**FREQUENCY_BITS left after one per symbol."""
    spare = (1 << FREQUENCY_BITS) - len(probabilities)
    total = math.fsum(probabilities)
    return [probability / total * spare for probability in probabilities]


def quantised_frequencies(probabilities: list[float]) -> list[int]:
    """Integer frequencies, each at least 1, summing to 2**FREQUENCY_BITS."""
    frequencies = [max(1, math.floor(target)) for target in frequency_targets(probabilities)]
    frequencies[frequencies.index(max(frequencies))] += (1 << FREQUENCY_BITS) - sum(frequencies)
    return frequencies


def level_scale(level: int) -> float:
    return 2.0 ** (LOWEST_LEVEL_OCTAVE + LEVEL_OCTAVES * level)


def profile_offsets(slope: int) -> list[float]:
    """How many levels below the packet's level each coefficient is coded, unrounded."""
    return [slope * SLOPE_LEVELS_PER_OCTAVE * math.log2(index + 1) for index in range(COORDINATES)]


class MagnitudeModels:
    """The frequency table of every level, the level profile of every (level, slope), and
    costs in bits (symbol, raw bits and sign) for the encoder's choice of profile."""

    def __init__(self) -> None:
        self.frequencies = [quantised_frequencies(laplace_symbol_probabilities(level_scale(j)))
                            for j in range(LEVELS)]
        self.cumulative = [[0, *itertools.accumulate(table)] for table in self.frequencies]
        offsets = np.array([[math.floor(offset + ROUNDING_NUDGE) for offset in
                             profile_offsets(slope)] for slope in range(SLOPES)])
        self.profiles = np.clip(np.arange(LEVELS)[:, None, None] - offsets[None], 0, LEVELS - 1)
        raw_bits = np.array([bits for _, _, bits in symbol_ranges()], dtype=np.float64)
        sign_bits = np.ones(SYMBOLS)
        sign_bits[0] = 0.0
        table_bits = FREQUENCY_BITS - np.log2(np.array(self.frequencies, dtype=np.float64))
        self.bits = table_bits + raw_bits + sign_bits

    def profile(self, level: int, slope: int) -> list[int]:
        """The level of each coefficient."""
        return self.profiles[level, slope].tolist()

    def best_profile(self, values: np.ndarray) -> tuple[int, int]:
        """The (level, slope) that codes ``values`` in the fewest bits."""
        symbols = symbols_of(np.abs(values))
        costs = self.bits[self.profiles, symbols].sum(axis=-1)
        level, slope = np.unravel_index(np.argmin(costs), costs.shape)
        return int(level), int(slope)

    def encode(self, coder: RangeEncoder, values: np.ndarray, profile: list[int]) -> None:
        for value, level in zip(values.tolist(), profile):
            magnitude = abs(value)
            symbol, raw_bits = magnitude_symbol(magnitude)
            coder.encode(self.cumulative[level][symbol], self.frequencies[level][symbol],
                         FREQUENCY_BITS)
            if raw_bits:
                coder.encode(magnitude - (1 << raw_bits), 1, raw_bits)
            if magnitude:
                coder.encode(int(value < 0), 1, 1)

    def decode(self, coder: RangeDecoder, profile: list[int]) -> list[int]:
        values = []
        for level in profile:
            cumulative = self.cumulative[level]
            symbol = bisect_right(cumulative, coder.target(FREQUENCY_BITS)) - 1
            coder.consume(cumulative[symbol], self.frequencies[level][symbol])
            magnitude = symbol
            if symbol >= DIRECT_MAGNITUDES:
                octave = symbol - DIRECT_MAGNITUDES + FIRST_OCTAVE
                magnitude = (1 << octave) + coder.raw(octave)
            values.append(-magnitude if magnitude and coder.raw(1) else magnitude)
        return values


def symbols_of(magnitudes: np.ndarray) -> np.ndarray:
    """``magnitude_symbol`` over an array of magnitudes (symbols only)."""
    octaves = np.floor(np.log2(np.maximum(magnitudes, 1))).astype(np.int64)
    return np.where(magnitudes < DIRECT_MAGNITUDES, magnitudes,
                    DIRECT_MAGNITUDES + octaves - FIRST_OCTAVE)


def encode_coefficients(models: MagnitudeModels, values: np.ndarray) -> bytes:
    """136 integers -> payload: the scale profile (level, slope), then the values."""
    coder = RangeEncoder()
    level, slope = models.best_profile(values)
    coder.encode(level, 1, SCALE_BITS)
    coder.encode(slope, 1, SLOPE_BITS)
    models.encode(coder, values, models.profile(level, slope))
    return coder.finish()


def decode_coefficients(models: MagnitudeModels, payload: bytes) -> np.ndarray:
    """The inverse of ``encode_coefficients``; garbage in gives some integers out."""
    coder = RangeDecoder(payload)
    level = coder.raw(SCALE_BITS)
    slope = coder.raw(SLOPE_BITS)
    return np.array(models.decode(coder, models.profile(level, slope)), dtype=np.int64)


def checksum(body: bytes) -> int:
    """CRC-16/GENIBUS (CCITT's polynomial, initial value and final XOR 0xFFFF) of the body's
    length (uint16) and the body. Covering the length means no bytes appended to every
    packet alike make valid packets (without the final XOR, a zero byte would)."""
    return binascii.crc_hqx(LENGTH.pack(len(body)) + body, 0xFFFF) ^ 0xFFFF


def basis_id(basis: ShapeBasis) -> int:
    return int(basis.fingerprint[:4], 16)


def unwrap_counter(value: int, reference: int | None, modulus: int) -> int:
    """The integer congruent to ``value`` modulo ``modulus`` nearest to ``reference``."""
    if reference is None:
        return value
    half = modulus // 2
    return reference + (value - reference + half) % modulus - half


@dataclass(frozen=True)
class CodecSettings:
    """``key_interval``: a key every so many frames (at most 127; 5 is the cheapest measured:
    a key costs ~4 B more than a delta, a delta grows with its distance); ``step_px``: the
    quantiser step in px of a 256 px crop (mean landmark error 0.3-0.4 of it), 3 px by
    measurement (``vcam.net.packing`` tells how)."""

    key_interval: int = 5
    step_px: float = 3.0

    def __post_init__(self) -> None:
        if not 1 <= self.key_interval <= MAX_KEY_INTERVAL:
            raise ValueError(f"key_interval must be in 1..{MAX_KEY_INTERVAL}")
        if not 1 <= self.step_code <= 255:
            raise ValueError("step_px must be in 0.016..3.98 (pixels of a 256 px crop)")

    @property
    def step_code(self) -> int:
        return round(self.step_px / REFERENCE_CROP / STEP_UNIT)


@dataclass(frozen=True)
class LandmarkFrame:
    """A decoded frame: unwrapped sequence number and capture time (sender's clock, µs),
    landmarks (68, 2) float32 in the decoder's crop pixels, and whether it was a key."""

    sequence: int
    capture_us: int
    landmarks: np.ndarray
    key: bool


class ShapeQuantiser:
    """Landmarks <-> integer coefficients on the full orthonormal basis."""

    def __init__(self, basis: ShapeBasis, crop_size: float) -> None:
        self.mean = basis.mean
        self.transform = basis.full_transform
        self.crop_size = float(crop_size)

    def quantise(self, landmarks: np.ndarray, step: float) -> np.ndarray:
        coefficients = (normalise(landmarks, self.crop_size) - self.mean) @ self.transform.T
        if not np.isfinite(coefficients).all():
            raise ValueError("landmarks must be finite")
        return np.clip(np.rint(coefficients / step), -MAX_MAGNITUDE, MAX_MAGNITUDE).astype(
            np.int64)

    def reconstruct(self, values: np.ndarray, step: float) -> np.ndarray:
        return denormalise(self.mean + (values * step) @ self.transform, self.crop_size)


class Encoder:
    """Landmarks -> packets. Keeps the sequence number, the last key and the key schedule;
    ``request_key`` (e.g. on the receiver's request) makes the next packet a key.
    ``last_coded`` holds the integers the last packet carried (for measurements)."""

    def __init__(self, basis: ShapeBasis, crop_size: float,
                 settings: CodecSettings | None = None, first_sequence: int = 0) -> None:
        self.settings = settings or CodecSettings()
        self.quantiser = ShapeQuantiser(basis, crop_size)
        self.models = MagnitudeModels()
        self.basis_id = basis_id(basis)
        self.step = self.settings.step_code * STEP_UNIT
        self.sequence = first_sequence % SEQUENCE_MODULUS
        self.key_values: np.ndarray | None = None
        self.frames_since_key = 0
        self.key_requested = True
        self.last_coded = np.zeros(COORDINATES, dtype=np.int64)

    def request_key(self) -> None:
        self.key_requested = True

    def encode(self, landmarks: np.ndarray, capture_us: int) -> bytes:
        """One frame's (68, 2) crop-pixel landmarks, captured at ``capture_us`` (any
        monotonic microsecond clock of the sender), as one packet."""
        values = self.quantiser.quantise(landmarks, self.step)
        if self.key_requested or self.frames_since_key >= self.settings.key_interval:
            packet = self.key_packet(values, capture_us)
        else:
            packet = self.delta_packet(values, capture_us)
        self.sequence = (self.sequence + 1) % SEQUENCE_MODULUS
        return packet

    def key_packet(self, values: np.ndarray, capture_us: int) -> bytes:
        self.key_values, self.frames_since_key, self.key_requested = values, 1, False
        extension = KEY_HEADER.pack(self.settings.step_code, self.basis_id)
        self.last_coded = values
        return build_packet(KEY_FLAG, self.sequence, capture_us, extension,
                            encode_coefficients(self.models, values))

    def delta_packet(self, values: np.ndarray, capture_us: int) -> bytes:
        distance = self.frames_since_key
        self.frames_since_key += 1
        changes = np.clip(values - self.key_values, -MAX_MAGNITUDE, MAX_MAGNITUDE)
        self.last_coded = changes
        return build_packet(distance, self.sequence, capture_us, b"",
                            encode_coefficients(self.models, changes))


def build_packet(flags: int, sequence: int, capture_us: int, extension: bytes,
                 payload: bytes) -> bytes:
    body = HEADER.pack(MAGIC_VERSION, flags, sequence, capture_us % TIMESTAMP_MODULUS)
    body += extension + payload
    if len(body) + CHECKSUM.size > MAX_PACKET_BYTES:
        raise ValueError(f"a landmark packet would exceed {MAX_PACKET_BYTES} bytes")
    return body + CHECKSUM.pack(checksum(body))


class BadPacket(Exception):
    """A packet that cannot be used; ``reason`` is the counter it goes to."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Packet:
    """A parsed, checksum-verified packet (sequence and time still wrapped)."""

    key: bool
    distance: int
    sequence: int
    capture_us: int
    step_code: int
    basis_id: int
    payload: bytes


def verified_body(data: object) -> bytes:
    """A datagram's body (all but the checksum) if its type, size and checksum are right;
    raises ``BadPacket`` with the reason."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BadPacket("not_bytes")
    if (data.nbytes if isinstance(data, memoryview) else len(data)) > MAX_PACKET_BYTES:
        raise BadPacket("oversized")
    data = bytes(data)
    if len(data) < MIN_PACKET_BYTES:
        raise BadPacket("truncated")
    body, (expected,) = data[:-CHECKSUM.size], CHECKSUM.unpack(data[-CHECKSUM.size:])
    if checksum(body) != expected:
        raise BadPacket("checksum")
    return body


def parse_packet(data: object) -> Packet:
    """Check and split a datagram; raises ``BadPacket`` with the reason."""
    body = verified_body(data)
    magic_version, flags, sequence, capture_us = HEADER.unpack_from(body)
    if magic_version != MAGIC_VERSION:
        raise BadPacket("version")
    key, distance = bool(flags & KEY_FLAG), flags & DISTANCE_MASK
    if key == bool(distance):
        raise BadPacket("flags")
    if not key:
        return Packet(False, distance, sequence, capture_us, 0, 0, body[HEADER.size:])
    if len(body) < HEADER.size + KEY_HEADER.size:
        raise BadPacket("truncated")
    step_code, basis = KEY_HEADER.unpack_from(body, HEADER.size)
    if step_code == 0:
        raise BadPacket("flags")
    return Packet(True, 0, sequence, capture_us, step_code, basis,
                  body[HEADER.size + KEY_HEADER.size:])


@dataclass(frozen=True)
class DecoderStats:
    """Counters: every call to ``decode`` is ``received``; it then ends up ``decoded``,
    ``bad`` (reasons in ``bad_reasons``), ``stale``, ``duplicate`` or ``missing_key``."""

    received: int
    decoded: int
    bad: int
    stale: int
    duplicate: int
    missing_key: int
    bad_reasons: dict[str, int]


@dataclass(frozen=True)
class StoredKey:
    values: np.ndarray
    step: float


class Decoder:
    """Packets -> frames, in arrival order; drops bad, stale and duplicate packets and
    deltas whose key is missing (``wants_key`` then asks the caller to request one)."""

    def __init__(self, basis: ShapeBasis, crop_size: float) -> None:
        self.quantiser = ShapeQuantiser(basis, crop_size)
        self.models = MagnitudeModels()
        self.basis_id = basis_id(basis)
        self.counts: Counter[str] = Counter()
        self.bad_reasons: Counter[str] = Counter()
        self.reset()

    def reset(self) -> None:
        """Forget the sender (sequence numbers, clock, keys); counters are kept."""
        self.newest: int | None = None
        self.newest_capture: int | None = None
        self.seen: set[int] = set()
        self.keys: OrderedDict[int, StoredKey] = OrderedDict()
        self.stale_run = 0
        self.key_wanted = True

    @property
    def wants_key(self) -> bool:
        """True until a key arrives, and again whenever a delta came without its key."""
        return self.key_wanted

    @property
    def stats(self) -> DecoderStats:
        count = self.counts
        return DecoderStats(count["received"], count["decoded"], sum(self.bad_reasons.values()),
                            count["stale"], count["duplicate"], count["missing_key"],
                            dict(self.bad_reasons))

    def decode(self, data: bytes) -> LandmarkFrame | None:
        """A frame, or None for a packet that is bad, stale, a duplicate or lacks its key."""
        self.counts["received"] += 1
        try:
            packet = parse_packet(data)
        except BadPacket as error:
            self.bad_reasons[error.reason] += 1
            return None
        sequence = unwrap_counter(packet.sequence, self.newest, SEQUENCE_MODULUS)
        if not self.is_fresh(sequence):
            return None
        values = self.packet_values(packet, sequence)
        if values is None:
            return None
        return self.accept(packet, sequence, values)

    def is_fresh(self, sequence: int) -> bool:
        """False (and counted) for a stale or duplicate sequence number."""
        if self.newest is not None and sequence < self.newest - STALE_WINDOW:
            self.counts["stale"] += 1
            self.stale_run += 1
            if self.stale_run >= RESYNC_AFTER_STALE:
                self.reset()
            return False
        self.stale_run = 0
        if sequence in self.seen:
            self.counts["duplicate"] += 1
            return False
        return True

    def packet_values(self, packet: Packet, sequence: int) -> StoredKey | None:
        """The absolute integer coefficients and their step, or None (counted)."""
        if packet.key:
            if packet.basis_id != self.basis_id:
                self.bad_reasons["basis"] += 1
                return None
            return StoredKey(decode_coefficients(self.models, packet.payload),
                             packet.step_code * STEP_UNIT)
        key = self.keys.get(sequence - packet.distance)
        if key is None:
            self.counts["missing_key"] += 1
            self.key_wanted = True
            return None
        changes = decode_coefficients(self.models, packet.payload)
        return StoredKey(key.values + changes, key.step)

    def accept(self, packet: Packet, sequence: int, values: StoredKey) -> LandmarkFrame:
        if packet.key:
            self.store_key(sequence, values)
        self.newest = sequence if self.newest is None else max(self.newest, sequence)
        self.seen.add(sequence)
        self.seen = {seen for seen in self.seen if seen >= self.newest - STALE_WINDOW}
        capture = unwrap_counter(packet.capture_us, self.newest_capture, TIMESTAMP_MODULUS)
        if sequence == self.newest:
            self.newest_capture = capture
        self.counts["decoded"] += 1
        landmarks = self.quantiser.reconstruct(values.values, values.step)
        return LandmarkFrame(sequence, capture, landmarks, packet.key)

    def store_key(self, sequence: int, key: StoredKey) -> None:
        self.keys[sequence] = key
        self.keys = OrderedDict(sorted(self.keys.items())[-KEPT_KEYS:])
        self.key_wanted = False
