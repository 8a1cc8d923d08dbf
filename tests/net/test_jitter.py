"""The receiver's jitter buffer: delay, reordering, concealment, bounds, clocks, threads."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest

from vcam.net.codec import LandmarkFrame
from vcam.net.jitter import JitterBuffer, JitterSettings, PlayoutKind

FRAME_US = 33_333
OFFSET_US = 7_000_000_000  # receiver clock minus sender clock: the clocks are not synced
NETWORK_US = 20_000


def frame(sequence: int) -> LandmarkFrame:
    """Frame ``sequence`` captured at sequence * FRAME_US; every landmark equals its
    sequence number, so interpolation is easy to check."""
    return LandmarkFrame(sequence, sequence * FRAME_US, np.full((68, 2), sequence, np.float32),
                 sequence % 30 == 0)


def arrival(sequence: int, extra_us: int = 0) -> int:
    return sequence * FRAME_US + OFFSET_US + NETWORK_US + extra_us


def playout_time(capture_us: float, delay_us: int = 50_000) -> int:
    """The receiver time at which ``capture_us`` should play, given the fastest delivery."""
    return round(capture_us + OFFSET_US + NETWORK_US + delay_us)


def fake_clock() -> int:
    raise AssertionError("the tests pass every time explicitly")


def new_buffer(settings: JitterSettings | None = None) -> JitterBuffer:
    return JitterBuffer(settings, clock=fake_clock)


def test_in_order_playback_runs_the_target_delay_behind() -> None:
    buffer = new_buffer()
    for sequence in range(10):
        buffer.push(frame(sequence), arrival(sequence))
    assert buffer.clock_offset_us == OFFSET_US + NETWORK_US
    for sequence in range(8):
        playout = buffer.frame_at(playout_time(sequence * FRAME_US))
        assert playout.kind is PlayoutKind.NORMAL and playout.sequence == sequence
        assert playout.capture_us == sequence * FRAME_US
        np.testing.assert_allclose(playout.landmarks, sequence)
    halfway = buffer.frame_at(playout_time(8.5 * FRAME_US))
    np.testing.assert_allclose(halfway.landmarks, 8.5, atol=1e-4)


def test_nothing_plays_before_the_first_frame_is_due() -> None:
    buffer = new_buffer()
    assert buffer.frame_at(0) is None
    buffer.push(frame(0), arrival(0))
    assert buffer.frame_at(playout_time(0) - 1) is None
    assert buffer.frame_at(playout_time(0)).sequence == 0
    assert buffer.stats.waiting == 2


def test_reordering_within_the_delay_is_undone() -> None:
    """Packets up to a frame late: interpolating between frames then needs two frame
    intervals of delay (80 ms here), and every playout is between two frames."""
    buffer, chance = new_buffer(JitterSettings(target_delay_ms=80)), random.Random(3)
    order = list(range(60))
    for start in range(0, 60, 2):  # swap neighbours: a packet is up to one frame (33 ms) late
        group = order[start:start + 2]
        chance.shuffle(group)
        order[start:start + 2] = group
    events = [(arrival(max(order[:position + 1]) if position else order[0]), "push", sequence)
              for position, sequence in enumerate(order)]
    events += [(playout_time((index + 0.5) * FRAME_US, 80_000), "play", index)
               for index in range(55)]
    kinds, values = [], []
    for when, what, sequence in sorted(events, key=lambda event: (event[0], event[1] == "play")):
        if what == "push":
            buffer.push(frame(sequence), when)
        else:
            playout = buffer.frame_at(when)
            kinds.append(playout.kind)
            values.append(float(playout.landmarks[0, 0]))
    assert set(kinds) == {PlayoutKind.NORMAL}
    np.testing.assert_allclose(values, np.arange(55) + 0.5, atol=1e-3)


def test_a_short_gap_is_interpolated() -> None:
    buffer = new_buffer()
    for sequence in [*range(10), 12, 13, 14]:
        buffer.push(frame(sequence), arrival(sequence))
    playout = buffer.frame_at(playout_time(10.5 * FRAME_US))
    assert playout.kind is PlayoutKind.INTERPOLATED
    assert playout.sequence == 9 and playout.missing == 2
    np.testing.assert_allclose(playout.landmarks, 10.5, atol=1e-3)
    assert buffer.stats.interpolated == 1


def test_a_long_gap_holds_the_last_frame() -> None:
    buffer = new_buffer()
    for sequence in [*range(10), 16, 17]:
        buffer.push(frame(sequence), arrival(sequence))
    playout = buffer.frame_at(playout_time(12 * FRAME_US))
    assert playout.kind is PlayoutKind.HELD and playout.missing == 6
    np.testing.assert_allclose(playout.landmarks, 9)
    assert buffer.frame_at(playout_time(16 * FRAME_US)).kind is PlayoutKind.NORMAL


def test_an_underrun_holds_the_newest_frame() -> None:
    buffer = new_buffer()
    for sequence in range(5):
        buffer.push(frame(sequence), arrival(sequence))
    playout = buffer.frame_at(playout_time(9 * FRAME_US))
    assert playout.kind is PlayoutKind.HELD and playout.sequence == 4 and playout.missing == 0


def test_late_and_duplicate_frames_are_refused() -> None:
    buffer = new_buffer()
    for sequence in (0, 1, 3):
        assert buffer.push(frame(sequence), arrival(sequence))
    assert not buffer.push(frame(3), arrival(3))
    buffer.frame_at(playout_time(2.5 * FRAME_US))
    assert not buffer.push(frame(2), arrival(2, 80_000))
    stats = buffer.stats
    assert (stats.pushed, stats.duplicate, stats.late) == (3, 1, 1)


def test_memory_is_bounded() -> None:
    buffer = new_buffer(JitterSettings(capacity=16, offset_window=8))
    for sequence in range(1000):
        buffer.push(frame(sequence), arrival(sequence))
    stats = buffer.stats
    assert stats.buffered == 16 and stats.dropped == 1000 - 16
    assert len(buffer.offsets) == 8
    buffer.frame_at(playout_time(995 * FRAME_US))
    assert buffer.stats.buffered <= 5  # played frames are let go, but the one at playout


def test_clock_offset_is_the_fastest_delivery() -> None:
    buffer, chance = new_buffer(), random.Random(5)
    delays = [chance.randint(5_000, 80_000) for _ in range(50)]
    delays[17] = 2_000
    for sequence, delay in enumerate(delays):
        buffer.push(frame(sequence), sequence * FRAME_US - 123_456_789 + delay)
    assert buffer.clock_offset_us == -123_456_789 + 2_000
    assert buffer.stats.clock_offset_us == buffer.clock_offset_us


def test_the_target_delay_can_change() -> None:
    buffer = new_buffer()
    for sequence in range(20):
        buffer.push(frame(sequence), arrival(sequence))
    assert buffer.frame_at(playout_time(5 * FRAME_US)).sequence == 5
    buffer.set_target_delay(150)
    # Playout never runs backwards: a longer delay holds the picture until time catches up.
    assert buffer.frame_at(playout_time(6 * FRAME_US)).sequence == 5
    assert buffer.frame_at(playout_time(10 * FRAME_US, 150_000)).sequence == 10
    with pytest.raises(ValueError):
        buffer.set_target_delay(-1)


def test_a_restarted_sender_is_followed() -> None:
    buffer = new_buffer()
    for sequence in range(100):
        buffer.push(frame(sequence), arrival(sequence))
        buffer.frame_at(playout_time(sequence * FRAME_US))
    for sequence in range(40):  # a new stream: sequence numbers and capture clock restart
        buffer.push(frame(sequence), arrival(100 + sequence))
    later = arrival(140)
    assert buffer.frame_at(later + 100_000) is not None
    assert buffer.stats.late == 30


def test_push_and_playout_from_two_threads() -> None:
    buffer, errors = new_buffer(JitterSettings(capacity=8)), []

    def receive() -> None:
        try:
            for sequence in range(3000):
                buffer.push(frame(sequence), arrival(sequence))
        except Exception as error:
            errors.append(error)

    def render() -> None:
        try:
            for step in range(3000):
                buffer.frame_at(playout_time(step * FRAME_US))
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=receive), threading.Thread(target=render)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = buffer.stats
    assert not errors
    assert stats.pushed + stats.late + stats.duplicate == 3000 and stats.buffered <= 8


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        JitterSettings(capacity=1)
    with pytest.raises(ValueError):
        JitterSettings(target_delay_ms=-5)
