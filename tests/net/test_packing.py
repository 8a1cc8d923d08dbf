"""Packets of several frames at a lower send rate: round trips, loss, reordering, hostile
bytes, and a jitter buffer that still interpolates every rendered frame."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.net.test_codec import CROP, face_sequence
from vcam.landmarks.shape_basis import COORDINATES, fit_shape_basis
from vcam.net.audio import AudioSync
from vcam.net.codec import CodecSettings, Encoder
from vcam.net.jitter import PACKET_MARGIN_US, JitterBuffer, JitterSettings, PlayoutKind
from vcam.net.packing import PackedDecoder, PackedEncoder, PackingSettings

FRAME_US = 1e6 / 30
HALF_RATE = PackingSettings(15.0, 3)  # every other frame of a 30 fps camera, 3 a packet


@pytest.fixture(scope="module")
def basis():
    return fit_shape_basis(face_sequence(300, seed=1), COORDINATES, CROP)


def capture_times(frames: int, jitter_us: int = 0, seed: int = 0) -> list[int]:
    """A 30 fps camera's capture times (µs), each off by up to ``jitter_us``."""
    rng = np.random.default_rng(seed)
    return [round(5_000_000 + index * FRAME_US + rng.integers(-jitter_us, jitter_us + 1))
            for index in range(frames)]


def packed(basis, landmarks, times, packing=HALF_RATE, step_px=0.6):
    encoder = PackedEncoder(basis, CROP, CodecSettings(step_px=step_px), packing)
    packets = [packet for points, at in zip(landmarks, times)
               for packet in encoder.encode(points, at)]
    return encoder, packets


def test_frames_are_kept_at_the_send_rate_packed_and_decoded(basis):
    landmarks, times = face_sequence(61, seed=2), capture_times(61, jitter_us=4000)
    encoder, packets = packed(basis, landmarks, times)
    assert (encoder.kept, encoder.skipped, encoder.packed) == (31, 30, 30)
    assert len(packets) == 10 and len(encoder.frames) == 1  # the 31st waits for its packet
    decoder = PackedDecoder(basis, CROP)
    frames = [frame for packet in packets for frame in decoder.decode_frames(packet)]
    assert [frame.sequence for frame in frames] == list(range(30))
    assert [frame.key for frame in frames] == [index % 15 < 3 for index in range(30)]
    for frame, index in zip(frames, range(0, 60, 2)):
        assert abs(frame.capture_us - times[index]) <= 1000  # ms resolution after the first
    decoded = np.stack([frame.landmarks for frame in frames])
    distances = np.linalg.norm(decoded - landmarks[0:60:2], axis=-1)
    # As for a frame a packet: the quantiser's error (about 0.38 steps) and nothing more.
    assert distances.mean() == pytest.approx(0.383 * 0.6, rel=0.15) and distances.max() < 1.0
    stats = decoder.stats
    assert (stats.received, stats.decoded, stats.bad) == (30, 30, 0)


def test_packing_is_smaller_than_a_frame_a_packet(basis):
    """The point of it: fewer bytes in all, and far fewer messages."""
    landmarks, times = face_sequence(90, seed=3), capture_times(90)
    single = Encoder(basis, CROP, CodecSettings(step_px=0.6))
    one_each = sum(len(single.encode(points, at)) for points, at in zip(landmarks, times))
    _, packets = packed(basis, landmarks, times, PackingSettings(30.0, 3))
    assert len(packets) == 30
    assert sum(map(len, packets)) < 0.9 * one_each  # two headers in three saved, and more


def test_a_lost_delta_packet_costs_only_its_frames_and_a_lost_key_asks_for_one(basis):
    landmarks, times = face_sequence(60, seed=4), capture_times(60)
    _, packets = packed(basis, landmarks, times)  # 10 packets; keys: 0 and 5
    decoder = PackedDecoder(basis, CROP)
    kept = [packet for index, packet in enumerate(packets) if index != 2]
    frames = [frame for packet in kept for frame in decoder.decode_frames(packet)]
    assert [frame.sequence for frame in frames] == [*range(6), *range(9, 30)]
    late = PackedDecoder(basis, CROP)
    assert late.decode_frames(packets[3]) == [] and late.wants_key
    assert late.stats.missing_key == 3
    assert [frame.sequence for frame in late.decode_frames(packets[5])] == [15, 16, 17]
    assert not late.wants_key


def test_reordered_and_duplicated_packets(basis):
    landmarks, times = face_sequence(60, seed=5), capture_times(60)
    _, packets = packed(basis, landmarks, times)
    decoder = PackedDecoder(basis, CROP)
    order = [0, 2, 1, 3, 3, 4, 5, 7, 6, 8, 9]  # deltas overtake deltas of the same key
    got = {frame.sequence: frame for index in order
           for frame in decoder.decode_frames(packets[index])}
    assert sorted(got) == list(range(30))
    assert decoder.stats.duplicate == 3
    reference = PackedDecoder(basis, CROP)
    for packet in packets:
        for frame in reference.decode_frames(packet):
            np.testing.assert_array_equal(frame.landmarks, got[frame.sequence].landmarks)


