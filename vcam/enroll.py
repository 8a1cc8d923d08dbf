"""Enrollment: one photo (or a few, or frames of a clip) -> an avatar bundle.

Feed-forward (FF): ``e_new`` is the mean embedding of the photos and the generator is used as
it is (``psi' = P e_new``). Fine-tuning (FT, ``steps`` > 0) then trains G' and D' on the
photos (``vcam.train.finetune``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from vcam.avatar import Avatar, now
from vcam.data.sources import ClipReader, ClipSource
from vcam.errors import UserError
from vcam.images import to_tensor
from vcam.landmarks.align import crop_face, crop_transform_for
from vcam.landmarks.detector import LandmarkDetector
from vcam.landmarks.raster import rasterise
from vcam.models.config import ModelConfig, config_names, get_config
from vcam.models.generator import PersonalisedGenerator, generator_input
from vcam.models.store import MetaModels
from vcam.train.finetune import FineTuneSettings, finetune
from vcam.warp import WarpGuide

# Faces whose landmarks span fewer pixels than this are too small to enroll from.
MIN_FACE = 80


@dataclass(frozen=True)
class Photo:
    """An RGB image and where it came from (for messages)."""

    label: str
    image: np.ndarray


@dataclass
class Enrollment:
    """Aligned crops (T, S, S, 3) uint8, their landmarks (T, 68, 2) and any warnings."""

    crops: np.ndarray
    landmarks: np.ndarray
    warnings: list[str] = field(default_factory=list)


def read_photo(path: Path) -> Photo:
    if not path.exists():
        raise UserError(f"{path} does not exist")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
    if image is None:
        raise UserError(f"{path} is not a readable image (use a JPEG or PNG photo)")
    return Photo(str(path), cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def video_photos(path: Path, count: int) -> list[Photo]:
    """``count`` frames spread evenly over a clip."""
    if not path.is_file():
        raise UserError(f"{path} does not exist")
    frames = [frame for frame in ClipReader(ClipSource(path, path.stem)).frames()
              if frame is not None]
    if not frames:
        raise UserError(f"{path} has no readable frames")
    picks = np.unique(np.linspace(0, len(frames) - 1, min(count, len(frames))).round())
    return [Photo(f"{path} frame {int(i)}", frames[int(i)]) for i in picks]


def enrollment_photos(paths: Sequence[Path], video: Path | None, video_frames: int,
                      snapshot: bool, camera: str, countdown: float, preview: bool,
                      detector: LandmarkDetector) -> list[Photo]:
    """The photos to enroll from, exactly one source given: photo files, ``video_frames``
    frames of ``video``, or a ``snapshot`` from ``camera`` after ``countdown`` seconds."""
    sources = sum([bool(paths), video is not None, snapshot])
    if sources != 1:
        raise UserError("give photos, or --video FILE, or --snapshot (exactly one of them)")
    if snapshot:
        return [capture_snapshot(camera, detector, seconds=countdown, preview=preview)]
    if video is not None:
        return video_photos(video, video_frames)
    return [read_photo(path) for path in paths]


def face_landmarks(photo: Photo, detector: LandmarkDetector,
                   warnings: list[str]) -> np.ndarray:
    """The landmarks of the photo's largest face, or a one-line error."""
    faces = detector.detect(photo.image)
    if not faces:
        raise UserError(f"no face found in {photo.label}: use a photo where your face is "
                        "clearly visible and looking at the camera")
    if len(faces) > 1:
        warnings.append(f"{photo.label} shows {len(faces)} faces; using the largest")
    extent = float(np.ptp(faces[0].points, axis=0).max())
    if extent < MIN_FACE:
        raise UserError(f"the face in {photo.label} is only {extent:.0f} px across: use a "
                        f"closer photo (at least {MIN_FACE} px)")
    return faces[0].points


def align_photos(photos: list[Photo], detector: LandmarkDetector, size: int) -> Enrollment:
    warnings: list[str] = []
    crops, landmarks = [], []
    for photo in photos:
        points = face_landmarks(photo, detector, warnings)
        transform = crop_transform_for(points, size=size)
        crops.append(crop_face(photo.image, transform))
        landmarks.append(transform.to_crop(points))
    return Enrollment(np.stack(crops), np.stack(landmarks).astype(np.float32), warnings)


def enrollment_tensors(enrollment: Enrollment) -> tuple[torch.Tensor, torch.Tensor]:
    size = enrollment.crops.shape[1]
    frames = torch.stack([to_tensor(crop) for crop in enrollment.crops])
    marks = torch.stack([to_tensor(rasterise(points, size)) for points in enrollment.landmarks])
    return frames, marks


