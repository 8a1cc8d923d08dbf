"""The voice of a call: real aiortc peers on loopback sending Opus from sound files, the
receiver's mp4 (PyAV, read back) holding the peer's face and voice in sync, the wire
figures from the transport's statistics, and the one-line error without an input device."""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from calibration.sets import Expression, apply_expression
from tests.net.test_call import LOOPBACK_ICE, call_homes, in_process_call, serve_process
from vcam.avatar import load_avatar
from vcam.cli import main
from vcam.net.audio import (
    SAMPLE_RATE,
    AudioInputSpec,
    AudioSync,
    SpeakerOutput,
    VoiceSource,
)
from vcam.net.avatar_exchange import describe_avatar
from vcam.net.call import CallSettings, LocalSide, join_call
from vcam.net.lipsync import (
    click_times,
    mouth_open_times,
    read_pictures,
    read_sound,
    sync_offsets,
    write_clicks,
)
from vcam.net.media import PipelineRenderer, ReceiveSettings
from vcam.net.send import FaultSettings, LandmarkSample
from vcam.net.signaling import SignalingSettings
from vcam.net.wire import DATA_CHANNEL_BYTES, VOICE_PACKET_BYTES
from vcam.runtime.avatars import RendererSettings
from vcam.runtime.compositor import CompositorSettings
from vcam.runtime.sinks import SinkSpec

WIDTH, HEIGHT = 96, 96
__all__ = ["call_homes"]  # the two users of the two-process call (a fixture)
FPS = 30.0
# Mouth openings and clicks: every 0.5 s from 0.5 s (on frame instants at 30 frames/s).
INSTANTS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
OPEN_S = 0.2
# The broadcast detectability threshold for sound ahead of / behind the picture (ITU-R
# BT.1359); the median over the clicks must stay inside it.
SYNC_TOLERANCE_S = 0.045


def shown_in(path: Path) -> ReceiveSettings:
    return ReceiveSettings((SinkSpec("file", path),), RendererSettings("onnxruntime", 1, "cpu"),
                           CompositorSettings(WIDTH, HEIGHT))


