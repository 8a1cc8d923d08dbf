"""The landmark codec: round trips, sizes, and a decoder that survives any bytes."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vcam.landmarks.shape_basis import COORDINATES, fit_shape_basis
from vcam.net import codec
from vcam.net.codec import (
    MAX_PACKET_BYTES,
    CodecSettings,
    Decoder,
    Encoder,
    decode_coefficients,
    encode_coefficients,
)

CROP = 256
# The tests below count on a key every 30 frames and a 0.6 px step.
EVERY_30 = CodecSettings(key_interval=30, step_px=0.6)
FUZZ = settings(max_examples=150, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
FEW = settings(FUZZ, max_examples=40)


def face_sequence(frames: int, seed: int) -> np.ndarray:
    """(frames, 68, 2) crop-pixel landmarks of a synthetic talking head: one face template,
    a drifting pose, an opening mouth and blinking eyes, and detector noise."""
    template = np.random.default_rng(99).uniform([70, 70], [186, 200], (68, 2))
    rng = np.random.default_rng(seed)
    time = np.arange(frames)[:, None, None]
    shift = np.cumsum(rng.normal(0, 0.8, (frames, 1, 2)), axis=0)
    angle = 0.05 * np.sin(time / 17 + seed)
    scale = 1 + 0.03 * np.sin(time / 23 + seed)
    centred = template - template.mean(axis=0)
    rotated = np.stack([centred[..., 0] * np.cos(angle[..., 0]) - centred[..., 1] * np.sin(
        angle[..., 0]), centred[..., 0] * np.sin(angle[..., 0]) + centred[..., 1] * np.cos(
        angle[..., 0])], axis=-1)
    shapes = scale * rotated + template.mean(axis=0) + shift
    shapes[:, 57:68, 1] += 6 * np.abs(np.sin(time[:, :, 0] / 5 + seed))  # the mouth opens
    shapes[:, 36:48, 1] += 2 * (np.sin(time[:, :, 0] / 11) > 0.9)  # the eyes blink
    return (shapes + rng.normal(0, 0.3, shapes.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def basis():
    return fit_shape_basis(face_sequence(300, seed=1), COORDINATES, CROP)


@pytest.fixture(scope="module")
def stream(basis):
    """60 frames (two keys) of another sequence, their packets and timestamps."""
    landmarks = face_sequence(60, seed=2)
    encoder = Encoder(basis, CROP, EVERY_30)
    times = [round(index * 1e6 / 30) for index in range(60)]
    return landmarks, [encoder.encode(points, at) for points, at in zip(landmarks, times)], times


def decode_all(basis, packets: list[bytes]) -> tuple[Decoder, list]:
    decoder = Decoder(basis, CROP)
    return decoder, [decoder.decode(packet) for packet in packets]


def test_round_trip_keys_and_deltas_within_error(basis, stream) -> None:
    landmarks, packets, times = stream
    decoder, frames = decode_all(basis, packets)
    assert [frame.key for frame in frames] == [index % 30 == 0 for index in range(60)]
    assert [frame.sequence for frame in frames] == list(range(60))
    assert [frame.capture_us for frame in frames] == times
    decoded = np.stack([frame.landmarks for frame in frames])
    distances = np.linalg.norm(decoded - landmarks, axis=-1)
    assert distances.mean() < 0.25
    # Uniform quantisation on an orthonormal basis: the mean error is about 0.38 steps.
    assert distances.mean() == pytest.approx(0.383 * 0.6, rel=0.15)
    assert distances.max() < 1.0
    assert decoder.stats.decoded == 60 and decoder.stats.bad == 0


def test_packet_sizes(basis, stream) -> None:
    _, packets, _ = stream
    header = codec.HEADER.size + codec.CHECKSUM.size
    assert all(header < len(packet) <= 90 for packet in packets)
    key, delta = packets[0], packets[1]
    assert key[1] == codec.KEY_FLAG and delta[1] == 1 and packets[2][1] == 2
    assert np.mean([len(packet) for packet in packets]) * 8 * 30 < 16_000


def test_extreme_landmarks_stay_within_the_cap(basis) -> None:
    decoder, encoder = Decoder(basis, CROP), Encoder(basis, CROP)
    for points in (np.full((68, 2), 1e7), np.full((68, 2), -1e7), np.zeros((68, 2))):
        packet = encoder.encode(points, 0)
        assert len(packet) <= MAX_PACKET_BYTES
        assert decoder.decode(packet) is not None
    with pytest.raises(ValueError):
        encoder.encode(np.full((68, 2), np.nan), 0)


def test_decoder_crop_size_scales_landmarks(basis, stream) -> None:
    landmarks, packets, _ = stream
    frame = Decoder(basis, 2 * CROP).decode(packets[0])
    assert np.abs(frame.landmarks / 2 - landmarks[0]).max() < 1.0


@FEW
@given(st.lists(st.integers(-codec.MAX_MAGNITUDE, codec.MAX_MAGNITUDE),
                min_size=COORDINATES, max_size=COORDINATES))
def test_entropy_coder_round_trip(values) -> None:
    models = codec.MagnitudeModels()
    array = np.array(values, dtype=np.int64)
    np.testing.assert_array_equal(decode_coefficients(models, encode_coefficients(models, array)),
                                  array)


def test_entropy_coder_round_trip_on_small_values() -> None:
    models, rng = codec.MagnitudeModels(), np.random.default_rng(0)
    for spread in (0.0, 0.3, 3.0, 40.0, 3000.0):
        values = np.rint(rng.laplace(0, spread + 1e-9, COORDINATES)).astype(np.int64)
        np.testing.assert_array_equal(
            decode_coefficients(models, encode_coefficients(models, values)), values)
    assert len(encode_coefficients(models, np.zeros(COORDINATES, np.int64))) <= 2


def test_model_tables_are_far_from_rounding_boundaries() -> None:
    """Both ends build their tables in floating point; every value rounded on the way must be
    clear of a boundary so that any platform's last-bit differences round the same way."""
    margin = 1e-7
    for level in range(codec.LEVELS):
        probabilities = codec.laplace_symbol_probabilities(codec.level_scale(level))
        for target in codec.frequency_targets(probabilities):
            fraction = target - math.floor(target)
            assert fraction < 1 - margin and (target < 1 or fraction > margin)
    for slope in range(codec.SLOPES):
        for offset in codec.profile_offsets(slope):
            nudged = offset + codec.ROUNDING_NUDGE
            assert abs(nudged - round(nudged)) > margin


