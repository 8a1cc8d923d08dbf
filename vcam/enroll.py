"""Enrollment: one photo (or a few, or frames of a clip) -> an avatar bundle.

Feed-forward (FF): ``e_new`` is the mean embedding of the photos and the generator is used as
it is (``psi' = P e_new``). Fine-tuning (FT, ``steps`` > 0) then trains G' and D' on the
photos (``vcam.train.finetune``).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from vcam.avatar import Avatar, now
from vcam.backdrop import Backdrop, backdrop_from_photo
from vcam.coverage import choose_frames, coverage_advice, coverage_summary
from vcam.data.sources import ClipReader, ClipSource, sane_fps
from vcam.errors import UserError
from vcam.images import to_tensor
from vcam.landmarks.align import crop_face, crop_transform_for
from vcam.landmarks.detector import LandmarkDetector
from vcam.landmarks.raster import rasterise
from vcam.models.config import ModelConfig, config_names, get_config
from vcam.models.generator import PersonalisedGenerator, generator_input
from vcam.models.store import MetaModels
from vcam.photos import read_image
from vcam.train.finetune import FineTuneSettings, finetune
from vcam.warp import WarpGuide

# Faces whose landmarks span fewer pixels than this are too small to enroll from.
MIN_FACE = 80
# Frames of a clip (`vcam enroll --video`) the chooser picks the enrollment from.
MAX_VIDEO_CANDIDATES = 120
# Enrollment frames kept by default (photos, --video, --snapshot).
DEFAULT_KEEP = 8


@dataclass(frozen=True)
class Photo:
    """An RGB image and where it came from (for messages)."""

    label: str
    image: np.ndarray


@dataclass
class Enrollment:
    """Aligned crops (T, S, S, 3) uint8, their landmarks (T, 68, 2), any warnings, and the
    photo around the first (neutral) face, for paste-back. ``origins`` and ``transforms``:
    which photo each crop came from and its crop transform (empty when not from photos)."""

    crops: np.ndarray
    landmarks: np.ndarray
    warnings: list[str] = field(default_factory=list)
    backdrop: Backdrop | None = None
    origins: tuple[int, ...] = ()
    transforms: tuple = ()


def read_photo(path: Path) -> Photo:
    """The photo, scaled down for face detection (see ``vcam.photos``); one-line errors."""
    return Photo(str(path), read_image(path, "photo"))


def video_photos(path: Path, count: int = MAX_VIDEO_CANDIDATES) -> list[Photo]:
    """Up to ``count`` frames spread evenly over a clip: the candidates the enrollment
    chooser picks from."""
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
                      detector: LandmarkDetector, single: bool = False) -> list[Photo]:
    """The photos to enroll from, exactly one source given: photo files, frames of
    ``video`` to choose ``video_frames`` from, or (``snapshot`` and ``single``) one snapshot
    from ``camera`` after ``countdown`` seconds. A guided snapshot (``snapshot`` alone) is
    recorded by ``vcam.snapshot`` instead: no photos."""
    sources = sum([bool(paths), video is not None, snapshot])
    if sources != 1:
        raise UserError("give photos, or --video FILE, or --snapshot (exactly one of them)")
    if snapshot:
        return [capture_snapshot(camera, detector, seconds=countdown, preview=preview)] \
            if single else []
    if video is not None:
        return video_photos(video, max(video_frames, MAX_VIDEO_CANDIDATES))
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


def align_photos(photos: list[Photo], detector: LandmarkDetector, size: int,
                 skip_faceless: bool = False) -> Enrollment:
    """Aligned crops of the photos' faces (``skip_faceless``: frames of a clip without a
    usable face are left out instead of refused)."""
    warnings: list[str] = []
    crops, landmarks, transforms, origins = [], [], [], []
    for index, photo in enumerate(photos):
        try:
            points = face_landmarks(photo, detector, warnings)
        except UserError:
            if skip_faceless:
                continue
            raise
        transforms.append(crop_transform_for(points, size=size))
        crops.append(crop_face(photo.image, transforms[-1]))
        landmarks.append(transforms[-1].to_crop(points))
        origins.append(index)
    if not crops:
        raise UserError(f"no usable face in {photos[0].label.split(' frame ')[0]}: use a clip "
                        "where your face is clearly visible")
    return Enrollment(np.stack(crops), np.stack(landmarks).astype(np.float32), warnings,
                      backdrop_from_photo(photos[origins[0]].image, transforms[0]),
                      tuple(origins), tuple(transforms))


def chosen(enrollment: Enrollment, keep: int, labels: list[str] | None = None) -> Enrollment:
    """The ``keep`` frames that cover the face best, the most neutral first
    (vcam.coverage.choose_frames), with a warning for each blurred or badly exposed frame."""
    choice = choose_frames(list(enrollment.landmarks), keep, list(enrollment.crops))
    warnings = list(enrollment.warnings)
    if len(choice.rejected) == len(enrollment.crops):
        warnings.append("every enrollment frame is blurred or badly exposed: use sharper, "
                        "evenly lit photos")
    elif labels is not None:
        warnings += [f"{labels[index]} is {problem}: left out"
                     for index, problem in sorted(choice.rejected.items())]
    picked = list(choice.indices)
    return Enrollment(enrollment.crops[picked], enrollment.landmarks[picked], warnings,
                      enrollment.backdrop,
                      tuple(enrollment.origins[i] for i in picked) if enrollment.origins else (),
                      tuple(enrollment.transforms[i] for i in picked)
                      if enrollment.transforms else ())


def coverage_warnings(landmarks: np.ndarray) -> list[str]:
    """One warning saying what the enrollment lacks, or none when it covers the face."""
    coverage = coverage_summary(landmarks)
    advice = coverage_advice(coverage)
    if not advice:
        return []
    return [f"the enrollment ({coverage.text()}) covers little of the face: "
            + "; ".join(advice) + " (`vcam enroll --snapshot` asks for each)"]


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
    guide = WarpGuide(crops, landmarks, cavity=config.mouth_cavity)
    warped = torch.stack([
        to_tensor(guide.network_image(points, guide.image_for(points, exclude=index),
                                    exclude=index))
        for index, points in enumerate(landmarks)])
    return generator_input(marks, warped)


def config_name(config: ModelConfig) -> str:
    return next((name for name in config_names() if get_config(name) == config), "custom")


def enroll(photos: list[Photo], name: str, models: MetaModels, detector: LandmarkDetector,
           settings: FineTuneSettings, model_label: str = "",
           on_step: Callable[[int, dict[str, float]], None] | None = None,
           keep: int = DEFAULT_KEEP, from_clip: bool = False) -> tuple[Avatar, Enrollment]:
    """Personalise ``models`` to the face in ``photos`` (at most ``keep`` of them, chosen to
    cover the face; ``from_clip``: frames of a clip, those without a face skipped);
    ``models`` is changed by FT (which needs the discriminator: load them with it)."""
    if settings.steps > 0 and models.discriminator is None:
        raise ValueError("fine-tuning needs the discriminator: load the models with it")
    aligned = align_photos(photos, detector, models.config.image_size, skip_faceless=from_clip)
    labels = None if from_clip else [photo.label for photo in photos]
    enrollment = chosen(aligned, keep, labels) if len(photos) > 1 else aligned
    if enrollment.origins and enrollment.origins[0] != aligned.origins[0]:
        enrollment = dataclasses.replace(enrollment, backdrop=backdrop_from_photo(
            photos[enrollment.origins[0]].image, enrollment.transforms[0]))
    return enroll_aligned(enrollment, name, models, settings, model_label, on_step)


def enroll_aligned(enrollment: Enrollment, name: str, models: MetaModels,
                   settings: FineTuneSettings, model_label: str = "",
                   on_step: Callable[[int, dict[str, float]], None] | None = None
                   ) -> tuple[Avatar, Enrollment]:
    """Personalise ``models`` to aligned enrollment frames (the first is the neutral face);
    adds a warning when they cover little of the face."""
    enrollment.warnings.extend(coverage_warnings(enrollment.landmarks))
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
            "shots": len(enrollment.crops), "finetune_steps": settings.steps, "model": model_label,
            "final_losses": history[-1] if history else {}}
    avatar = Avatar(name, models.config, deployable.state_dict(), enrollment.crops,
                    enrollment.landmarks, info, backdrop=enrollment.backdrop)
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
    fps = sane_fps(capture.get(cv2.CAP_PROP_FPS), 30.0)
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
