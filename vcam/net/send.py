"""The send path of a call: one's landmark source -> encoder -> fault injector -> the
landmarks channel. The source blocks (video decoding and face tracking), so a worker thread
runs it and hands each encoded packet to the call's loop with ``run_coroutine_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from vcam.net.packing import PackedEncoder


@dataclass(frozen=True)
class FaultSettings:
    """Faults injected on the landmark send path, for tests: each packet is dropped with
    probability ``drop``, else held back behind the next one with probability ``reorder``;
    ``seed`` makes it repeatable."""

    drop: float = 0.0
    reorder: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.drop <= 1 and 0 <= self.reorder <= 1):
            raise ValueError("drop and reorder are probabilities in 0..1")


@dataclass(frozen=True)
class LandmarkSample:
    """Landmarks (68, 2) float32 in the sender's avatar-crop pixels, and when the frame was
    captured (sender's monotonic µs)."""

    landmarks: np.ndarray
    capture_us: int


class LandmarkSource(Protocol):
    """Where one's own landmarks come from; ``samples`` blocks (it runs in a thread) and
    stops when ``stop`` is set or the source ends."""

    fps: float

    def samples(self, stop: threading.Event) -> Iterator[LandmarkSample]: ...

    def close(self) -> None:
        """Release the input (it may be called more than once)."""
        ...


class FaultInjector:
    """Drops and reorders packets as ``FaultSettings`` say; counts what it did."""

    def __init__(self, settings: FaultSettings) -> None:
        self.settings = settings
        self.random = random.Random(settings.seed)
        self.held: bytes | None = None
        self.dropped = 0
        self.reordered = 0

    def process(self, packet: bytes) -> list[bytes]:
        """The packets to send now, in order."""
        if self.random.random() < self.settings.drop:
            self.dropped += 1
            return []
        if self.held is None and self.random.random() < self.settings.reorder:
            self.held = packet
            self.reordered += 1
            return []
        held, self.held = self.held, None
        return [packet] if held is None else [packet, held]

    def flush(self) -> list[bytes]:
        held, self.held = self.held, None
        return [] if held is None else [held]


class LandmarkSender:
    """A worker thread: samples from the source, encoded (several frames a packet), the
    packets handed to ``deliver`` on the loop. ``request_key`` may be called from any
    thread; ``on_end`` runs on the loop when the source ends; ``encoded``: frames that went
    out in packets."""

    def __init__(self, source: LandmarkSource, encoder: PackedEncoder,
                 deliver: Callable[[bytes], Coroutine[Any, Any, None]],
                 loop: asyncio.AbstractEventLoop, on_end: Callable[[], None]) -> None:
        self.source = source
        self.encoder = encoder
        self.deliver = deliver
        self.loop = loop
        self.on_end = on_end
        self.stop = threading.Event()
        self.key_wanted = threading.Event()
        self.encoded = 0
        self.error: str | None = None
        self.thread = threading.Thread(target=self.run, name="vcam-call-sender", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def request_key(self) -> None:
        self.key_wanted.set()

    def run(self) -> None:
        try:
            for sample in self.source.samples(self.stop):
                if self.stop.is_set():
                    break
                self.send(sample)
            if not self.stop.is_set():
                self.send_rest()
        except Exception as error:  # reported, then the call ends like any source end
            self.error = f"{type(error).__name__}: {error}"
        finally:
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self.on_end)

    def send(self, sample: LandmarkSample) -> None:
        if self.key_wanted.is_set():
            self.key_wanted.clear()
            self.encoder.request_key()
        for packet in self.encoder.encode(sample.landmarks, sample.capture_us):
            self.hand_over(packet)
        self.encoded = self.encoder.packed

    def send_rest(self) -> None:
        """The packet that was filling when the source ended, not full."""
        if self.encoder.filling:
            self.hand_over(self.encoder.flush())
            self.encoded = self.encoder.packed

    def hand_over(self, packet: bytes) -> None:
        future = asyncio.run_coroutine_threadsafe(self.deliver(packet), self.loop)
        future.result(timeout=5.0)

    def close(self, timeout: float = 5.0) -> None:
        """Stop and wait for the thread (blocking: call it from a thread)."""
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout)
        self.source.close()