@FUZZ
@given(st.binary(max_size=1400))
def test_decoder_survives_random_bytes(basis, data) -> None:
    decoder = Decoder(basis, CROP)
    assert decoder.decode(data) is None
    stats = decoder.stats
    assert stats.received == 1 and stats.decoded == 0
    assert stats.bad + stats.missing_key == 1


def test_decoder_refuses_non_bytes_and_oversized(basis) -> None:
    decoder = Decoder(basis, CROP)
    assert decoder.decode(None) is None
    assert decoder.decode(b"\xa1" * (MAX_PACKET_BYTES + 1)) is None
    assert decoder.decode(b"") is None
    assert decoder.stats.bad_reasons == {"not_bytes": 1, "oversized": 1, "truncated": 1}


@FUZZ
@given(index=st.integers(0, 59), position=st.integers(0, 10_000), bits=st.integers(1, 0xFFFF))
def test_bit_flips_are_caught(basis, stream, index, position, bits) -> None:
    """Any error burst of up to 16 bits (CRC-16's guarantee) makes a packet bad."""
    packet = bytearray(stream[1][index] + b"\0")
    start = position % (len(packet) - 1)
    flipped = int.from_bytes(packet[start:start + 2], "big") ^ bits
    packet[start:start + 2] = flipped.to_bytes(2, "big")
    decoder = Decoder(basis, CROP)
    assert decoder.decode(bytes(packet[:-1])) is None
    assert decoder.stats.bad == 1


