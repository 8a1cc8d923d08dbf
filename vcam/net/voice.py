"""The voice in a call's peer connection and session (the parts are :mod:`vcam.net.audio`'s).

:class:`AudioLink` puts one audio transceiver (Opus only) on the peer connection before the
offer or answer is made, sending one's voice when there is one and taking the peer's track.
:class:`VoiceCall` runs the voice during the call: it starts one's voice at the instant of
the first landmark sample (so a file's sound and a video's face start together), sends the
voice's origin to the peer (``audio_clock``), and plays the peer's voice on the landmarks'
timeline into the audio outputs (speakers, recordings).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from vcam.net.audio import (
    AudioInputSpec,
    AudioOutput,
    AudioSync,
    DelayTarget,
    SpeakerOutput,
    VoiceReceiver,
    VoiceSource,
    monotonic_us,
    prefer_opus,
    voice_track,
)
from vcam.net.send import LandmarkSample, LandmarkSource


class AudioLink:
    """The call's audio transceiver on a peer connection."""

    def __init__(self, source: VoiceSource | None) -> None:
        self.source = source
        self.remote_track: Any = None

    def offer(self, pc: Any) -> None:
        """Before the offer: a transceiver sending one's voice (or only receiving)."""
        pc.on("track", self.on_track)
        if self.source is not None:
            transceiver = pc.addTransceiver(voice_track(self.source), direction="sendrecv")
        else:
            transceiver = pc.addTransceiver("audio", direction="recvonly")
        prefer_opus(transceiver)

    def listen(self, pc: Any) -> None:
        """Before the offer is set: take the peer's track when it comes."""
        pc.on("track", self.on_track)

    def answer(self, pc: Any) -> None:
        """After the offer is set, before the answer: one's voice on the offered audio."""
        if self.source is not None:
            pc.addTrack(voice_track(self.source))
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "audio":
                prefer_opus(transceiver)

    def on_track(self, track: Any) -> None:
        if track.kind == "audio" and self.remote_track is None:
            self.remote_track = track


class FirstSampleTap:
    """A landmark source that calls ``on_first(capture_us)`` with its first sample's capture
    time (from the sender's thread), and is otherwise the source it wraps."""

    def __init__(self, source: LandmarkSource, on_first: Callable[[int], None]) -> None:
        self.source = source
        self.on_first = on_first
        self.fps = source.fps

    def samples(self, stop: threading.Event) -> Iterator[LandmarkSample]:
        first = True
        for sample in self.source.samples(stop):
            if first:
                first = False
                self.on_first(sample.capture_us)
            yield sample

    def close(self) -> None:
        self.source.close()


class VoiceCall:
    """The voice of one call session. ``send_clock(origin_us)`` sends the ``audio_clock``
    message; ``log`` says what the user should know (once)."""

    def __init__(self, link: AudioLink | None, base_delay_ms: float,
                 send_clock: Callable[[int], object]) -> None:
        self.link = link
        self.base_delay_ms = base_delay_ms
        self.send_clock = send_clock
        self.sync = AudioSync(base_delay_ms)
        self.receiver: VoiceReceiver | None = None
        self.task: asyncio.Task | None = None
        self.peer_origin_us: int | None = None
        self.own_outputs: list[Any] = []

    @property
    def source(self) -> VoiceSource | None:
        return self.link.source if self.link is not None else None

    def landmark_source(self, source: LandmarkSource | None,
                        loop: asyncio.AbstractEventLoop) -> LandmarkSource | None:
        """The landmark source to send from: one whose first sample starts the voice; with
        no landmark source the voice starts now."""
        voice = self.source
        if voice is None:
            return source
        if source is None:
            self.start_voice(loop, monotonic_us())
            return None

        def on_first(capture_us: int) -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.start_voice, loop, capture_us)

        return FirstSampleTap(source, on_first)

    def start_voice(self, loop: asyncio.AbstractEventLoop, origin_us: int) -> None:
        voice = self.source
        if voice is None or voice.thread.is_alive() or voice.stop.is_set():
            return
        voice.on_origin = self.send_clock
        voice.start(loop, origin_us)

    def on_peer_clock(self, origin_us: int) -> None:
        self.peer_origin_us = origin_us
        self.sync.set_origin(origin_us)

    @property
    def peer_sends(self) -> bool:
        return self.link is not None and self.link.remote_track is not None

    def receive(self, jitter: DelayTarget | None, recordings: list[AudioOutput],
                own_outputs: Callable[[], list[AudioOutput]]) -> None:
        """Play the peer's voice into ``recordings`` and the outputs ``own_outputs`` opens
        (closed with the call), on ``jitter``'s timeline."""
        self.own_outputs = own_outputs()
        self.sync.jitter = jitter
        self.receiver = VoiceReceiver(self.link.remote_track, self.sync,
                                      [*recordings, *self.own_outputs])
        self.task = asyncio.ensure_future(self.receiver.run())

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        if self.source is not None:
            await asyncio.to_thread(self.source.close)
        for output in self.own_outputs:
            close = getattr(output, "close", None)
            if close is not None:
                close()

    def report(self, seconds: float) -> dict:
        """Frames and CPU time each way (CPU as a share of one core over the call)."""
        source, receiver, sync = self.source, self.receiver, self.sync
        report: dict[str, Any] = {}
        if source is not None:
            report["sent"] = {"packets": source.sent, "dropped": source.dropped,
                              "cpu_percent": 100 * source.cpu_seconds / seconds
                              if seconds > 0 else 0.0, "error": source.error}
        if receiver is not None:
            report["received"] = {
                "frames": receiver.frames, "seconds": receiver.samples / 48000,
                "unplaced": sync.unplaced, "late": sync.late,
                "delay_ms": sync.delay_us / 1000, "output_errors": receiver.output_errors,
                "cpu_percent": 100 * receiver.cpu_seconds / seconds if seconds > 0 else 0.0}
        return report


def voice_source(text: str, loop_file: bool = False) -> VoiceSource | None:
    """``--audio-input``: the voice source (None for 'none'); ``UserError`` when the input
    cannot be used (no input device: the message suggests ``--audio-input none``)."""
    spec = AudioInputSpec.parse(text)
    return None if spec.kind == "none" else VoiceSource(spec, loop_file)


def speakers(log: Callable[[str], None]) -> list[AudioOutput]:
    """The default output device, or nothing (``log`` says why, once)."""
    speaker = SpeakerOutput.open(log)
    return [] if speaker is None else [speaker]


def builtin_avatar_path(landmarks: str = "dlib") -> Path:
    """The built-in avatar's bundle (the astronaut, enrolled with the default model on first
    use and cached), as `vcam run` uses it without --avatar."""
    from vcam.landmarks.detector import create_detector
    from vcam.runtime.session import builtin_avatar

    entry = builtin_avatar(None, lambda: create_detector(landmarks, "cpu"))
    assert entry.path is not None
    return entry.path
