"""Measuring lip sync in a recording: when clicks sound and when the mouth opens.

A test input has a mouth that opens at known instants and a click at each; in the
receiver's mp4 :func:`click_times` finds the clicks in the sound and
:func:`mouth_open_times` the openings in the picture (the picture inside ``box`` changing
away from its usual, closed-mouth look); :func:`sync_offsets` pairs them (sound minus
picture, seconds: positive when the sound comes late).
"""

from __future__ import annotations

import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vcam.net.audio import SAMPLE_RATE

CLICK_SAMPLES = 240  # 5 ms


def write_clicks(path: Path, seconds: float, instants: Sequence[float],
                 rate: int = SAMPLE_RATE) -> None:
    """A mono 16-bit WAV of silence with a 5 ms click at each instant (seconds)."""
    samples = np.zeros(round(seconds * rate), np.int16)
    burst = (np.hanning(CLICK_SAMPLES) * 20000 * np.where(np.arange(CLICK_SAMPLES) % 8 < 4, 1, -1)
             ).astype(np.int16)
    for instant in instants:
        start = round(instant * rate)
        samples[start:start + CLICK_SAMPLES] = burst[:len(samples[start:start + CLICK_SAMPLES])]
    with wave.open(str(path), "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(rate)
        file.writeframes(samples.tobytes())


def read_sound(path: Path) -> tuple[np.ndarray, float, int]:
    """An mp4's sound as mono float samples, the time of the first (seconds) and the rate."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks, start = [], None
        for frame in container.decode(stream):
            if start is None:
                start = float(frame.pts * frame.time_base) if frame.pts is not None else 0.0
            data = frame.to_ndarray().astype(np.float32)
            channels = len(frame.layout.channels)
            chunks.append(data.mean(axis=0) if frame.format.is_planar
                          else data.reshape(-1, channels).mean(axis=1))
        return (np.concatenate(chunks) if chunks else np.zeros(0, np.float32), start or 0.0,
                stream.rate)


def click_times(samples: np.ndarray, start: float, rate: int, min_gap_s: float = 0.2
                ) -> list[float]:
    """Onsets of sounds louder than half the loudest, at least ``min_gap_s`` apart."""
    loud = np.abs(samples)
    if not len(loud) or loud.max() <= 0:
        return []
    above = np.flatnonzero(loud > 0.5 * loud.max())
    onsets, last = [], -np.inf
    for index in above:
        if index - last > min_gap_s * rate:
            onsets.append(start + index / rate)
        last = index
    return onsets


def read_pictures(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An mp4's frames (grey, float) and their times (seconds)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times, pictures = [], []
        for frame in container.decode(stream):
            times.append(float(frame.pts * frame.time_base))
            pictures.append(frame.to_ndarray(format="gray").astype(np.float32))
    return np.asarray(pictures), np.asarray(times)


def mouth_open_times(pictures: np.ndarray, times: np.ndarray,
                     box: tuple[int, int, int, int] | None = None, min_gap_s: float = 0.2
                     ) -> list[float]:
    """When the picture in ``box`` (x0, y0, x1, y1; None: all of it) first moves away from
    its usual look (the median frame: a mostly closed mouth) by more than half the largest
    change, at least ``min_gap_s`` apart; the instant is interpolated between the frames
    around the crossing."""
    x0, y0, x1, y1 = box or (0, 0, pictures.shape[2], pictures.shape[1])
    region = pictures[:, y0:y1, x0:x1]
    change = np.abs(region - np.median(region, axis=0)).mean(axis=(1, 2))
    threshold = 0.5 * change.max()
    onsets, last = [], -np.inf
    for index in range(1, len(change)):
        if change[index] > threshold >= change[index - 1]:
            fraction = (threshold - change[index - 1]) / (change[index] - change[index - 1])
            instant = times[index - 1] + fraction * (times[index] - times[index - 1])
            if instant - last > min_gap_s:
                onsets.append(float(instant))
            last = instant
    return onsets


def sync_offsets(sound: Sequence[float], picture: Sequence[float], within_s: float = 0.3
                 ) -> list[float]:
    """Each click's offset from the nearest mouth opening (sound - picture, seconds), for
    the clicks with an opening within ``within_s``."""
    offsets = []
    for instant in sound:
        nearest = min(picture, key=lambda other: abs(other - instant), default=None)
        if nearest is not None and abs(nearest - instant) <= within_s:
            offsets.append(instant - nearest)
    return offsets
