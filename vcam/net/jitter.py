"""The receiver's jitter buffer: decoded landmark frames in, a steady stream out.

The network thread ``push``es frames as they arrive (in any order); the render thread asks
``frame_at`` for the landmarks to show at a playout time. Playout runs ``target_delay_ms``
behind the sender's capture clock mapped onto the receiver's clock. The two clocks are not
assumed to agree: their offset is the minimum of (arrival time - capture time) over the
recent arrivals, i.e. the offset seen by the fastest packet, so queueing delay does not
inflate it and slow clock drift is followed.

At a playout time between two frames the landmarks are interpolated linearly; across a gap
of up to ``max_missing_frames`` lost frames (and ``max_gap_ms``) too, which conceals short
losses; a longer gap, or no newer frame yet, holds the last frame. Each result says which
happened. Memory is bounded (``capacity`` frames and a fixed window of offset samples), and
a lock makes ``push`` and ``frame_at`` safe to call from different threads.

Frames that come several to a packet (``vcam.net.packing``) arrive up to a packet interval
after the fastest one: ``cover_packet`` raises the delay to at least that interval (plus a
margin), so playout always holds the frame after the one it shows and interpolates; and a
whole lost packet is interpolated across like a few lost frames.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_right
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import numpy as np

from vcam.net.codec import LandmarkFrame

# After this many late frames in a row the sender is taken to have restarted.
RESYNC_AFTER_LATE = 30
# Packets of several frames: the delay covers the longest of the last PACKET_WINDOW packets
# (its frames and the interval to the next one) plus PACKET_MARGIN_US for network jitter.
PACKET_WINDOW = 50
PACKET_MARGIN_US = 30_000


def monotonic_us() -> int:
    """The receiver's clock: monotonic microseconds."""
    return time.monotonic_ns() // 1000


@dataclass(frozen=True)
class JitterSettings:
    """``target_delay_ms``: how far behind the (offset-corrected) capture clock playout runs;
    gaps of at most ``max_missing_frames`` lost frames spanning at most ``max_gap_ms`` are
    interpolated, longer ones held; ``capacity`` frames are kept at most; the clock offset
    is the minimum over the last ``offset_window`` arrivals."""

    target_delay_ms: float = 50.0
    max_missing_frames: int = 3
    max_gap_ms: float = 150.0
    capacity: int = 64
    offset_window: int = 300

    def __post_init__(self) -> None:
        if self.target_delay_ms < 0 or self.max_gap_ms < 0 or self.max_missing_frames < 0:
            raise ValueError("delays, gaps and frame counts must not be negative")
        if self.capacity < 2 or self.offset_window < 1:
            raise ValueError("capacity must be at least 2 and offset_window at least 1")


class PlayoutKind(Enum):
    """How a played-out frame was made."""

    NORMAL = "normal"  # between two consecutive frames (or exactly on one)
    INTERPOLATED = "interpolated"  # across a short gap of lost frames
    HELD = "held"  # the last frame repeated: a long gap, or nothing newer arrived yet


@dataclass(frozen=True)
class Playout:
    """What to show: landmarks (68, 2) float32, the sender capture time they stand for
    (µs), how they were made, the sequence number of the frame at or before that time, and
    how many frames were missing after it (0 when nothing newer had arrived yet)."""

    landmarks: np.ndarray
    capture_us: int
    kind: PlayoutKind
    sequence: int
    missing: int


@dataclass(frozen=True)
class JitterStats:
    """``pushed``: frames accepted; ``late``: arrived after their playout time passed;
    ``duplicate``; ``dropped``: pushed out by the capacity; ``normal``/``interpolated``/
    ``held``: playouts by kind; ``waiting``: playout calls answered None; ``buffered``:
    frames held now; ``clock_offset_us``: the current offset estimate."""

    pushed: int
    late: int
    duplicate: int
    dropped: int
    normal: int
    interpolated: int
    held: int
    waiting: int
    buffered: int
    clock_offset_us: int | None