@FUZZ
@given(index=st.integers(0, 59), cut=st.integers(1, 200), extra=st.binary(min_size=1,
                                                                            max_size=50))
def test_truncated_and_extended_packets_are_bad(basis, stream, index, cut, extra) -> None:
    packet = stream[1][index]
    decoder = Decoder(basis, CROP)
    assert decoder.decode(packet[:max(0, len(packet) - cut)]) is None
    assert decoder.decode(packet + extra) is None
    assert decoder.stats.bad == 2


def test_padding_never_makes_a_valid_packet(basis, stream) -> None:
    decoder = Decoder(basis, CROP)
    for packet in stream[1]:
        for padding in (b"\0", b"\0\0", b"\xff", b"\xff\xff", b"\x1d\x0f", b"\xe2\xf0"):
            assert decoder.decode(packet + padding) is None
    assert decoder.stats.bad == decoder.stats.received


@FEW
@given(st.permutations(list(range(40))))
def test_reordered_packets_decode_to_the_same_frames(basis, stream, order) -> None:
    packets = stream[1]
    _, in_order = decode_all(basis, packets[:40])
    decoder = Decoder(basis, CROP)
    for index in order:
        frame = decoder.decode(packets[index])
        key_arrived_first = order.index(30 if index >= 30 else 0) <= order.index(index)
        assert (frame is not None) == key_arrived_first
        if frame is not None:
            assert frame.sequence == index
            np.testing.assert_array_equal(frame.landmarks, in_order[index].landmarks)
    stats = decoder.stats
    assert stats.decoded + stats.missing_key == 40 and stats.bad == 0


def test_duplicates_and_stale_packets_are_ignored_across_wraparound(basis) -> None:
    landmarks = face_sequence(100, seed=3)
    encoder = Encoder(basis, CROP, EVERY_30, first_sequence=65_500)
    start_us = 2**32 - 1_000_000  # the capture clock wraps too
    packets = [encoder.encode(points, start_us + index * 33_333)
               for index, points in enumerate(landmarks)]
    decoder, frames = decode_all(basis, packets)
    assert [frame.sequence for frame in frames] == list(range(65_500, 65_600))
    assert all(later.capture_us - earlier.capture_us == 33_333
               for earlier, later in itertools.pairwise(frames))
    assert decoder.decode(packets[-1]) is None  # a duplicate
    assert decoder.decode(packets[-40]) is None  # an old duplicate, still inside the window
    assert decoder.decode(packets[10]) is None  # stale
    stats = decoder.stats
    assert (stats.duplicate, stats.stale, stats.decoded) == (2, 1, 100)


def test_delta_without_its_key_is_dropped_until_a_key_comes(basis, stream) -> None:
    packets = stream[1]
    decoder = Decoder(basis, CROP)
    assert decoder.wants_key
    assert all(decoder.decode(packet) is None for packet in packets[1:30])
    assert decoder.stats.missing_key == 29 and decoder.wants_key
    assert decoder.decode(packets[30]).key
    assert not decoder.wants_key
    assert decoder.decode(packets[31]) is not None


def test_key_on_request_and_key_interval(basis) -> None:
    encoder = Encoder(basis, CROP, CodecSettings(key_interval=5))
    landmarks = face_sequence(12, seed=4)
    kinds = [encoder.encode(points, 0)[1] == codec.KEY_FLAG for points in landmarks[:7]]
    encoder.request_key()
    kinds += [encoder.encode(points, 0)[1] == codec.KEY_FLAG for points in landmarks[7:]]
    assert kinds == [True, False, False, False, False, True, False,
                     True, False, False, False, False]


def test_a_key_from_another_basis_is_bad(basis, stream) -> None:
    other = fit_shape_basis(face_sequence(300, seed=9), COORDINATES, CROP)
    decoder = Decoder(other, CROP)
    assert decoder.decode(stream[1][0]) is None
    assert decoder.stats.bad_reasons == {"basis": 1}


