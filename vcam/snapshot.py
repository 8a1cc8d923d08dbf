"""The guided snapshot: a few seconds of camera while the preview asks for what the avatar
needs (a neutral face, a wide-open mouth, a smile, closed eyes, small turns and nods).

Each prompt is judged from the landmarks of every frame (:func:`prompt_met`, relative to the
neutral face seen first): once it holds on :attr:`GuidedSettings.hold_frames` frames it is
met and the next prompt shows; a prompt not met within :attr:`GuidedSettings.prompt_seconds`
is skipped. Every frame with a face is kept as an aligned crop; the enrollment chooser
(vcam.coverage) then keeps the K frames that cover the face best. Met at a natural pace, the
eight prompts take about 6 seconds.

The camera is read through the runtime's capture layer (vcam.runtime.capture), so a camera
index and a video file are read the same way as by ``vcam run``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from vcam.coverage import FaceFeatures, choose_frames, face_features
from vcam.errors import UserError
from vcam.landmarks.align import crop_face, crop_transform_for
from vcam.landmarks.detector import LandmarkDetector
from vcam.landmarks.face import Face
from vcam.runtime import capture
from vcam.runtime.capture import CameraSource, FrameSource, VideoFileSource

# How far a prompt must move a feature from the neutral face (vcam.coverage.FaceFeatures).
WIDE_OPEN_MOUTH = 0.20  # inner-lip gap / inter-ocular distance, at least
MOUTH_OPENING_GAIN = 0.08  # above the neutral face's
SMILE_WIDENING = 1.08  # mouth width over the neutral face's
EYES_SHUT = 0.6  # eye opening over the neutral face's, at most
TURN = 0.08  # yaw change (about 15 degrees on the demo's head model)
NOD = 0.05  # pitch change (about 15 degrees)
NEUTRAL_EYES_OPEN = 0.18
NEUTRAL_YAW = 0.10


@dataclass(frozen=True)
class Prompt:
    key: str
    text: str


PROMPTS = (
    Prompt("neutral", "look at the camera, relaxed"),
    Prompt("open", "say 'aah': mouth wide open"),
    Prompt("smile", "smile, showing your teeth"),
    Prompt("eyes", "close your eyes"),
    Prompt("left", "turn a little to your left"),
    Prompt("right", "turn a little to your right"),
    Prompt("up", "look a little up"),
    Prompt("down", "look a little down"),
)


def prompt_met(key: str, face: FaceFeatures, neutral: FaceFeatures) -> bool:
    """Whether a face with these features does what prompt ``key`` asks, judged against
    the person's ``neutral`` face. Left and right are the person's own, seen by a camera
    that does not mirror (their left is the image's right)."""
    checks: dict[str, Callable[[], bool]] = {
        "neutral": lambda: face.eye_open > NEUTRAL_EYES_OPEN and abs(face.yaw) < NEUTRAL_YAW,
        "open": lambda: face.mouth_open >= max(WIDE_OPEN_MOUTH,
                                               neutral.mouth_open + MOUTH_OPENING_GAIN),
        "smile": lambda: (face.mouth_width >= SMILE_WIDENING * neutral.mouth_width
                          and face.mouth_open < WIDE_OPEN_MOUTH),
        "eyes": lambda: face.eye_open <= EYES_SHUT * neutral.eye_open,
        "left": lambda: face.yaw >= neutral.yaw + TURN,
        "right": lambda: face.yaw <= neutral.yaw - TURN,
        "up": lambda: face.pitch <= neutral.pitch - NOD,
        "down": lambda: face.pitch >= neutral.pitch + NOD,
    }
    return checks[key]()


@dataclass(frozen=True)
class GuidedSettings:
    """How long each prompt may take, how many frames it must hold, and what to keep."""

    prompt_seconds: float = 2.0
    hold_frames: int = 3
    keep: int = 8
    image_size: int = 256
    min_face: float = 80.0


class PromptProgress:
    """Which prompt is showing and which were met, updated with each frame's features."""

    def __init__(self, frames_per_prompt: int, hold_frames: int,
                 prompts: tuple[Prompt, ...] = PROMPTS) -> None:
        self.prompts = prompts
        self.frames_per_prompt = max(frames_per_prompt, hold_frames)
        self.hold_frames = hold_frames
        self.current = 0
        self.met: dict[str, bool] = {}
        self.neutral: FaceFeatures | None = None
        self._hits = 0
        self._spent = 0

    @property
    def done(self) -> bool:
        return self.current >= len(self.prompts)

    @property
    def prompt(self) -> Prompt | None:
        return None if self.done else self.prompts[self.current]

    def update(self, face: FaceFeatures | None) -> None:
        """Count one frame (``face``: its features; None: no face seen)."""
        if self.done:
            return
        self._spent += 1
        if face is not None:
            self.neutral = self.neutral or face
            if prompt_met(self.prompts[self.current].key, face, self.neutral):
                self._hits += 1
                if self.prompts[self.current].key == "neutral" and self._hits == 1:
                    self.neutral = face
        if self._hits >= self.hold_frames:
            self._advance(met=True)
        elif self._spent >= self.frames_per_prompt:
            self._advance(met=False)

    def _advance(self, met: bool) -> None:
        self.met[self.prompts[self.current].key] = met
        self.current += 1
        self._hits = self._spent = 0


@dataclass
class Recording:
    """Aligned crops (T, S, S, 3) and landmarks (T, 68, 2) of the frames kept, and how the
    prompts went."""

    crops: np.ndarray
    landmarks: np.ndarray
    met: dict[str, bool]
    frames_seen: int
    rejected: dict[int, str] = field(default_factory=dict)


Show = Callable[[np.ndarray, list[Face], PromptProgress], None]


def record_guided(source: FrameSource, detector: LandmarkDetector,
                  settings: GuidedSettings = GuidedSettings(), show: Show | None = None
                  ) -> Recording:
    """Run the prompts on ``source`` (not yet opened) and keep the K frames that cover the
    face best (vcam.coverage.choose_frames), the most neutral first."""
    crops, landmarks = [], []
    seen = 0
    with source:
        progress = PromptProgress(round(settings.prompt_seconds * source.fps),
                                  settings.hold_frames)
        for captured in source.frames(threading.Event()):
            seen += 1
            faces = detector.detect(captured.image) if captured.image is not None else []
            face = faces[0] if faces and face_size(faces[0]) >= settings.min_face else None
            if face is not None:
                transform = crop_transform_for(face.points, size=settings.image_size)
                crops.append(crop_face(captured.image, transform))
                landmarks.append(transform.to_crop(face.points))
            progress.update(face_features(face.points) if face is not None else None)
            if show is not None and captured.image is not None:
                show(captured.image, faces, progress)
            if progress.done:
                break
    if not crops:
        raise UserError("no face was seen during the snapshot: face the camera in good light "
                        "and try again")
    choice = choose_frames(landmarks, settings.keep, crops)
    return Recording(np.stack([crops[i] for i in choice.indices]),
                     np.stack([landmarks[i] for i in choice.indices]).astype(np.float32),
                     progress.met, seen, choice.rejected)


def camera_source(camera: str) -> FrameSource:
    """``--camera``: a camera index, or a video file read as if it were one."""
    if camera.isdigit():
        return CameraSource(int(camera), opener=capture.open_opencv_camera)
    path = Path(camera)
    if not path.is_file():
        raise UserError(f"--camera {camera} is neither a camera index nor a video file")
    return VideoFileSource(path)


def face_size(face: Face) -> float:
    return float(np.ptp(face.points, axis=0).max())


def guidance_image(image: np.ndarray, faces: list[Face], progress: PromptProgress) -> np.ndarray:
    """The preview frame (BGR): the landmarks, the prompt showing, and a checklist of the
    prompts (met: green, skipped: grey, to come: white)."""
    shown = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    for face in faces[:1]:
        for x, y in face.points.astype(int):
            cv2.circle(shown, (int(x), int(y)), 2, (0, 255, 0), -1)
    prompt = progress.prompt
    title = prompt.text if prompt is not None else "done"
    cv2.putText(shown, title, (20, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
    for row, item in enumerate(progress.prompts):
        state = progress.met.get(item.key)
        colour = (0, 200, 0) if state else (128, 128, 128) if state is False else (255, 255, 255)
        marker = "[x]" if state else "[-]" if state is False else "[ ]"
        cv2.putText(shown, f"{marker} {item.key}", (20, 80 + 24 * row),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.6, colour, 1)
    return shown


def show_guidance(image: np.ndarray, faces: list[Face], progress: PromptProgress) -> None:
    """The preview window of a guided snapshot; Esc cancels."""
    cv2.imshow("vcam enroll", guidance_image(image, faces, progress))
    if cv2.waitKey(1) & 0xFF == 27:
        raise UserError("snapshot cancelled")