class OpeningMouth:
    """The avatar's neutral face at ``FPS`` whose mouth opens wide for ``OPEN_S`` at each of
    ``INSTANTS`` (seconds after the first sample), in real time."""

    def __init__(self, neutral: np.ndarray, seconds: float) -> None:
        self.closed = np.asarray(neutral, np.float32)
        self.open = apply_expression(neutral, Expression(mouth_open=1.0)).astype(np.float32)
        self.fps, self.count = FPS, round(seconds * FPS)

    def samples(self, stop: threading.Event):
        started = time.monotonic()
        for index in range(self.count):
            if stop.wait(max(0.0, started + index / self.fps - time.monotonic())):
                return
            now = index / self.fps
            opened = any(instant - 1e-6 <= now < instant + OPEN_S for instant in INSTANTS)
            yield LandmarkSample(self.open if opened else self.closed,
                                 time.monotonic_ns() // 1000)

    def close(self) -> None:
        pass


def side(path: Path, source=None, voice=None, sees: Path | None = None) -> LocalSide:
    avatar = load_avatar(path)
    from vcam.models.store import default_shape_basis

    def renderer(peer, fps):
        return PipelineRenderer(peer, fps, shown_in(sees))

    return LocalSide(avatar, path, describe_avatar(path, avatar), default_shape_basis(), source,
                     renderer, voice)


@pytest.mark.parametrize("loss", [0.0, 0.1])
def test_voice_and_face_come_out_together_in_the_receivers_mp4(avatars, vcam_home, tmp_path,
                                                               loss):
    """A sends a mouth opening at known instants and a click at each (a WAV, as its voice);
    B records A's avatar and voice. In B's mp4 the clicks sound within the broadcast
    threshold of the mouth openings (median), with 10% of A's landmark packets dropped too."""
    clicks, seen = tmp_path / "clicks.wav", tmp_path / "b.mp4"
    seconds = INSTANTS[-1] + 0.6
    write_clicks(clicks, seconds, INSTANTS)
    astro = load_avatar(avatars["astro"])
    sender = side(avatars["astro"], OpeningMouth(astro.neutral_landmarks, seconds),
                  VoiceSource(AudioInputSpec("file", str(clicks))))
    receiver = side(avatars["bob"], sees=seen)
    sending = CallSettings(faults=FaultSettings(drop=loss, seed=5), share_avatar=True)
    served, joined = asyncio.run(in_process_call(sender, receiver, sending, CallSettings()))
    assert not served.failed and not joined.failed, (served, joined)
    sound, start, rate = read_sound(seen)
    heard = click_times(sound, start, rate)
    pictures, times = read_pictures(seen)
    opened = mouth_open_times(pictures, times)
    offsets = sync_offsets(heard, opened)
    assert len(heard) >= len(INSTANTS) - 1 and len(offsets) >= len(INSTANTS) - 1, (heard, opened)
    print(f"loss {loss:.0%}: sound - picture offsets (ms)", [round(o * 1000) for o in offsets])
    assert abs(statistics.median(offsets)) <= SYNC_TOLERANCE_S, offsets
    assert joined.audio["received"]["delay_ms"] >= 50
    if loss:
        assert served.sent["injected_drops"] > 0


def test_the_audio_timeline_follows_the_landmark_clock_and_sets_the_delay():
    """A frame is due at its sender capture time on the landmarks' clock plus the delay,
    and the delay grows to cover audio that comes later than the fastest landmark packet."""

    class Jitter:
        clock_offset_us, delay_ms, minimum_delay_us = 1_000_000, None, 0

        def set_target_delay(self, milliseconds):
            self.delay_ms = milliseconds

    jitter = Jitter()
    sync = AudioSync(50.0, jitter)
    assert sync.due_us(0, 5_000_000) is None  # the peer's origin not known yet
    sync.set_origin(2_000_000)
    # Captured at 2.1 s (sender), here 110 ms after the fastest landmark's transit.
    due = sync.due_us(4800, 2_100_000 + 1_000_000 + 110_000 + 6_500)
    assert sync.delay_us >= 130_000 and jitter.delay_ms == sync.delay_us / 1000
    assert abs(due - (2_100_000 - 6_500 + 1_000_000 + sync.delay_us)) <= 1


def test_a_frame_a_peer_claims_is_due_minutes_ahead_is_refused():
    """A hostile or broken peer's clocks cannot make the outputs queue minutes of silence:
    a frame due more than MAX_PLAYOUT_DELAY_US after it arrived is not placed."""
    from vcam.net.audio import MAX_PLAYOUT_DELAY_US

    class Jitter:
        clock_offset_us, delay_ms, minimum_delay_us = 1_000_000, None, 0

        def set_target_delay(self, milliseconds):
            self.delay_ms = milliseconds

    sync = AudioSync(50.0, Jitter())
    sync.set_origin(2_000_000)
    arrival = 2_100_000 + 1_000_000 + 110_000 + 6_500
    first = sync.due_us(4800, arrival)
    ahead = 30 * 60 * SAMPLE_RATE  # 30 minutes of samples into the peer's stream, now
    assert sync.due_us(4800 + ahead, arrival + 20_000) is None
    assert sync.unplaced == 1 and sync.placed == 1
    # The next honest frame is placed as if the claim had never come.
    assert abs(sync.due_us(4800 + 960, arrival + 20_000) - (first + 20_000)) <= 1
    sync.set_origin(2_000_000 + 3_600_000_000)  # a peer whose origin jumps an hour
    assert sync.due_us(4800 + 1920, arrival + 40_000) is None
    assert MAX_PLAYOUT_DELAY_US >= 1_000_000  # far above any real play-out delay


@pytest.mark.parametrize("wraps", [1, -1, 2])
def test_the_audio_timeline_survives_a_sender_clock_past_the_packets_32_bits(wraps):
    """Landmark packets carry capture times modulo 2**32 µs (a sender up over 71.6 min),
    the audio clock all of it: the landmarks' offset then differs by whole wraps, and the
    sound must still be due at the same place (not hours away)."""

    class Jitter:
        clock_offset_us, delay_ms, minimum_delay_us = 1_000_000 + wraps * 2**32, None, 0

        def set_target_delay(self, milliseconds):
            self.delay_ms = milliseconds

    sync = AudioSync(50.0, Jitter())
    origin = 5 * 2**32 + 2_000_000
    sync.set_origin(origin)
    arrival = origin + 100_000 + 1_000_000 + 110_000 + 6_500
    due = sync.due_us(4800, arrival)
    assert abs(due - (origin + 100_000 - 6_500 + 1_000_000 + sync.delay_us)) <= 1
    assert sync.delay_us < 200_000


def test_two_processes_send_each_other_sound_files_and_record_them(call_homes, avatars,
                                                                   vcam_home, tmp_path):
    """`vcam call serve` in a subprocess and this process joining, each sending a WAV as its
    voice: both mp4s hold the other's voice as long as their picture, and each report gives
    payload and wire figures per stream, the wire ones larger."""
    a_sees, b_sees, clicks = tmp_path / "a.mp4", tmp_path / "b.mp4", tmp_path / "voice.wav"
    write_clicks(clicks, 4.0, (0.5, 1.5, 2.5, 3.5))
    serve, listening = serve_process(
        ["--input", "demo", "--audio-input", str(clicks), "--loop", "--share-avatar",
         "--size", f"{WIDTH}x{HEIGHT}", "--sink", f"file:{a_sees}"], call_homes["a"])
    from vcam.net.media import CapturedLandmarks, SendSettings
    from vcam.runtime.session import InputSpec

    bob = load_avatar(avatars["bob"])
    me = side(avatars["bob"], CapturedLandmarks(InputSpec.parse("demo"), bob,
                                                SendSettings(fps=FPS)),
              VoiceSource(AudioInputSpec("file", str(clicks))), b_sees)
    settings = CallSettings(max_seconds=3.0, share_avatar=True)
    try:
        joined = asyncio.run(join_call(me, settings, listening["url"], listening["token"],
                                       SignalingSettings(), LOOPBACK_ICE, asyncio.Event(),
                                       lambda message: None))
        assert serve.finish(60) == 0, "\n".join(serve.output)
    finally:
        serve.kill()
    served = serve.report()
    for report, seen in ((served, a_sees), (joined.to_dict(), b_sees)):
        sound, start, rate = read_sound(seen)
        _, times = read_pictures(seen)
        assert rate == 48000 and len(times) > 30
        assert abs(len(sound) / rate - (times[-1] + 1 / FPS)) < 0.1, (len(sound), times[-1])
        assert len(click_times(sound, start, rate)) >= 2
        wire = report["wire"]
        for stream in ("landmarks", "voice"):
            rates = wire[stream]
            assert 0 < rates["sent_kbit_per_s"] < rates["sent_wire_kbit_per_s"], wire
            assert 0 < rates["received_kbit_per_s"] < rates["received_wire_kbit_per_s"], wire
        streams = sum(wire[stream]["sent_wire_kbit_per_s"] for stream in ("landmarks", "voice"))
        assert wire["transport"]["sent_wire_kbit_per_s"] >= 0.95 * streams, wire
        assert report["audio"]["sent"]["packets"] > 100
    print(json.dumps(served["wire"]), json.dumps(joined.wire))
    assert DATA_CHANNEL_BYTES == 65 and VOICE_PACKET_BYTES == 34


def test_without_an_input_device_the_call_refuses_with_a_one_line_hint(avatars, tmp_path,
                                                                     capsys):
    code = main(["call", "serve", "--avatar", str(avatars["astro"]), "--input", "demo",
                 "--audio-input", "no-such-microphone", "--sink", f"file:{tmp_path / 'x.mp4'}",
                 "--port", "0"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in error and "Traceback" not in error
    assert "--audio-input none" in error and "no audio input device" in error
    assert not (tmp_path / "x.mp4").exists()


def test_a_missing_sound_file_is_a_one_line_error(tmp_path):
    with pytest.raises(Exception, match="no such file"):
        AudioInputSpec.parse(str(tmp_path / "voice.wav"))


def test_without_an_output_device_the_call_says_so_once():
    said = []
    speaker = SpeakerOutput.open(said.append)
    if speaker is not None:
        speaker.close()
        pytest.skip("this machine has a sound output device")
    assert len(said) == 1 and "goes on without the peer's voice" in said[0]


@pytest.mark.parametrize(("name", "size", "message"), [
    ("call.avi", (320, 240), "writes .mp4"),
    ("call.mp4", (321, 240), "even width"),
])
def test_a_call_recording_is_refused_before_the_call_when_h264_cannot_hold_it(
        name, size, message, tmp_path):
    from vcam.errors import UserError
    from vcam.net.recording import CallRecording

    with pytest.raises(UserError, match=message):
        CallRecording(tmp_path / name, *size, 30.0).check()
    existing = tmp_path / "kept.mp4"
    existing.write_bytes(b"x")
    with pytest.raises(UserError, match="never replaces"):
        CallRecording(existing, 320, 240, 30.0).check()


def test_a_failing_voice_output_is_dropped_and_the_others_play_on():
    import av

    from vcam.net.audio import VoiceReceiver

    class Broken:
        def play(self, samples, due_us):
            raise OSError("disk full")

    class Kept:
        def __init__(self):
            self.played = []

        def play(self, samples, due_us):
            self.played.append(len(samples))

    sync = AudioSync(50.0)
    sync.set_origin(0)
    kept, broken = Kept(), Broken()
    receiver = VoiceReceiver(None, sync, [broken, kept])
    for index in range(3):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 2 * 960), np.int16), format="s16",
                                           layout="stereo")
        frame.sample_rate, frame.pts = SAMPLE_RATE, index * 960
        receiver.take(frame, 1_000_000 + index * 20_000)
    assert kept.played == [960, 960, 960] and receiver.outputs == [kept]
    assert receiver.output_errors == ["Broken: disk full"]