def test_decoder_follows_a_restarted_sender(basis) -> None:
    landmarks = face_sequence(200, seed=5)
    first, decoder = Encoder(basis, CROP, first_sequence=1000), Decoder(basis, CROP)
    for points in landmarks[:100]:
        decoder.decode(first.encode(points, 0))
    restarted = Encoder(basis, CROP)
    results = [decoder.decode(restarted.encode(points, 0)) for points in landmarks[100:]]
    recovered = [index for index, frame in enumerate(results) if frame is not None]
    assert recovered and recovered[0] <= codec.RESYNC_AFTER_STALE + 30
    assert decoder.stats.stale == codec.RESYNC_AFTER_STALE


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        CodecSettings(key_interval=128)
    with pytest.raises(ValueError):
        CodecSettings(step_px=0.0)
    assert CodecSettings(step_px=0.5).step_code == 32


def test_lossy_stream_keeps_decoding(basis) -> None:
    """20% loss: every delta whose key arrived decodes; nothing raises."""
    landmarks = face_sequence(120, seed=6)
    encoder, decoder = Encoder(basis, CROP, EVERY_30), Decoder(basis, CROP)
    chance = random.Random(1)
    arrived_keys = set()
    for index, points in enumerate(landmarks):
        packet = encoder.encode(points, index * 33_333)
        if chance.random() < 0.2:
            continue
        frame = decoder.decode(packet)
        if index % 30 == 0:
            arrived_keys.add(index)
        assert (frame is not None) == (index - index % 30 in arrived_keys)


def test_codec_bench_on_the_tiny_dataset(tiny_dataset) -> None:
    from vcam.bench.codec import CodecBenchSettings, codec_report_lines, run_codec_bench
    from vcam.data.clips import open_dataset

    clips = list(open_dataset(tiny_dataset).clips)
    report = run_codec_bench(clips, settings=CodecBenchSettings(curve_steps_px=(0.6, 2.0)))
    split, stream = report["split"], report["landmarks"]
    assert split["by"] == "identity" and split["fit_clips"] and split["eval_clips"]
    assert not set(split["fit_identities"]) & set(split["eval_identities"])
    assert stream["frames"] == split["eval_frames"] > 0
    assert 1 < stream["kbit_per_s"] < 16
    assert 0.25 * stream["step_px"] < stream["mean_error_px"] < 0.4 * stream["step_px"]
    assert stream["header_kbit_per_s"] < stream["kbit_per_s"]
    assert report["h264"]["kbit_per_s"] > stream["kbit_per_s"]
    assert report["h264_to_landmarks_ratio"] > 1
    # On the wire: every figure above its payload, packing far below a frame a packet.
    sent, h264, call = report["landmarks_sent"], report["h264"], report["call"]
    assert stream["wire_kbit_per_s"] > stream["kbit_per_s"] + 20  # 30 x 93 B headers a second
    assert sent["kbit_per_s"] < sent["wire_kbit_per_s"] < 0.5 * stream["wire_kbit_per_s"]
    assert 5.0 <= sent["packets_per_s"] < 7  # 6 frames a packet, each short clip ends one
    assert sent["acks_bundled_kbit_per_s"] < 0.25 * sent["acks_wire_kbit_per_s"]
    assert h264["wire_kbit_per_s"] > h264["kbit_per_s"]
    assert report["h264_to_landmarks_wire_ratio"] == pytest.approx(
        h264["wire_kbit_per_s"] / sent["wire_kbit_per_s"])
    assert call["wire_kbit_per_s"] == pytest.approx(
        call["voice_wire_kbit_per_s"] + sent["wire_kbit_per_s"] + sent["acks_bundled_kbit_per_s"])
    assert call["voice_wire_kbit_per_s"] > call["voice_kbit_per_s"]
    curve = report["rate_curve"]
    assert curve[0]["kbit_per_s"] > curve[1]["kbit_per_s"]
    assert curve[0]["mean_error_px"] < curve[1]["mean_error_px"]
    coders = report["entropy_coders_payload_bytes"]
    assert coders["range_coder"] < coders["zigzag_varint"]
    lines = codec_report_lines(report)
    assert lines and all(isinstance(line, str) and line for line in lines)
