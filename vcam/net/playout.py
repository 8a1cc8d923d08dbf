"""The receive path of a call: the landmarks channel -> decoder -> jitter buffer -> playout
-> renderer. A playout loop ticks at the sender's frame rate and takes landmarks from the
jitter buffer, so the renderer (the pluggable render stage: ``vcam.net.media`` builds it from
the real-time runtime's stages) sees a steady stream whatever the network did.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from vcam.avatar import Avatar
from vcam.landmarks.shape_basis import ShapeBasis
from vcam.net.jitter import JitterBuffer, JitterSettings
from vcam.net.packing import PackedDecoder


@dataclass(frozen=True)
class PeerAvatar:
    """The avatar the peer is rendered with, and the user's own bundle of it: a copy the
    user had, or one kept with ``--keep``. ``path`` None: received for this call only, so
    nothing made from it (compiled models, engines) may outlive the call."""

    avatar: Avatar
    path: Path | None = None

    @property
    def call_only(self) -> bool:
        return self.path is None


@dataclass(frozen=True)
class RendererStop:
    """Why a renderer stopped by itself during the call (its window was closed, a sink
    failed); ``failed``: the call ends as a failure."""

    reason: str
    failed: bool = False


class Renderer(Protocol):
    """Where played-out landmarks go: the pluggable render stage. ``start`` blocks (it runs
    in a thread); ``submit`` is called from the loop once per frame slot with (68, 2) float32
    landmarks in the crop pixels of the peer's avatar and must not block; ``close`` blocks;
    ``counts`` holds at least ``rendered`` and ``skipped`` (and ``rejected``: landmarks it
    dropped as unusable, if it checks them); ``stopped`` is None while it runs, else why it
    stopped by itself (the call then ends)."""

    def start(self) -> None: ...

    def submit(self, landmarks: np.ndarray) -> None: ...

    def close(self) -> None: ...

    @property
    def counts(self) -> dict[str, int]: ...

    @property
    def stopped(self) -> RendererStop | None: ...


# (the peer's avatar, the peer's frame rate) -> the renderer of this call
RendererFactory = Callable[[PeerAvatar, float], Renderer]


class CallbackRenderer:
    """A plain render callback as a ``Renderer``: ``callback(landmarks)`` once per frame
    slot, on the loop (so it must only hand the landmarks on, e.g. to a latest-wins queue)."""

    def __init__(self, callback: Callable[[np.ndarray], None]) -> None:
        self.callback = callback
        self.rendered = 0

    def start(self) -> None:
        pass

    def submit(self, landmarks: np.ndarray) -> None:
        self.callback(landmarks)
        self.rendered += 1

    def close(self) -> None:
        pass

    @property
    def counts(self) -> dict[str, int]:
        return {"rendered": self.rendered, "skipped": 0}

    @property
    def stopped(self) -> RendererStop | None:
        return None


class LandmarkInbox:
    """Packets from the landmarks channel into frames in the jitter buffer. ``receive``
    never raises: the decoder counts bad packets, anything unexpected goes to ``errors``."""

    def __init__(self, basis: ShapeBasis, crop_size: int, settings: JitterSettings,
                 want_key: Callable[[], None]) -> None:
        self.decoder = PackedDecoder(basis, crop_size)
        self.jitter = JitterBuffer(settings)
        self.want_key = want_key
        self.bytes = 0
        self.packets = 0
        self.errors = 0
        self.sequences: list[int] = []

    def receive(self, data: object) -> None:
        try:
            self.packets += 1
            if isinstance(data, bytes | bytearray):
                self.bytes += len(data)
            frames = self.decoder.decode_frames(data)
            self.jitter.cover_packet(frames)
            for frame in frames:
                self.jitter.push(frame)
                self.note_sequence(frame.sequence)
            if self.decoder.wants_key:
                self.want_key()
        except Exception:
            self.errors += 1

    def note_sequence(self, sequence: int) -> None:
        """Keep the lowest and highest sequence number decoded (for the loss estimate)."""
        if not self.sequences:
            self.sequences = [sequence, sequence]
        self.sequences = [min(self.sequences[0], sequence), max(self.sequences[1], sequence)]


@dataclass
class PlayoutCounts:
    """Frame slots since the first frame was due; ``played``: slots whose landmarks went to
    the renderer; ``missed``: slots the loop woke up too late for."""

    slots: int = 0
    played: int = 0
    missed: int = 0


async def playout_loop(inbox: LandmarkInbox, renderer: Renderer, fps: float,
                       ended: asyncio.Event, counts: PlayoutCounts) -> None:
    """Hand the renderer the jitter buffer's landmarks once per frame slot."""
    period = 1.0 / fps
    tick = time.monotonic()
    while not ended.is_set():
        delay = tick - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        playout = inbox.jitter.frame_at()
        if playout is not None or counts.slots:
            counts.slots += 1
        if playout is not None:
            renderer.submit(playout.landmarks)
            counts.played += 1
        tick += period
        late = int((time.monotonic() - tick) // period)
        if late > 0:
            tick += late * period
            if counts.slots:
                counts.slots += late
                counts.missed += late
