"""The voice of a call: one's microphone (or a sound file) out as Opus, the peer's in.

Sending (:class:`VoiceSource`, :class:`VoiceTrack`): a thread reads the input with PyAV (the
system's default input device through PulseAudio or ALSA on Linux, AVFoundation on macOS, a
named DirectShow device on Windows; or a sound file, played in real time), resamples it to
48 kHz mono and encodes 20 ms Opus packets itself (``VOICE_BITRATE``, the VoIP mode), which
the track hands to aiortc as ready-made packets: aiortc's own Opus encoder would send 96
kbit/s stereo. Packet k holds the samples captured from ``origin_us + k * 20 ms`` on the
sender's monotonic clock, the clock the landmark packets are stamped with; the origin goes to
the peer on the control channel (``audio_clock``), so both streams share one timeline.

Receiving (:class:`VoiceReceiver`): frames from the remote track are placed on the landmark
jitter buffer's timeline (:class:`AudioSync`): a frame captured at sender time ``s`` plays
at ``s + offset + delay``, ``offset`` being the jitter buffer's clock offset and ``delay`` its
target delay, which follows what the audio needs (aiortc's own audio buffer holds about four
packets) so that voice and face come out together. Each frame then goes to every audio
output: the speakers (:class:`SpeakerOutput`, through sounddevice; without PortAudio or an
output device the call goes on silent and says so once) and the mp4 recordings.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vcam.errors import UserError
from vcam.net.codec import TIMESTAMP_MODULUS, unwrap_counter

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960  # 20 ms, WebRTC's usual Opus frame
VOICE_BITRATE = 24000
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
# libopus delays its output by its lookahead (312 samples at 48 kHz, 6.5 ms).
OPUS_LOOKAHEAD_US = 312 * 1_000_000 // SAMPLE_RATE
# Packets waiting for aiortc at most (a stalled connection drops the oldest).
QUEUED_PACKETS = 50
# The play-out delay keeps this much margin over the latest audio frame seen recently, and
# recent means the last DELAY_WINDOW frames (2 s); it shrinks by DELAY_DECAY_US a frame.
DELAY_MARGIN_US = 20_000
DELAY_WINDOW = 100
DELAY_DECAY_US = 500
# A frame due later than this after it arrived is refused (counted as unplaced): the peer's
# clocks say so, and honouring them would queue that much silence before it.
MAX_PLAYOUT_DELAY_US = 2_000_000
AUDIO_SUFFIXES = {".wav", ".mp3", ".ogg", ".opus", ".flac", ".m4a", ".aac", ".mp4", ".mkv",
                  ".webm", ".mov"}
NO_INPUT_HINT = ("pass --audio-input none for a call without your voice, or --audio-input "
                 "FILE to send a sound file")


def monotonic_us() -> int:
    return time.monotonic_ns() // 1000


# ---------------------------------------------------------------------------------------
# Input


@dataclass(frozen=True)
class AudioInputSpec:
    """``--audio-input``: ``kind`` "device" (``name`` None: the default one), "file" or
    "none"."""

    kind: str
    name: str | None = None

    @classmethod
    def parse(cls, text: str) -> AudioInputSpec:
        if text == "none":
            return cls("none")
        if text in ("", "default"):
            return cls("device")
        path = Path(text)
        if path.is_file():
            return cls("file", text)
        if path.suffix.lower() in AUDIO_SUFFIXES or path.parent != Path("."):
            raise UserError(f"--audio-input {text}: no such file")
        return cls("device", text)


def capture_formats(platform: str = sys.platform) -> tuple[tuple[str, str], ...]:
    """(PyAV input format, the default device's name) to try, in order, on ``platform``."""
    if platform.startswith("linux"):
        return (("pulse", "default"), ("alsa", "default"))
    if platform == "darwin":
        return (("avfoundation", ":0"),)
    if platform.startswith("win"):
        return (("dshow", ""),)
    return ()


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Keeps what C libraries (ALSA) print while a device is probed off the terminal."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def open_audio_device(name: str | None) -> Any:
    """The input device ``name`` (None: the default) as a PyAV container; ``UserError`` with
    the ``none`` hint when there is none."""
    import av

    failures = []
    for format_name, default in capture_formats():
        if format_name not in av.formats_available:
            continue
        device = name if name is not None else default
        if not device:
            failures.append(f"{format_name} needs a device name, e.g. audio=Microphone")
            continue
        try:
            with native_stderr_silenced():
                return av.open(device, format=format_name)
        except Exception as error:
            failures.append(f"{format_name}: {one_line(error)}")
    shown = name or "default"
    reason = "; ".join(failures) if failures else "no audio capture on this system"
    raise UserError(f"--audio-input {shown}: no audio input device ({reason}); {NO_INPUT_HINT}")


def open_audio_file(path: str) -> Any:
    import av

    try:
        container = av.open(path)
    except Exception as error:
        raise UserError(f"--audio-input {path}: cannot read it as sound ({error})") from None
    if not container.streams.audio:
        container.close()
        raise UserError(f"--audio-input {path}: the file has no sound")
    return container


def opus_encoder() -> Any:
    """libopus at ``VOICE_BITRATE``, 48 kHz mono, VoIP mode."""
    import av

    codec = av.CodecContext.create("libopus", "w")
    codec.bit_rate = VOICE_BITRATE
    codec.format = "s16"
    codec.layout = "mono"
    codec.sample_rate = SAMPLE_RATE
    codec.time_base = TIME_BASE
    codec.options = {"application": "voip"}
    return codec


class VoiceSource:
    """One's voice as Opus packets, from a thread. The input is opened (file) or probed
    (device) at once, so a missing one is a ``UserError`` before the call connects; nothing
    is read before ``start``. ``start(loop, origin_us)``: a file's first sample counts as
    captured at ``origin_us`` and plays in real time from then; a device is opened anew and
    its origin is when its first samples came. ``on_origin(origin_us)`` is called (on the
    loop) once the origin is known. ``cpu_seconds``: the thread's CPU time (read, resample,
    encode)."""

    def __init__(self, spec: AudioInputSpec, loop_file: bool = False) -> None:
        if spec.kind == "none":
            raise ValueError("no voice source for --audio-input none")
        self.spec = spec
        self.loop_file = loop_file
        self.container = open_audio_file(spec.name) if spec.kind == "file" else None
        if self.container is None:
            open_audio_device(spec.name).close()
        self.stop = threading.Event()
        self.packets: asyncio.Queue[Any] = asyncio.Queue()  # bound to the loop on first use
        self.loop: asyncio.AbstractEventLoop | None = None
        self.origin_us: int | None = None
        self.on_origin: Callable[[int], None] = lambda origin: None
        self.sent = 0
        self.dropped = 0
        self.cpu_seconds = 0.0
        self.error: str | None = None
        self.thread = threading.Thread(target=self.run, name="vcam-call-voice", daemon=True)

    def start(self, loop: asyncio.AbstractEventLoop, origin_us: int) -> None:
        self.loop = loop
        if self.container is not None:
            self.set_origin(origin_us)
        self.thread.start()

    def run(self) -> None:
        started_cpu = time.thread_time()
        try:
            self.encode_all()
        except Exception as error:  # a broken input ends the voice, never the call
            self.error = f"{type(error).__name__}: {error}"
        finally:
            self.cpu_seconds = time.thread_time() - started_cpu
            self.hand_over(None)

    def encode_all(self) -> None:
        import av

        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE,
                                      frame_size=FRAME_SAMPLES)
        encoder = opus_encoder()
        for chunk in self.chunks(resampler):
            if self.stop.is_set():
                return
            for packet in encoder.encode(chunk):
                self.send(packet)

    def chunks(self, resampler: Any) -> Iterator[Any]:
        """20 ms frames of the input, each when it is due (a file) or comes (a device)."""
        samples = 0
        for frame in self.decoded():
            for chunk in resampler.resample(frame):
                if self.container is not None and self.wait_until(samples + chunk.samples):
                    return
                chunk.pts = samples
                samples += chunk.samples
                yield chunk

    def decoded(self) -> Iterator[Any]:
        if self.container is None:
            yield from self.device_frames()
            return
        while True:
            yield from self.container.decode(audio=0)
            if not self.loop_file or self.stop.is_set():
                return
            self.container.seek(0)

    def device_frames(self) -> Iterator[Any]:
        device = open_audio_device(self.spec.name)
        try:
            first = True
            for frame in device.decode(audio=0):
                if first:  # its origin: when the first samples were taken
                    first = False
                    self.set_origin(monotonic_us() - frame.samples * 1_000_000 // frame.rate)
                yield frame
                if self.stop.is_set():
                    return
        finally:
            device.close()

    def set_origin(self, origin_us: int) -> None:
        self.origin_us = origin_us
        self.call_on_loop(self.on_origin, origin_us)

    def wait_until(self, samples: int) -> bool:
        """Wait until a file's ``samples`` are due; True if stopped meanwhile."""
        due_us = self.origin_us + samples * 1_000_000 // SAMPLE_RATE
        return self.stop.wait(max(0.0, (due_us - monotonic_us()) / 1e6))

    def send(self, packet: Any) -> None:
        packet.pts = self.sent * FRAME_SAMPLES
        packet.time_base = TIME_BASE
        self.sent += 1
        self.hand_over(packet)

    def hand_over(self, packet: Any) -> None:
        self.call_on_loop(self.enqueue, packet)

    def enqueue(self, packet: Any) -> None:
        queue = self.packets
        if packet is not None and queue.qsize() >= QUEUED_PACKETS:
            queue.get_nowait()
            self.dropped += 1
        queue.put_nowait(packet)

    def call_on_loop(self, function: Callable[[Any], None], argument: Any) -> None:
        if self.loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
                self.loop.call_soon_threadsafe(function, argument)

    async def next_packet(self) -> Any:
        """The next Opus packet (waiting until ``start``); None once the input ended or
        the source closed."""
        return await self.packets.get()

    def close(self) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(2.0)
        if self.container is not None:
            self.container.close()
            self.container = None


def voice_track(source: VoiceSource) -> Any:
    """An aiortc audio track sending ``source``'s Opus packets as they are."""
    from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

    class VoiceTrack(MediaStreamTrack):
        kind = "audio"

        async def recv(self) -> Any:
            packet = await source.next_packet()
            if packet is None:
                self.stop()
                raise MediaStreamError
            return packet

    return VoiceTrack()


def prefer_opus(transceiver: Any) -> None:
    """Only Opus on this audio transceiver (the voice is sent pre-encoded as Opus)."""
    from aiortc import RTCRtpSender

    codecs = RTCRtpSender.getCapabilities("audio").codecs
    transceiver.setCodecPreferences([codec for codec in codecs
                                     if codec.mimeType.lower() == "audio/opus"])


# ---------------------------------------------------------------------------------------
# Receiving


class AudioOutput(Protocol):
    """Where the peer's voice goes: ``play`` gets 48 kHz mono int16 samples and the time
    they are due (receiver's monotonic µs); it must not block."""

    def play(self, samples: np.ndarray, due_us: int) -> None: ...


class DelayTarget(Protocol):
    """The landmark jitter buffer, as far as the audio uses it."""

    @property
    def clock_offset_us(self) -> int | None: ...

    @property
    def minimum_delay_us(self) -> int: ...

    def set_target_delay(self, milliseconds: float) -> None: ...


class AudioSync:
    """Places the peer's audio on the landmarks' timeline and makes the jitter buffer's
    delay follow the audio's. ``origin_us``: the peer's audio origin (its ``audio_clock``
    message); until it came frames cannot be placed. The clock offset is the jitter buffer's
    (the fastest landmark packet's), or the audio's own while no landmark came; the delay is
    at least ``base_delay_ms``, at least the recent audio's lateness over that offset plus
    a margin, and at least what the landmark packets need (``minimum_delay_us``)."""

    def __init__(self, base_delay_ms: float, jitter: DelayTarget | None = None) -> None:
        self.base_delay_us = round(base_delay_ms * 1000)
        self.jitter = jitter
        self.origin_us: int | None = None
        self.own_offset_us: int | None = None
        self.lateness: deque[int] = deque(maxlen=DELAY_WINDOW)
        self.delay_us = self.base_delay_us
        self.placed = 0
        self.unplaced = 0
        self.late = 0

    def set_origin(self, origin_us: int) -> None:
        self.origin_us = origin_us

    def due_us(self, pts: int, arrival_us: int) -> int | None:
        """When the frame ``pts`` samples into the peer's stream, here at ``arrival_us``, is
        due (receiver µs); None while the peer's origin is unknown."""
        if self.origin_us is None:
            self.unplaced += 1
            return None
        sender_us = self.origin_us + pts * 1_000_000 // SAMPLE_RATE - OPUS_LOOKAHEAD_US
        own = arrival_us - sender_us
        if self.own_offset_us is not None and own < self.own_offset_us - MAX_PLAYOUT_DELAY_US:
            self.unplaced += 1  # from far ahead of every frame before it: not believed
            return None
        self.own_offset_us = own if self.own_offset_us is None else min(self.own_offset_us, own)
        landmark_offset = self.jitter.clock_offset_us if self.jitter is not None else None
        # Landmark packets carry capture times modulo 2**32 µs (71.6 min of the sender's
        # clock), the audio clock message all of it: the same offset, up to that modulus.
        offset = (self.own_offset_us if landmark_offset is None else unwrap_counter(
            landmark_offset % TIMESTAMP_MODULUS, self.own_offset_us, TIMESTAMP_MODULUS))
        self.lateness.append(arrival_us - (sender_us + offset))
        self.follow(max(self.lateness) + DELAY_MARGIN_US)
        due = sender_us + offset + self.delay_us
        if due - arrival_us > MAX_PLAYOUT_DELAY_US:
            self.unplaced += 1
            return None
        self.placed += 1
        self.late += due < arrival_us
        return due

    def follow(self, needed_us: int) -> None:
        floor = self.jitter.minimum_delay_us if self.jitter is not None else 0
        wanted = max(self.base_delay_us, needed_us, floor)
        self.delay_us = wanted if wanted > self.delay_us else max(wanted,
                                                                 self.delay_us - DELAY_DECAY_US)
        if self.jitter is not None:
            self.jitter.set_target_delay(self.delay_us / 1000)


def mono_int16(frame: Any) -> np.ndarray:
    """A decoded frame (aiortc gives 48 kHz s16 stereo, interleaved) as mono int16."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        samples = data.astype(np.int32).mean(axis=0)
    else:
        samples = data.reshape(-1, channels).astype(np.int32).mean(axis=1)
    return samples.astype(np.int16)


class VoiceReceiver:
    """Reads the peer's voice from the remote track (on the loop) and hands each frame, with
    its due time, to the outputs. Counts frames and the CPU time spent decoding and
    passing them on. An output that fails is dropped (its error kept for the report); the
    others go on playing."""

    def __init__(self, track: Any, sync: AudioSync, outputs: list[AudioOutput]) -> None:
        self.track = track
        self.sync = sync
        self.outputs = outputs
        self.frames = 0
        self.samples = 0
        self.cpu_seconds = 0.0
        self.output_errors: list[str] = []

    async def run(self) -> None:
        from aiortc.mediastreams import MediaStreamError

        while True:
            try:
                frame = await self.track.recv()
            except (MediaStreamError, asyncio.CancelledError):
                return
            started = time.thread_time()
            self.take(frame, monotonic_us())
            self.cpu_seconds += time.thread_time() - started

    def take(self, frame: Any, arrival_us: int) -> None:
        due = self.sync.due_us(int(frame.pts or 0), arrival_us)
        if due is None:
            return
        samples = mono_int16(frame)
        self.frames += 1
        self.samples += len(samples)
        for output in list(self.outputs):
            try:
                output.play(samples, due)
            except Exception as error:  # one broken output must not silence the others
                self.outputs.remove(output)
                self.output_errors.append(f"{type(output).__name__}: {one_line(error)}")


class SpeakerOutput:
    """The default output device through sounddevice (PortAudio): samples are queued to
    start when due (silence fills an early start; samples more than ``MAX_AHEAD_S`` behind
    are dropped). ``open`` returns None, after ``log`` said why once, when there is no
    PortAudio or no output device: the call goes on without sound here."""

    MAX_AHEAD_S = 0.3

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.lock = threading.Lock()
        self.queued = np.zeros(0, np.int16)
        self.queued_until_us: int | None = None
        self.dropped = 0

    @classmethod
    def open(cls, log: Callable[[str], None]) -> SpeakerOutput | None:
        try:
            import sounddevice
        except (ImportError, OSError) as error:
            log(f"no sound output here ({one_line(error)}): the call goes on "
                "without the peer's voice (install PortAudio, e.g. libportaudio2)")
            return None
        speaker = cls(None)
        try:
            stream = sounddevice.OutputStream(samplerate=SAMPLE_RATE, channels=1,
                                              dtype="int16", callback=speaker.fill)
            stream.start()
        except Exception as error:
            log(f"no sound output device ({one_line(error)}): the call goes on "
                "without the peer's voice")
            return None
        speaker.stream = stream
        return speaker

    def play(self, samples: np.ndarray, due_us: int) -> None:
        with self.lock:
            now = monotonic_us()
            end = self.queued_until_us if self.queued_until_us is not None else now
            end = max(end, now)
            gap = (due_us - end) * SAMPLE_RATE // 1_000_000
            if gap > 0:
                self.queued = np.concatenate([self.queued, np.zeros(gap, np.int16)])
            elif -gap > self.MAX_AHEAD_S * SAMPLE_RATE:
                self.dropped += len(samples)
                return
            self.queued = np.concatenate([self.queued, samples])
            self.queued_until_us = now + len(self.queued) * 1_000_000 // SAMPLE_RATE

    def fill(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        with self.lock:
            count = min(frames, len(self.queued))
            outdata[:count, 0] = self.queued[:count]
            outdata[count:, 0] = 0
            self.queued = self.queued[count:]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stream.stop()
            self.stream.close()