class JitterBuffer:
    """Reorders, delays and conceals; thread-safe."""

    def __init__(self, settings: JitterSettings | None = None,
                 clock: Callable[[], int] = monotonic_us) -> None:
        self.settings = settings or JitterSettings()
        self.clock = clock
        self.lock = threading.Lock()
        self.target_delay_us = round(self.settings.target_delay_ms * 1000)
        self.packet_spans: deque[int] = deque(maxlen=PACKET_WINDOW)
        self.packet_frames: deque[int] = deque(maxlen=PACKET_WINDOW)
        self.counts: Counter[str] = Counter()
        self.reset()

    def reset(self) -> None:
        """Forget all frames, the clock offset and the playout position (counters stay)."""
        with self.lock:
            self.frames: list[LandmarkFrame] = []
            self.sequences: list[int] = []
            self.offsets: deque[int] = deque(maxlen=self.settings.offset_window)
            self.played_until: int | None = None
            self.late_run = 0

    def set_target_delay(self, milliseconds: float) -> None:
        if milliseconds < 0:
            raise ValueError("the target delay must not be negative")
        with self.lock:
            self.target_delay_us = round(milliseconds * 1000)

    @property
    def minimum_delay_us(self) -> int:
        """The least delay that covers the recent packets (0 for a frame a packet)."""
        with self.lock:
            return max(self.packet_spans) + PACKET_MARGIN_US if self.packet_spans else 0

    @property
    def delay_us(self) -> int:
        """The delay playout runs at: the target, or more where packets need it."""
        return max(self.target_delay_us, self.minimum_delay_us)

    def cover_packet(self, frames: list[LandmarkFrame]) -> None:
        """Note the frames of one packet (oldest first): a packet of n frames a send
        interval apart needs n intervals of delay."""
        if len(frames) < 2:
            return
        span = frames[-1].capture_us - frames[0].capture_us
        with self.lock:
            self.packet_spans.append(round(span * len(frames) / (len(frames) - 1)))
            self.packet_frames.append(len(frames))

    @property
    def clock_offset_us(self) -> int | None:
        """Receiver clock minus sender clock (µs), as estimated; None before any frame."""
        with self.lock:
            return min(self.offsets) if self.offsets else None

    @property
    def stats(self) -> JitterStats:
        with self.lock:
            count = self.counts
            return JitterStats(count["pushed"], count["late"], count["duplicate"],
                               count["dropped"], count["normal"], count["interpolated"],
                               count["held"], count["waiting"], len(self.frames),
                               min(self.offsets) if self.offsets else None)

    def push(self, frame: LandmarkFrame, arrival_us: int | None = None) -> bool:
        """Add a decoded frame that arrived at ``arrival_us`` (receiver clock, default now);
        False if it came too late to be shown or was already here."""
        arrival = self.clock() if arrival_us is None else arrival_us
        with self.lock:
            self.offsets.append(arrival - frame.capture_us)
            if self.played_until is not None and frame.capture_us < self.played_until:
                return self.refuse_late()
            self.late_run = 0
            index = bisect_right(self.sequences, frame.sequence)
            if index and self.sequences[index - 1] == frame.sequence:
                self.counts["duplicate"] += 1
                return False
            self.frames.insert(index, frame)
            self.sequences.insert(index, frame.sequence)
            self.counts["pushed"] += 1
            self.prune()
            return True

    def refuse_late(self) -> bool:
        self.counts["late"] += 1
        self.late_run += 1
        if self.late_run >= RESYNC_AFTER_LATE:  # a restarted sender: start over on its new clock
            self.frames, self.sequences, self.played_until = [], [], None
            self.offsets.clear()
            self.late_run = 0
        return False

    def prune(self) -> None:
        """Keep at most one frame at or before the playout position, and ``capacity``."""
        if self.played_until is not None:
            passed = sum(frame.capture_us <= self.played_until for frame in self.frames)
            self.drop_oldest(max(0, passed - 1), counted=False)
        self.drop_oldest(max(0, len(self.frames) - self.settings.capacity), counted=True)

    def drop_oldest(self, count: int, counted: bool) -> None:
        if count:
            del self.frames[:count], self.sequences[:count]
            if counted:
                self.counts["dropped"] += count

    def frame_at(self, playout_us: int | None = None) -> Playout | None:
        """The landmarks to show at ``playout_us`` (receiver clock, default now); None
        while the first frame is not yet due."""
        now = self.clock() if playout_us is None else playout_us
        delay = self.delay_us
        with self.lock:
            if not self.offsets:
                self.counts["waiting"] += 1
                return None
            target = now - min(self.offsets) - delay
            if self.played_until is not None:
                target = max(target, self.played_until)  # playout never runs backwards
            playout = self.playout(target)
            if playout is None:
                self.counts["waiting"] += 1
                return None
            self.played_until = target
            self.counts[playout.kind.value] += 1
            self.prune()
            return playout

    def playout(self, target: int) -> Playout | None:
        index = bisect_right([frame.capture_us for frame in self.frames], target)
        if index == 0:
            return None
        before = self.frames[index - 1]
        if before.capture_us == target:
            return Playout(before.landmarks, target, PlayoutKind.NORMAL, before.sequence, 0)
        if index == len(self.frames):
            return Playout(before.landmarks, target, PlayoutKind.HELD, before.sequence, 0)
        after = self.frames[index]
        missing = after.sequence - before.sequence - 1
        span = after.capture_us - before.capture_us
        # A lost packet of several frames is concealed like a few lost frames.
        packet = (max(self.packet_frames), max(self.packet_spans) * 2) if self.packet_frames \
            else (0, 0)
        too_long = (missing > max(self.settings.max_missing_frames, packet[0])
                    or span > max(self.settings.max_gap_ms * 1000, packet[1]))
        if too_long or span <= 0:
            return Playout(before.landmarks, target, PlayoutKind.HELD, before.sequence, missing)
        weight = (target - before.capture_us) / span
        landmarks = (before.landmarks + weight * (after.landmarks - before.landmarks)).astype(
            np.float32)
        kind = PlayoutKind.INTERPOLATED if missing else PlayoutKind.NORMAL
        return Playout(landmarks, target, kind, before.sequence, missing)