def enrollment_inputs(config: ModelConfig, crops: np.ndarray, landmarks: np.ndarray,
                      marks: torch.Tensor) -> torch.Tensor:
    """G's input for each enrollment frame: its landmark image, plus (warp-guided generator)
    the nearest *other* enrollment frame warped to it (itself when there is only one)."""
    if config.generator != "warp":
        return marks
    guide = WarpGuide(crops, landmarks)
    warped = torch.stack([to_tensor(guide.image_for(points, exclude=index))
                          for index, points in enumerate(landmarks)])
    return generator_input(marks, warped)


def config_name(config: ModelConfig) -> str:
    return next((name for name in config_names() if get_config(name) == config), "custom")


def enroll(photos: list[Photo], name: str, models: MetaModels, detector: LandmarkDetector,
           settings: FineTuneSettings, model_label: str = "",
           on_step: Callable[[int, dict[str, float]], None] | None = None
           ) -> tuple[Avatar, Enrollment]:
    """Personalise ``models`` to the face in ``photos``; ``models`` is changed by FT (which
    needs the discriminator: load them with it)."""
    if settings.steps > 0 and models.discriminator is None:
        raise ValueError("fine-tuning needs the discriminator: load the models with it")
    enrollment = align_photos(photos, detector, models.config.image_size)
    frames, marks = enrollment_tensors(enrollment)
    with torch.no_grad():
        embedding = models.embedder(frames, marks).mean(dim=0)
    personalised = PersonalisedGenerator.from_embedding(models.generator, embedding)
    history = []
    if settings.steps > 0:
        inputs = enrollment_inputs(models.config, enrollment.crops, enrollment.landmarks, marks)
        history = finetune(models, personalised, embedding, frames, marks, inputs, settings,
                           on_step)
    deployable = personalised.deployable()
    info = {"created": now(), "config_name": config_name(models.config),
            "shots": len(photos), "finetune_steps": settings.steps, "model": model_label,
            "final_losses": history[-1] if history else {}}
    avatar = Avatar(name, models.config, deployable.state_dict(), enrollment.crops,
                    enrollment.landmarks, info)
    return avatar, enrollment


def reconstruction_error(avatar: Avatar) -> float:
    """Mean absolute error (in [0, 2] units) of the avatar re-rendering its enrollment crops
    from their landmarks."""
    generator = avatar.generator()
    frames, marks = enrollment_tensors(Enrollment(avatar.crops, avatar.landmarks))
    inputs = enrollment_inputs(avatar.config, avatar.crops, avatar.landmarks, marks)
    with torch.no_grad():
        return float((generator(inputs) - frames).abs().mean())


def capture_snapshot(camera: str, detector: LandmarkDetector, seconds: float = 3.0,
                     preview: bool = True) -> Photo:
    """Open the camera (an index such as ``0``, or a video file), count down while showing
    the detected landmarks, and return the first frame with a face after the countdown."""
    source: int | str = int(camera) if camera.isdigit() else camera
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        raise UserError(f"no camera at {camera}: connect a webcam, pick another with "
                        "--camera, or enroll from a photo")
    try:
        return countdown(capture, detector, seconds, preview)
    finally:
        capture.release()
        if preview:
            cv2.destroyAllWindows()


def countdown(capture: cv2.VideoCapture, detector: LandmarkDetector, seconds: float,
              preview: bool) -> Photo:
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    frames_left = int(seconds * fps)
    while True:
        ok, frame = capture.read()
        if not ok:
            raise UserError("the camera stopped before a face was seen: try again")
        image = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        faces = detector.detect(image)
        if preview:
            show_preview(frame, faces, frames_left / fps)
        frames_left -= 1
        if frames_left <= 0 and faces:
            return Photo("snapshot", image)


def show_preview(frame: np.ndarray, faces, remaining: float) -> None:
    shown = frame.copy()
    for face in faces[:1]:
        for x, y in face.points.astype(int):
            cv2.circle(shown, (int(x), int(y)), 2, (0, 255, 0), -1)
    label = f"{max(remaining, 0):.0f}" if remaining > 0 else "hold still"
    cv2.putText(shown, label, (20, 50), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 3)
    cv2.imshow("vcam enroll", shown)
    if cv2.waitKey(1) & 0xFF == 27:
        raise UserError("snapshot cancelled")


def warn(message: str) -> None:
    print(f"vcam: warning: {message}", file=sys.stderr)
