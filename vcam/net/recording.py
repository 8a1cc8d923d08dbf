"""A call's mp4 recording: the peer's avatar and voice in one file, in sync.

The runtime's file sink writes frames at a fixed rate, which is right for `vcam run` (every
frame of the input is rendered) but not for a call, whose renderer skips landmarks when it
falls behind and whose voice must line up with the face. :class:`CallRecording` is the
call's ``file:PATH.mp4`` sink: each video frame is stamped with its ``media_time`` (the
monotonic time its landmarks were played out) and each voice frame with the time it was due
(``play``, an audio output of :mod:`vcam.net.audio`), both relative to when the recording
opened. Video is H.264 (libx264, variable frame rate), sound AAC 48 kHz mono; gaps in the
voice (none sent, a lost packet) are silence. Sound comes a playout delay before it is due
and waits until then, as it would in a speaker, so the recording never runs ahead of the
picture; at the end the sound is padded or cut to the video's length. The file is written
aside and renamed into place when it is complete.
"""

from __future__ import annotations

import fractions
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from vcam.errors import UserError
from vcam.net.audio import SAMPLE_RATE
from vcam.runtime.file_sink import check_output_file
from vcam.runtime.frames import Frame, check_canvas

VIDEO_TIME_BASE = fractions.Fraction(1, 1000)
AAC_FRAME = 1024


class CallRecording:
    """The peer, seen and heard, into an mp4 (see the module's text)."""

    name = "file"
    steady = False

    def __init__(self, path: Path, width: int, height: int, fps: float) -> None:
        self.path, self.width, self.height, self.fps = path, width, height, fps
        self.partial = path.with_name(f".{path.name}.partial.mp4")
        self.lock = threading.Lock()
        self.container: Any = None
        self.video: Any = None
        self.audio: Any = None
        self.opened_at = 0.0
        self.last_video_ms = -1
        self.audio_written = 0
        self.pending = np.zeros(0, np.int16)
        self.frames_written = 0

    def check(self) -> None:
        """The file sink's checks (an .mp4 at an even size), and no replacing at all."""
        if self.path.exists():
            raise UserError(f"--sink file:{self.path} exists (a call never replaces a file, "
                            "its --input included): choose another name")
        check_output_file(self.path, self.width, self.height, force=False)

    def __enter__(self) -> CallRecording:
        import av

        self.check()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            container = av.open(str(self.partial), "w", format="mp4")
        except Exception as error:
            raise UserError(f"cannot write video to {self.path} ({error})") from None
        video = container.add_stream("libx264", rate=max(1, round(self.fps)))
        video.width, video.height, video.pix_fmt = self.width, self.height, "yuv420p"
        video.time_base = VIDEO_TIME_BASE
        video.codec_context.time_base = VIDEO_TIME_BASE
        video.options = {"preset": "ultrafast", "crf": "20"}
        audio = container.add_stream("aac", rate=SAMPLE_RATE)
        audio.layout = "mono"
        self.container, self.video, self.audio = container, video, audio
        self.opened_at = time.monotonic()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self.lock:
            if self.container is None:
                return
            try:
                end = (self.last_video_ms + 1000 / self.fps) / 1000
                self.pad_audio_to(end)  # a recording without pictures keeps all its sound
                self.write_pending(final=True, limit=round(end * SAMPLE_RATE)
                                   if self.frames_written else None)
                self.flush()
                self.container.close()
                self.partial.replace(self.path)
            finally:
                self.container = None
                self.partial.unlink(missing_ok=True)

    # -- video ------------------------------------------------------------------------

    def send(self, canvas: np.ndarray, frame: Frame, stats: Any) -> None:
        import av

        check_canvas(canvas, self.width, self.height)
        with self.lock:
            if self.container is None:
                raise RuntimeError(f"{self.path} is not open")
            pts = round((frame.media_time - self.opened_at) * 1000)
            if pts <= self.last_video_ms:
                return  # the same instant again, or before the recording began
            picture = av.VideoFrame.from_ndarray(canvas, format="rgb24")
            picture.pts, picture.time_base = pts, VIDEO_TIME_BASE
            self.container.mux(self.video.encode(picture))
            self.last_video_ms = pts
            self.frames_written += 1

    # -- sound ------------------------------------------------------------------------

    def play(self, samples: np.ndarray, due_us: int) -> None:
        """The peer's voice, due at ``due_us`` (monotonic µs): silence before it if it comes
        after a gap, an overlap with what is written cut off."""
        with self.lock:
            if self.container is None:
                return
            position = round((due_us / 1e6 - self.opened_at) * SAMPLE_RATE)
            end = self.audio_written + len(self.pending)
            if position > end:
                self.pending = np.concatenate([self.pending,
                                               np.zeros(position - end, np.int16)])
            elif position < end:
                samples = samples[end - position:]
            self.pending = np.concatenate([self.pending, samples.astype(np.int16)])
            self.write_pending(limit=round((time.monotonic() - self.opened_at) * SAMPLE_RATE))

    def pad_audio_to(self, seconds: float) -> None:
        missing = round(seconds * SAMPLE_RATE) - self.audio_written - len(self.pending)
        if missing > 0:
            self.pending = np.concatenate([self.pending, np.zeros(missing, np.int16)])

    def write_pending(self, final: bool = False, limit: int | None = None) -> None:
        """Encode the pending sound in AAC frames up to sample ``limit`` (all without
        one); ``final``: cut what lies past ``limit`` and write the last partial frame."""
        import av

        if final and limit is not None:
            self.pending = self.pending[:max(0, limit - self.audio_written)]
        while len(self.pending) >= AAC_FRAME or (final and len(self.pending)):
            if not final and limit is not None and self.audio_written + AAC_FRAME > limit:
                break
            chunk, self.pending = self.pending[:AAC_FRAME], self.pending[AAC_FRAME:]
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16",
                                               layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts, frame.time_base = self.audio_written, fractions.Fraction(1, SAMPLE_RATE)
            self.audio_written += len(chunk)
            self.container.mux(self.audio.encode(frame))

    def flush(self) -> None:
        self.container.mux(self.video.encode(None))
        self.container.mux(self.audio.encode(None))
