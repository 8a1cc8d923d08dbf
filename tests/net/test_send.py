"""The send path's worker thread: every frame the source gave goes out, the last packet
too, and a stopped call sends nothing more."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tests.net.test_codec import CROP, face_sequence
from tests.net.test_packing import capture_times
from vcam.landmarks.shape_basis import COORDINATES, fit_shape_basis
from vcam.net.packing import PackedDecoder, PackedEncoder, PackingSettings
from vcam.net.send import LandmarkSample, LandmarkSender

SIX_A_PACKET = PackingSettings(30.0, 6)


@pytest.fixture(scope="module")
def basis():
    return fit_shape_basis(face_sequence(300, seed=1), COORDINATES, CROP)


class FiniteSource:
    """A recorded face: ``frames`` samples at 30 fps, then the end; ``stop_after``: set the
    call's stop event once that many were given."""

    fps = 30.0

    def __init__(self, frames: int, stop_after: int | None = None) -> None:
        self.landmarks = face_sequence(frames, seed=4)
        self.times = capture_times(frames)
        self.stop_after = stop_after
        self.closed = False

    def samples(self, stop: threading.Event):
        for index, (points, at) in enumerate(zip(self.landmarks, self.times)):
            if index == self.stop_after:
                stop.set()
            yield LandmarkSample(points, at)

    def close(self) -> None:
        self.closed = True


def run_sender(basis, source: FiniteSource) -> tuple[list[bytes], LandmarkSender]:
    async def call() -> tuple[list[bytes], LandmarkSender]:
        delivered: list[bytes] = []
        ended = asyncio.Event()

        async def deliver(packet: bytes) -> None:
            delivered.append(packet)

        encoder = PackedEncoder(basis, CROP, packing=SIX_A_PACKET)
        sender = LandmarkSender(source, encoder, deliver, asyncio.get_running_loop(), ended.set)
        sender.start()
        await asyncio.wait_for(ended.wait(), 10)
        await asyncio.to_thread(sender.close)
        return delivered, sender

    return asyncio.run(call())


def test_the_frames_of_the_last_unfilled_packet_still_go_out(basis):
    delivered, sender = run_sender(basis, FiniteSource(14))
    decoder = PackedDecoder(basis, CROP)
    frames = [frame for packet in delivered for frame in decoder.decode_frames(packet)]
    assert len(delivered) == 3 and sender.encoded == 14 and sender.error is None
    assert [frame.sequence for frame in frames] == list(range(14))


def test_a_stopped_sender_does_not_flush_what_was_filling(basis):
    source = FiniteSource(14, stop_after=9)
    delivered, sender = run_sender(basis, source)
    assert len(delivered) == 1 and sender.encoded == 6 and source.closed
