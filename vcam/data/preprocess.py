"""`vcam preprocess`: talking-head videos -> aligned face crops and 68-point landmarks.

Each clip is read twice: a first pass tracks the face and finds every frame's landmarks, the
crop windows are then smoothed over time (centred, so without lag), and a second pass cuts the
crops. A clip is written into a private folder and renamed into place when complete, so an
interrupted run leaves only whole clips, and a re-run skips them.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from safetensors.numpy import save_file

from vcam.data.clips import (
    ARRAYS_FILE,
    CLIP_FILE,
    DATASET_FILE,
    DATASET_FORMAT,
    FORMAT_VERSION,
    FRAMES_DIR,
    frame_name,
    read_dataset_info,
)
from vcam.data.sources import ClipReader, ClipSource, find_clips
from vcam.errors import UserError
from vcam.files import atomic_write_text, is_within
from vcam.landmarks.align import CropTransform, crop_face, crop_window
from vcam.landmarks.detector import LandmarkDetector, create_detector
from vcam.landmarks.tracker import FaceTracker, TrackerSettings

PARTIAL_DIR = ".partial"


@dataclass(frozen=True)
class PreprocessSettings:
    """How clips become crops. ``smooth_seconds`` is the half-width of the centred average
    applied to crop windows; ``min_face`` the smallest landmark extent (px) kept.
    ``redetect_every`` is 1 by default: offline there is time to re-detect near the face on
    every frame, which keeps landmarks right through fast motion."""

    size: int = 256
    margin: float = 1.8
    lift: float = 0.12
    smooth_seconds: float = 0.2
    min_face: int = 40
    min_frames: int = 2
    max_frames: int = 0
    jpeg_quality: int = 95
    landmarks: str = "dlib"
    redetect_every: int = 1


@dataclass
class ClipResult:
    clip_id: str
    source: str
    identity: str
    frames_read: int = 0
    frames_kept: int = 0
    reason: str = ""
    reused: bool = False

    @property
    def frames_dropped(self) -> int:
        return self.frames_read - self.frames_kept


@dataclass
class Summary:
    out: str
    clips: int = 0
    clips_reused: int = 0
    frames_kept: int = 0
    frames_dropped: int = 0
    identities: int = 0
    seconds: float = 0.0
    skipped: list[dict] = field(default_factory=list)
    frames_read_now: int = 0  # frames decoded by this run (not by an earlier, resumed one)

    @property
    def frames_per_second(self) -> float:
        """Frames read per second of wall time, over the clips processed in this run."""
        return self.frames_read_now / self.seconds if self.seconds > 0 else 0.0


@dataclass
class TrackedClip:
    fps: float
    frames_read: int
    indices: np.ndarray  # (T,) source frame index of each frame with a usable face
    points: np.ndarray  # (T, 68, 2) landmarks in source pixels


def track_clip(reader: ClipReader, tracker: FaceTracker,
               settings: PreprocessSettings) -> TrackedClip:
    """First pass: landmarks of every frame with a face of at least ``min_face`` px."""
    indices, points, read = [], [], 0
    for index, image in enumerate(limited(reader.frames(), settings.max_frames)):
        read += 1
        face = None if image is None else tracker.update(image, index / reader.fps)
        if face is None or np.ptp(face.points, axis=0).max() < settings.min_face:
            continue
        indices.append(index)
        points.append(face.points)
    stacked = np.stack(points) if points else np.zeros((0, 68, 2), np.float32)
    return TrackedClip(reader.fps, read, np.array(indices, np.int64), stacked)


def limited(frames: Iterator, count: int) -> Iterator:
    for index, frame in enumerate(frames):
        if count and index >= count:
            return
        yield frame


def smooth_windows(windows: np.ndarray, indices: np.ndarray, radius: int) -> np.ndarray:
    """Centred moving average of crop windows over frames within ``radius`` frames."""
    if radius <= 0 or len(windows) < 2:
        return windows
    smoothed = np.empty_like(windows)
    for row, index in enumerate(indices):
        near = np.abs(indices - index) <= radius
        smoothed[row] = windows[near].mean(axis=0)
    return smoothed


def crop_transforms(tracked: TrackedClip, settings: PreprocessSettings) -> list[CropTransform]:
    windows = np.array([crop_window(points, settings.margin, settings.lift)
                        for points in tracked.points])
    radius = round(settings.smooth_seconds * tracked.fps)
    return [CropTransform.from_window(*window, size=settings.size)
            for window in smooth_windows(windows, tracked.indices, radius)]


def write_crops(reader: ClipReader, tracked: TrackedClip, transforms: list[CropTransform],
                folder: Path, quality: int) -> None:
    """Second pass: cut and save the crop of every kept frame."""
    (folder / FRAMES_DIR).mkdir(parents=True)
    by_index = dict(zip(tracked.indices.tolist(), range(len(transforms))))
    for index, image in enumerate(limited(reader.frames(), tracked.frames_read)):
        row = by_index.get(index)
        if row is None or image is None:
            continue
        crop = crop_face(image, transforms[row])
        path = folder / FRAMES_DIR / frame_name(row)
        if not cv2.imwrite(str(path), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality]):
            raise OSError(f"could not write {path}")


def write_arrays(folder: Path, tracked: TrackedClip, transforms: list[CropTransform]) -> None:
    landmarks = np.stack([transform.to_crop(points)
                          for transform, points in zip(transforms, tracked.points)])
    save_file({"landmarks": landmarks.astype(np.float32),
               "transforms": np.stack([t.matrix for t in transforms]).astype(np.float64),
               "source_frames": tracked.indices},
              str(folder / ARRAYS_FILE))


def process_clip(source: ClipSource, identity: str, out: Path, settings: PreprocessSettings,
                 detector: LandmarkDetector) -> ClipResult:
    """Preprocess one clip into ``out/<clip_id>``; a failure becomes a listed skip."""
    result = ClipResult(source.clip_id, str(source.path), identity)
    partial = out / PARTIAL_DIR / f"{source.clip_id}.{os.getpid()}"
    try:
        reader = ClipReader(source)
        tracker = FaceTracker(detector, TrackerSettings(
            redetect_every=settings.redetect_every, smooth=False))
        tracked = track_clip(reader, tracker, settings)
        result.frames_read = tracked.frames_read
        if len(tracked.indices) < settings.min_frames:
            result.reason = no_face_reason(tracked, settings)
            return result
        transforms = crop_transforms(tracked, settings)
        shutil.rmtree(partial, ignore_errors=True)
        write_crops(reader, tracked, transforms, partial, settings.jpeg_quality)
        write_arrays(partial, tracked, transforms)
        result.frames_kept = len(tracked.indices)
        (partial / CLIP_FILE).write_text(json.dumps(clip_meta(result, tracked, settings),
                                                    indent=1))
        os.replace(partial, out / source.clip_id)
    except (UserError, OSError, cv2.error) as error:
        result.reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        result.frames_kept = 0
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return result


def no_face_reason(tracked: TrackedClip, settings: PreprocessSettings) -> str:
    if tracked.frames_read == 0:
        return "no frames could be decoded"
    if len(tracked.indices) == 0:
        return f"no face of at least {settings.min_face} px in {tracked.frames_read} frames"
    return (f"a face in only {len(tracked.indices)} of {tracked.frames_read} frames "
            f"(at least {settings.min_frames} needed)")


def clip_meta(result: ClipResult, tracked: TrackedClip, settings: PreprocessSettings) -> dict:
    return {"format": DATASET_FORMAT, "version": FORMAT_VERSION, "id": result.clip_id,
            "source": result.source, "identity": result.identity, "fps": tracked.fps,
            "size": settings.size, "frames_read": result.frames_read,
            "frames_kept": result.frames_kept, "frames_dropped": result.frames_dropped,
            "landmarks": settings.landmarks, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def read_manifest(path: Path) -> dict[Path, str]:
    """Identity labels by resolved clip path, from a TSV with ``path`` and ``identity``
    columns (paths relative to the manifest's folder)."""
    try:
        with path.open(newline="", encoding="utf-8") as stream:
            rows = list(csv.DictReader(stream, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"cannot read manifest {path}: {error}") from None
    if not rows or not {"path", "identity"} <= set(rows[0]):
        raise UserError(f"manifest {path} needs a header with 'path' and 'identity' columns")
    return {(path.parent / row["path"]).resolve(): row["identity"].strip()
            for row in rows if row.get("path") and (row.get("identity") or "").strip()}


def check_output(out: Path, inputs: list[Path], settings: PreprocessSettings) -> dict | None:
    """Refuse an output folder inside an input or holding another size; returns the
    previous run's dataset info, if any."""
    for given in inputs:
        if given.is_dir() and is_within(out, given):
            raise UserError(f"--out {out} is inside the input folder {given}: choose a folder "
                            "outside the inputs")
        if is_within(given, out):
            raise UserError(f"input {given} is inside --out {out}: choose another --out")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / DATASET_FILE).exists():
        raise UserError(f"--out {out} is a non-empty folder that vcam did not write: "
                        "choose an empty or new folder")
    info = read_dataset_info(out) if out.is_dir() else None
    if info is not None and int(info["size"]) != settings.size:
        raise UserError(f"{out} holds {info['size']} px crops: use --size {info['size']} or "
                        "another --out")
    return info


@functools.cache
def worker_detector(backend: str) -> LandmarkDetector:
    """One detector per process, built on first use (the dlib models take a moment to load)."""
    return create_detector(backend)


def process_job(job: tuple[ClipSource, str, Path, PreprocessSettings]) -> ClipResult:
    source, identity, out, settings = job
    return process_clip(source, identity, out, settings, worker_detector(settings.landmarks))


def reused_result(source: ClipSource, identity: str, out: Path,
                  previous_skips: dict[str, str]) -> ClipResult | None:
    """The result of a clip a previous run finished or skipped, or None if it needs work."""
    meta_path = out / source.clip_id / CLIP_FILE
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        return ClipResult(source.clip_id, str(source.path), meta["identity"],
                          meta["frames_read"], meta["frames_kept"], reused=True)
    if str(source.path) in previous_skips:
        return ClipResult(source.clip_id, str(source.path), identity,
                          reason=previous_skips[str(source.path)], reused=True)
    return None


class Progress(Protocol):
    """Told how many clips there are once the inputs are checked, then of each result."""

    def start(self, clips: int) -> None: ...

    def advance(self, result: ClipResult) -> None: ...


class Silent:
    def start(self, clips: int) -> None:
        pass

    def advance(self, result: ClipResult) -> None:
        pass


def run_preprocess(inputs: list[Path], out: Path, settings: PreprocessSettings,
                   manifest: Path | None = None, workers: int = 1,
                   progress: Progress | None = None) -> Summary:
    """Preprocess every clip in ``inputs`` into ``out``; returns the summary."""
    progress = progress or Silent()
    started = time.perf_counter()
    info = check_output(out, inputs, settings)
    labels = read_manifest(manifest) if manifest else {}
    sources = find_clips(inputs)
    if not sources:
        raise UserError("no videos or frame folders found in " + ", ".join(map(str, inputs)))
    create_detector(settings.landmarks)  # fail early, in one line, if the backend is unusable
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    write_dataset_info(out, settings, [])
    progress.start(len(sources))
    previous_skips = {skip["source"]: skip["reason"] for skip in (info or {}).get("skipped", [])}
    results, jobs = [], []
    for source in sources:
        identity = labels.get(source.path, source.clip_id)
        done = reused_result(source, identity, out, previous_skips)
        if done is None:
            jobs.append((source, identity, out, settings))
        else:
            results.append(done)
            progress.advance(done)
    for result in run_jobs(jobs, workers):
        results.append(result)
        progress.advance(result)
    shutil.rmtree(out / PARTIAL_DIR, ignore_errors=True)
    summary = summarise(results, out, time.perf_counter() - started)
    if not summary.clips:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        first = summary.skipped[0]
        raise UserError(f"every input was skipped ({len(summary.skipped)} clips; "
                        f"{first['source']}: {first['reason']}): nothing to train on")
    write_dataset_info(out, settings, results)
    return summary


def run_jobs(jobs: list, workers: int) -> Iterator[ClipResult]:
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield process_job(job)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        try:
            yield from pool.map(process_job, jobs)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def summarise(results: list[ClipResult], out: Path, seconds: float) -> Summary:
    kept = [result for result in results if not result.reason]
    summary = Summary(
        out=str(out), clips=len(kept), clips_reused=sum(r.reused for r in kept),
        frames_kept=sum(r.frames_kept for r in kept),
        frames_dropped=sum(r.frames_dropped for r in results),
        identities=len({r.identity for r in kept}), seconds=seconds,
        skipped=[{"source": r.source, "reason": r.reason} for r in results if r.reason])
    summary.frames_read_now = sum(r.frames_read for r in results if not r.reused)
    return summary


def write_dataset_info(out: Path, settings: PreprocessSettings,
                       results: list[ClipResult]) -> None:
    kept = [result for result in results if not result.reason]
    info = {"format": DATASET_FORMAT, "version": FORMAT_VERSION, "size": settings.size,
            "settings": asdict(settings),
            "clips": [{"id": r.clip_id, "identity": r.identity, "frames": r.frames_kept}
                      for r in kept],
            "skipped": [{"source": r.source, "reason": r.reason} for r in results if r.reason]}
    atomic_write_text(out / DATASET_FILE, json.dumps(info, indent=1))