def test_a_long_gap_ends_a_packet_early_and_a_key_request_makes_a_key(basis):
    landmarks, times = face_sequence(12, seed=6), capture_times(12)
    times = [times[0], *(at + 400_000 for at in times[1:])]  # 400 ms: too long for a gap
    encoder = PackedEncoder(basis, CROP, packing=PackingSettings(30.0, 4))
    decoder = PackedDecoder(basis, CROP)
    sent = [encoder.encode(points, at) for points, at in zip(landmarks[:5], times[:5])]
    assert [len(packets) for packets in sent] == [0, 1, 0, 0, 1]
    first, second = (decoder.decode_frames(packets[0]) for packets in sent if packets)
    assert [frame.sequence for frame in first] == [0] and first[0].key
    assert [frame.sequence for frame in second] == [1, 2, 3, 4] and not second[0].key
    assert [frame.capture_us for frame in second] == pytest.approx(times[1:5], abs=1000)
    encoder.request_key()
    packets = [packet for points, at in zip(landmarks[5:9], times[5:9])
               for packet in encoder.encode(points, at)]
    assert decoder.decode_frames(packets[0])[0].key


def test_settings_are_checked():
    with pytest.raises(ValueError):
        PackingSettings(frames_per_packet=0)
    with pytest.raises(ValueError):
        PackingSettings(frames_per_packet=15, key_every_packets=9)  # 135 frames > 127
    with pytest.raises(ValueError):
        PackingSettings(send_fps=0.5)
    assert PackingSettings().packets_per_second == 5.0
    assert PackingSettings().playout_delay_ms(20.0) == pytest.approx(220.0)


@settings(max_examples=150, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_the_decoder_survives_mutated_and_random_bytes(basis, data):
    landmarks, times = face_sequence(12, seed=7), capture_times(12)
    _, packets = packed(basis, landmarks, times, PackingSettings(30.0, 3))
    decoder = PackedDecoder(basis, CROP)
    for _ in range(data.draw(st.integers(1, 6))):
        packet = bytearray(data.draw(st.sampled_from(packets)))
        position = data.draw(st.integers(0, len(packet) - 1))
        packet[position] ^= data.draw(st.integers(1, 255))
        assert decoder.decode_frames(bytes(packet)) == []  # the checksum catches it
        frames = decoder.decode_frames(data.draw(st.binary(max_size=200)))
        assert all(frame.landmarks.shape == (68, 2) for frame in frames)
    assert decoder.decode_frames(None) == [] and decoder.decode_frames(b"\xa2" * 2000) == []
    assert decoder.stats.bad_reasons.get("not_bytes") == 1
    assert decoder.stats.bad_reasons.get("oversized") == 1


def test_the_jitter_buffer_interpolates_every_rendered_frame_of_packed_frames(basis):
    """Packets of 3 frames at 15 fps, 5 a second, arriving with their last frame plus 5-25
    ms of network delay: played at 30 fps, no slot is held once the delay covers a packet,
    and the landmarks between sent frames are interpolated."""
    landmarks, times = face_sequence(120, seed=8), capture_times(120, jitter_us=3000)
    _, packets = packed(basis, landmarks, times)
    decoder = PackedDecoder(basis, CROP)
    clock = {"now": 0}
    jitter = JitterBuffer(JitterSettings(target_delay_ms=50.0), clock=lambda: clock["now"])
    rng = np.random.default_rng(0)
    arrivals = []
    for packet in packets:
        frames = decoder.decode_frames(packet)
        arrivals.append((frames[-1].capture_us + 1_000_000 + int(rng.integers(5000, 25000)),
                         frames))
    kinds = []
    for slot in range(40, 110):
        clock["now"] = times[0] + 1_000_000 + round(slot * FRAME_US)
        while arrivals and arrivals[0][0] <= clock["now"]:  # 200 ms apart: in order
            arrival, frames = arrivals.pop(0)
            jitter.cover_packet(frames)
            for frame in frames:
                jitter.push(frame, arrival)
        playout = jitter.frame_at()
        kinds.append(playout.kind if playout else None)
    # Three frames 67 +- 3 ms apart need three such intervals.
    assert jitter.minimum_delay_us == pytest.approx(200_000 + PACKET_MARGIN_US, abs=10_000)
    assert jitter.delay_us == jitter.minimum_delay_us  # above the 50 ms asked for
    assert kinds[10:].count(PlayoutKind.NORMAL) == len(kinds) - 10, kinds


def test_a_lost_packet_of_six_frames_is_interpolated_across(basis):
    """Without packing a gap of 6 frames is held; a lost packet of 6 is concealed."""
    landmarks, times = face_sequence(90, seed=9), capture_times(90)
    _, packets = packed(basis, landmarks, times, PackingSettings())
    decoder = PackedDecoder(basis, CROP)
    jitter = JitterBuffer(JitterSettings(), clock=lambda: 0)
    for index, packet in enumerate(packets):
        frames = decoder.decode_frames(packet)
        jitter.cover_packet(frames)
        if index != 7:  # frames 42-47 lost
            for frame in frames:
                jitter.push(frame, frame.capture_us + 1000)
    kinds = {}
    for index in range(36, 60):
        playout = jitter.frame_at(times[index] + 1000 + jitter.delay_us)
        kinds[index] = playout.kind
    assert [kinds[index] for index in range(42, 48)] == [PlayoutKind.INTERPOLATED] * 6
    assert kinds[40] is kinds[50] is PlayoutKind.NORMAL


def test_the_audio_delay_follows_the_packets_need():
    """Lip sync: the sound waits as long as the landmarks must."""

    class Jitter:
        clock_offset_us, minimum_delay_us, delay_ms = 0, 230_000, None

        def set_target_delay(self, milliseconds):
            self.delay_ms = milliseconds

    jitter = Jitter()
    sync = AudioSync(50.0, jitter)
    sync.set_origin(0)
    sync.due_us(0, 30_000)
    assert sync.delay_us == 230_000 and jitter.delay_ms == 230.0
