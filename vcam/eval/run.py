"""`vcam eval`: self-reenactment on held-out clips (../shared/docs/METHOD.md, "Evaluation
protocol").

For each clip and each K: enroll from K frames, render other frames from their landmarks,
and compare with the real frames. Protocols: ``chosen`` (default) enrolls from K frames that
the enrollment chooser (vcam.coverage) picks from the first half of the clip and renders
targets from the second half, as a user's enrollment covers their face; ``first`` enrolls
from the first K consecutive frames and renders the frames after them.

Rows: ours feed-forward (``ff``), ours fine-tuned (``ft``, when fine-tuning steps are asked
for) and the warping baseline (``warp``: the enrollment frame whose landmarks are closest to
the target, or with ``warp_source="regions"`` the region-aware choice of vcam.warp, warped
piecewise-affinely to the target landmarks).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from vcam.coverage import choose_frames
from vcam.data.clips import Clip, Dataset
from vcam.enroll import enrollment_inputs
from vcam.errors import UserError
from vcam.eval.metrics import (
    IdentityScorer,
    mouth_opening_error,
    pose_error,
    psnr,
    redetect_landmarks,
    ssim,
    temporal_flicker,
)
from vcam.eval.motion import frame_subsets, motion_labels
from vcam.eval.regions import REGION_METRICS, region_scores
from vcam.images import to_image, to_tensor
from vcam.landmarks.detector import LandmarkDetector
from vcam.landmarks.raster import rasterise
from vcam.models.generator import PersonalisedGenerator, generator_input
from vcam.models.store import load_models
from vcam.train.episodes import Split
from vcam.train.finetune import FineTuneSettings, finetune
from vcam.warp import RUNTIME_WARP_SOURCE, WarpGuide

METRICS = ("ssim", "psnr", *REGION_METRICS, "csim", "pose_error", "mouth_opening_error")


PROTOCOLS = ("chosen", "first")


@dataclass(frozen=True)
class EvalSettings:
    shots: tuple[int, ...] = (1, 8)
    max_clips: int = 10
    frames: int = 50
    finetune: FineTuneSettings = field(default_factory=FineTuneSettings)
    grid_frames: int = 3
    protocol: str = "chosen"
    warp_source: str = RUNTIME_WARP_SOURCE


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


def shortest_clip(shots: int, frames: int, protocol: str) -> int:
    """Frames a clip needs for the largest K plus a few targets (``chosen``: K candidates
    in each half)."""
    needed = shots + min(frames, 4)
    return max(needed, 2 * shots) if protocol == "chosen" else needed


def held_out_clips(dataset: Dataset, split: Split | None, shots: int, frames: int,
                   limit: int, protocol: str = "first") -> list[Clip]:
    """Clips of identities the model never trained on, long enough for the largest K plus
    a few target frames."""
    trained = set(split.train) if split else set()
    needed = shortest_clip(shots, frames, protocol)
    usable = [clip for clip in dataset.clips
              if clip.identity not in trained and len(clip) >= needed]
    if not usable:
        raise UserError(f"{dataset.root} has no clip of an identity this model did not train "
                        f"on with at least {needed} frames")
    return usable[:limit]


def load_resized(clip: Clip, index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    frame, points = clip.frame(index), clip.landmarks[index]
    if frame.shape[0] != size:
        points = points * (size / frame.shape[0])
        frame = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)
    return frame, points.astype(np.float32)


def enrolled(clip: Clip, indices: int | list[int], size: int) -> Enrolled:
    """The enrollment of frames ``indices`` (an int K: the first K frames)."""
    indices = list(range(indices)) if isinstance(indices, int) else indices
    pairs = [load_resized(clip, index, size) for index in indices]
    crops = np.stack([crop for crop, _ in pairs])
    landmarks = np.stack([points for _, points in pairs])
    return Enrolled(crops, landmarks, torch.stack([to_tensor(c) for c in crops]),
                    torch.stack([to_tensor(rasterise(p, size)) for p in landmarks]))


def chosen_enrollment(clip: Clip, shots: int, size: int) -> Enrolled:
    """K frames the enrollment chooser picks from the first half of the clip."""
    candidates = [load_resized(clip, index, size) for index in range(len(clip) // 2)]
    choice = choose_frames([points for _, points in candidates], shots,
                           [crop for crop, _ in candidates])
    return enrolled(clip, choice.indices, size)


def target_indices(clip: Clip, shots: int, count: int, protocol: str = "first") -> list[int]:
    """``count`` frames spread over the frames after the first K (``chosen``: over the
    second half)."""
    later = np.arange(len(clip) // 2 if protocol == "chosen" else shots, len(clip))
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
                targets: list[np.ndarray], size: int,
                warp_source: str = RUNTIME_WARP_SOURCE) -> list[np.ndarray]:
    """Frames from the target landmarks (and, for the warp-guided generator, the enrollment
    frames chosen by ``warp_source`` warped to them)."""
    config = generator.generator.config
    guide = (WarpGuide(enrollment.crops, enrollment.landmarks, warp_source,
                       cavity=config.mouth_cavity)
             if config.generator == "warp" else None)
    frames = []
    for points in targets:
        warped = None if guide is None else guide.image_for(points)
        region = None if guide is None else guide.paint_region(points)
        if guide is not None and region is None:  # as the runtime shows it: the warp
            frames.append(warped)
            continue
        network_warp = None if guide is None else to_tensor(guide.network_image(points, warped))
        inputs = generator_input(to_tensor(rasterise(points, size))[None],
                                 None if network_warp is None else network_warp[None])
        rendered = to_image(generator(inputs)[0])
        frames.append(rendered if guide is None else guide.paint(rendered, warped, region))
    return frames


def render_baseline(enrollment: Enrolled, targets: list[np.ndarray], size: int,
                    warp_source: str = RUNTIME_WARP_SOURCE) -> list[np.ndarray]:
    """Warp the enrollment frame(s) chosen by ``warp_source`` to each target (the same warp
    the warp-guided generator sees)."""
    guide = WarpGuide(enrollment.crops, enrollment.landmarks, warp_source)
    return [guide.image_for(points) for points in targets]


@dataclass
class Scoring:
    """What scores a rendered frame, shared by every clip: the identity scorer, the landmark
    detector and a progress callback (called once per scored frame)."""

    scorer: IdentityScorer
    detector: LandmarkDetector
    on_frame: Callable[[], None] = lambda: None


def score(run: ClipRun, reals: list[np.ndarray], targets: list[np.ndarray],
          real_faces: list, labels: tuple[list[str], list[list[str]]], scoring: Scoring,
          clip_id: str) -> None:
    """One row per rendered frame: its metrics (whole frame, mouth and eye regions), its kind
    of motion and the subsets it belongs to (vcam.eval.motion)."""
    motions, subsets = labels
    for index, (rendered, real, points, face) in enumerate(
            zip(run.frames, reals, targets, real_faces)):
        redetected = redetect_landmarks(scoring.detector, rendered, points)
        run.rows.append({"clip": clip_id, "method": run.method, "shots": run.shots,
                         "frame": index, "motion": motions[index], "subsets": subsets[index],
                         "ssim": ssim(rendered, real), "psnr": psnr(rendered, real),
                         **region_scores(rendered, real, points),
                         "csim": scoring.scorer.similarity_to(rendered, face),
                         "pose_error": pose_error(points, redetected.points),
                         "mouth_opening_error": mouth_opening_error(points, redetected.points),
                         "face_detected": redetected.detected})
        scoring.on_frame()


@dataclass
class ClipResult:
    clip: Clip
    indices: list[int]
    reals: list[np.ndarray]
    targets: list[np.ndarray]
    runs: list[ClipRun]
    enrollment: dict[int, Enrolled]


def evaluate_clip(model: LoadedModel, clip: Clip, settings: EvalSettings,
                  scoring: Scoring) -> ClipResult:
    size = model.image_size
    indices = target_indices(clip, max(settings.shots), settings.frames, settings.protocol)
    pairs = [load_resized(clip, index, size) for index in indices]
    reals, targets = [real for real, _ in pairs], [points for _, points in pairs]
    real_faces = [scoring.scorer.describe(real) for real in reals]
    result = ClipResult(clip, indices, reals, targets, [], {})
    for shots in settings.shots:
        enrollment = (chosen_enrollment(clip, shots, size) if settings.protocol == "chosen"
                      else enrolled(clip, shots, size))
        result.enrollment[shots] = enrollment
        methods = [("ff", 0)] + ([("ft", settings.finetune.steps)]
                                 if settings.finetune.steps > 0 else [])
        for method, steps in methods:
            generator = personalise(model, enrollment, steps, settings.finetune)
            result.runs.append(ClipRun(method, shots, render_ours(
                generator, enrollment, targets, size, settings.warp_source)))
        result.runs.append(ClipRun("warp", shots, render_baseline(
            enrollment, targets, size, settings.warp_source)))
    labels = {shots: (motion_labels(targets, enrollment.landmarks),
                      [frame_subsets(points, enrollment.landmarks) for points in targets])
              for shots, enrollment in result.enrollment.items()}
    for run in result.runs:
        score(run, reals, targets, real_faces, labels[run.shots], scoring, clip.clip_id)
    return result


def flicker_rows(result: ClipResult) -> list[dict]:
    return [{"clip": result.clip.clip_id, "method": run.method, "shots": run.shots,
             "flicker": temporal_flicker(run.frames, result.reals)} for run in result.runs]


def evaluate(model: Path, dataset: Dataset, settings: EvalSettings,
             detector: LandmarkDetector, progress: bool = False) -> list[ClipResult]:
    """Evaluate every held-out clip (up to ``max_clips``); ``progress`` shows a bar of the
    frames scored (every method and K counts) on stderr."""
    loaded = LoadedModel(model)
    clips = held_out_clips(dataset, model_split(model), max(settings.shots), settings.frames,
                           settings.max_clips, settings.protocol)
    runs_per_clip = len(settings.shots) * (3 if settings.finetune.steps > 0 else 2)
    total = sum(len(target_indices(clip, max(settings.shots), settings.frames,
                                   settings.protocol))
                for clip in clips) * runs_per_clip
    with tqdm(total=total, desc="eval", unit="frame", disable=not progress,
              file=sys.stderr) as bar:
        scoring = Scoring(IdentityScorer(detector), detector, lambda: bar.update())
        results = []
        for clip in clips:
            bar.set_postfix_str(clip.clip_id, refresh=False)
            results.append(evaluate_clip(loaded, clip, settings, scoring))
    return results
