"""`vcam eval`: self-reenactment on held-out clips (../shared/docs/METHOD.md, "Evaluation
protocol").

For each clip and each K: enroll from the first K frames, render later frames from their
landmarks, and compare with the real frames. Rows: ours feed-forward (``ff``), ours
fine-tuned (``ft``, when fine-tuning steps are asked for) and the warping baseline
(``warp``: the enrollment frame whose landmarks are closest to the target, warped
piecewise-affinely to the target landmarks).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from vcam.data.clips import Clip, Dataset
from vcam.enroll import enrollment_inputs
from vcam.errors import UserError
from vcam.eval.metrics import (
    IdentityScorer,
    pose_error,
    psnr,
    redetect_landmarks,
    ssim,
    temporal_flicker,
)
from vcam.eval.motion import motion_labels
from vcam.images import to_image, to_tensor
from vcam.landmarks.detector import LandmarkDetector
from vcam.landmarks.raster import rasterise
from vcam.models.generator import PersonalisedGenerator, generator_input
from vcam.models.store import load_models
from vcam.train.episodes import Split
from vcam.train.finetune import FineTuneSettings, finetune
from vcam.warp import WarpGuide

METRICS = ("ssim", "psnr", "csim", "pose_error")


@dataclass(frozen=True)
class EvalSettings:
    shots: tuple[int, ...] = (1, 8)
    max_clips: int = 10
    frames: int = 50
    finetune: FineTuneSettings = field(default_factory=FineTuneSettings)
    grid_frames: int = 3


@dataclass
class Enrolled:
    """One clip's first K frames at the model's size, as images and tensors."""

    crops: np.ndarray
    landmarks: np.ndarray
    frames: torch.Tensor
    marks: torch.Tensor


@dataclass
class ClipRun:
    """Rendered frames of one method on one clip for one K."""

    method: str
    shots: int
    frames: list[np.ndarray] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)


def model_split(model: Path) -> Split | None:
    """The identity split recorded beside a model (its run folder or model file)."""
    for folder in (model, *model.parents[:3]):
        run_file = folder / "run.json" if folder.is_dir() else None
        if run_file is not None and run_file.is_file():
            return Split.from_dict(json.loads(run_file.read_text())["split"])
    meta = model.with_suffix(".json")
    if model.is_file() and meta.is_file():
        split = json.loads(meta.read_text()).get("split")
        return Split.from_dict(split) if split else None
    return None


def held_out_clips(dataset: Dataset, split: Split | None, shots: int, frames: int,
                   limit: int) -> list[Clip]:
    """Clips of identities the model never trained on, long enough for the largest K plus
    a few target frames."""
    trained = set(split.train) if split else set()
    usable = [clip for clip in dataset.clips
              if clip.identity not in trained and len(clip) >= shots + min(frames, 4)]
    if not usable:
        raise UserError(f"{dataset.root} has no clip of an identity this model did not train "
                        f"on with at least {shots + min(frames, 4)} frames")
    return usable[:limit]


def load_resized(clip: Clip, index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    frame, points = clip.frame(index), clip.landmarks[index]
    if frame.shape[0] != size:
        points = points * (size / frame.shape[0])
        frame = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)
    return frame, points.astype(np.float32)


def enrolled(clip: Clip, shots: int, size: int) -> Enrolled:
    pairs = [load_resized(clip, index, size) for index in range(shots)]
    crops = np.stack([crop for crop, _ in pairs])
    landmarks = np.stack([points for _, points in pairs])
    return Enrolled(crops, landmarks, torch.stack([to_tensor(c) for c in crops]),
                    torch.stack([to_tensor(rasterise(p, size)) for p in landmarks]))


def target_indices(clip: Clip, shots: int, count: int) -> list[int]:
    later = np.arange(shots, len(clip))
    picks = np.unique(np.linspace(0, len(later) - 1, min(count, len(later))).round())
    return [int(later[int(i)]) for i in picks]


class LoadedModel:
    """The meta-learned networks, read from disk once for the whole evaluation. Fine-tuning
    changes them in place; :meth:`restore` puts the loaded weights back."""

    def __init__(self, path: Path) -> None:
        self.models = load_models(path)
        self._loaded = {key: value.clone() for key, value in self.models.state_dict().items()}

    @property
    def image_size(self) -> int:
        return self.models.config.image_size

    def restore(self) -> None:
        self.models.load_state_dict(self._loaded)
        self.models.eval()


def personalise(model: LoadedModel, enrollment: Enrolled, steps: int,
                settings: FineTuneSettings) -> PersonalisedGenerator:
    """The avatar of one enrollment set; its generator shares the loaded networks' weights,
    so render with it before personalising again."""
    model.restore()
    models = model.models
    with torch.no_grad():
        embedding = models.embedder(enrollment.frames, enrollment.marks).mean(dim=0)
    personalised = PersonalisedGenerator.from_embedding(models.generator, embedding)
    if steps > 0:
        tuning = dataclasses.replace(settings, steps=steps)
        inputs = enrollment_inputs(models.config, enrollment.crops, enrollment.landmarks,
                                   enrollment.marks)
        finetune(models, personalised, embedding, enrollment.frames, enrollment.marks, inputs,
                 tuning)
    return personalised.eval()


@torch.no_grad()
def render_ours(generator: PersonalisedGenerator, enrollment: Enrolled,
                targets: list[np.ndarray], size: int) -> list[np.ndarray]:
    """Frames from the target landmarks (and, for the warp-guided generator, the nearest
    enrollment frame warped to them)."""
    guide = (WarpGuide(enrollment.crops, enrollment.landmarks)
             if generator.generator.config.generator == "warp" else None)
    frames = []
    for points in targets:
        warped = None if guide is None else to_tensor(guide.image_for(points))[None]
        inputs = generator_input(to_tensor(rasterise(points, size))[None], warped)
        frames.append(to_image(generator(inputs)[0]))
    return frames


def render_baseline(enrollment: Enrolled, targets: list[np.ndarray],
                    size: int) -> list[np.ndarray]:
    """Warp the enrollment frame whose landmarks are closest to each target (the same warp
    the warp-guided generator sees)."""
    guide = WarpGuide(enrollment.crops, enrollment.landmarks)
    return [guide.image_for(points) for points in targets]


def score(run: ClipRun, reals: list[np.ndarray], targets: list[np.ndarray],
          real_faces: list, motions: list[str], scorer: IdentityScorer,
          detector: LandmarkDetector, clip_id: str) -> None:
    """One row per rendered frame: its metrics and its kind of motion (vcam.eval.motion)."""
    for index, (rendered, real, points, face, motion) in enumerate(
            zip(run.frames, reals, targets, real_faces, motions)):
        redetected = redetect_landmarks(detector, rendered, points)
        run.rows.append({"clip": clip_id, "method": run.method, "shots": run.shots,
                         "frame": index, "motion": motion, "ssim": ssim(rendered, real),
                         "psnr": psnr(rendered, real),
                         "csim": scorer.similarity_to(rendered, face),
                         "pose_error": pose_error(points, redetected.points),
                         "face_detected": redetected.detected})


@dataclass
class ClipResult:
    clip: Clip
    indices: list[int]
    reals: list[np.ndarray]
    targets: list[np.ndarray]
    runs: list[ClipRun]
    enrollment: dict[int, Enrolled]


def evaluate_clip(model: LoadedModel, clip: Clip, settings: EvalSettings,
                  scorer: IdentityScorer, detector: LandmarkDetector) -> ClipResult:
    size = model.image_size
    indices = target_indices(clip, max(settings.shots), settings.frames)
    pairs = [load_resized(clip, index, size) for index in indices]
    reals, targets = [real for real, _ in pairs], [points for _, points in pairs]
    real_faces = [scorer.describe(real) for real in reals]
    result = ClipResult(clip, indices, reals, targets, [], {})
    for shots in settings.shots:
        enrollment = enrolled(clip, shots, size)
        result.enrollment[shots] = enrollment
        methods = [("ff", 0)] + ([("ft", settings.finetune.steps)]
                                 if settings.finetune.steps > 0 else [])
        for method, steps in methods:
            generator = personalise(model, enrollment, steps, settings.finetune)
            result.runs.append(ClipRun(method, shots,
                                       render_ours(generator, enrollment, targets, size)))
        result.runs.append(ClipRun("warp", shots, render_baseline(enrollment, targets, size)))
    motions = {shots: motion_labels(targets, enrollment.landmarks)
               for shots, enrollment in result.enrollment.items()}
    for run in result.runs:
        score(run, reals, targets, real_faces, motions[run.shots], scorer, detector,
              clip.clip_id)
    return result


def flicker_rows(result: ClipResult) -> list[dict]:
    return [{"clip": result.clip.clip_id, "method": run.method, "shots": run.shots,
             "flicker": temporal_flicker(run.frames, result.reals)} for run in result.runs]


def evaluate(model: Path, dataset: Dataset, settings: EvalSettings,
             detector: LandmarkDetector,
             on_clip: Callable[[ClipResult], None] | None = None) -> list[ClipResult]:
    """Evaluate every held-out clip (up to ``max_clips``)."""
    loaded = LoadedModel(model)
    clips = held_out_clips(dataset, model_split(model), max(settings.shots), settings.frames,
                           settings.max_clips)
    scorer = IdentityScorer(detector)
    results = []
    for clip in clips:
        result = evaluate_clip(loaded, clip, settings, scorer, detector)
        results.append(result)
        if on_clip is not None:
            on_clip(result)
    return results
