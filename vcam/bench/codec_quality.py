"""What the landmark stream's coding costs the picture: the avatar rendered from the
landmarks a call plays out against the same avatar rendered from the original landmarks.

For each clip: an avatar is enrolled from its first frame with the given model (feed-forward,
as ``vcam enroll`` does by default); its later landmarks are coded as a call codes them
(``vcam.net.packing``: frames kept at the send rate, several a packet, the quantiser step),
decoded, and interpolated back to every original frame's time as the receiver's jitter
buffer does; both landmark streams are rendered and compared by SSIM. As a yardstick, the
same is done with the original landmarks plus Gaussian noise of the landmark detector's
own size (``detector_noise_px`` mean error): a coding error that costs less than that
noise costs nothing a user could tell from what the camera already gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vcam.bench.codec import code_packed
from vcam.data.clips import Clip
from vcam.errors import UserError
from vcam.landmarks.shape_basis import ShapeBasis
from vcam.net.codec import CodecSettings
from vcam.net.packing import PackingSettings

# The mean norm of a 2-D Gaussian of per-axis deviation s is s * sqrt(pi / 2).
MEAN_NORM_PER_SIGMA = float(np.sqrt(np.pi / 2))


@dataclass(frozen=True)
class QualityVariant:
    """One way of sending: a quantiser step and a packing (``None``: the detector-noise
    yardstick instead of coding)."""

    name: str
    step_px: float = 0.0
    packing: PackingSettings | None = None


@dataclass(frozen=True)
class QualitySettings:
    frames: int = 30
    fps: float = 30.0
    detector_noise_px: float = 1.0
    seed: int = 0


def default_variants(steps_px: tuple[float, ...], packing: PackingSettings
                     ) -> list[QualityVariant]:
    """Every step with the given packing; half the frames (15 fps, interpolated) at a
    finer step that costs about as much on the wire; the detector-noise yardstick."""
    variants = [QualityVariant(f"{packing.send_fps:g} fps x{packing.frames_per_packet}, "
                               f"{step:g} px", step, packing) for step in steps_px]
    half = PackingSettings(packing.send_fps / 2, max(1, packing.frames_per_packet // 2))
    return [*variants, QualityVariant(f"{half.send_fps:g} fps x{half.frames_per_packet}, "
                                      "1.5 px", 1.5, half),
            QualityVariant("detector noise 1 px")]


def held_out_clips(clips: list[Clip], model: Path, count: int, frames: int) -> list[Clip]:
    """One clip (long enough) of each of up to ``count`` identities the model held out for
    validation (any it did not train on when it records no validation list)."""
    from vcam.eval.run import model_split

    split = model_split(model)
    if split is None:
        raise UserError(f"{model} records no identity split: cannot tell held-out clips")
    chosen: dict[str, Clip] = {}
    for clip in clips:
        held_out = (clip.identity in split.validation if split.validation
                    else clip.identity not in split.train)
        if held_out and len(clip) > frames and clip.identity not in chosen:
            chosen[clip.identity] = clip
    if not chosen:
        raise UserError(f"no clip of more than {frames} frames of an identity {model.name} "
                        "held out")
    return list(chosen.values())[:count]


def model_basis(model: Path) -> ShapeBasis:
    """The shape basis exported beside ``model``, else the default one."""
    from vcam.landmarks.shape_basis import load_shape_basis
    from vcam.models.store import default_shape_basis
    from vcam.train.export import shape_basis_path

    path = shape_basis_path(model)
    return load_shape_basis(path) if path.is_file() else default_shape_basis()


def noisy(landmarks: np.ndarray, mean_error_px: float, seed: int) -> np.ndarray:
    sigma = mean_error_px / MEAN_NORM_PER_SIGMA
    noise = np.random.default_rng(seed).normal(0.0, sigma, landmarks.shape)
    return (landmarks + noise).astype(np.float32)


def run_quality_bench(model: Path, basis: ShapeBasis, clips: list[Clip],
                      variants: list[QualityVariant],
                      settings: QualitySettings | None = None) -> dict:
    """SSIM of renders from each variant's landmarks against renders from the originals,
    and the mean landmark error (px of a 256 px crop), per variant over ``clips``."""
    from vcam.eval.metrics import ssim
    from vcam.eval.run import LoadedModel, enrolled, personalise, render_ours
    from vcam.train.finetune import FineTuneSettings

    settings = settings or QualitySettings()
    loaded = LoadedModel(model)
    size = loaded.image_size
    scores: dict[str, list[float]] = {variant.name: [] for variant in variants}
    errors: dict[str, list[float]] = {variant.name: [] for variant in variants}
    for number, clip in enumerate(clips):
        crop = int(clip.meta.get("size") or clip.frame(0).shape[0])
        enrollment = enrolled(clip, 1, size)
        generator = personalise(loaded, enrollment, 0, FineTuneSettings())
        original = clip.landmarks[1:1 + settings.frames].astype(np.float32)
        reference = render_ours(generator, enrollment, list(original * (size / crop)), size)
        for variant in variants:
            shown = (noisy(original, settings.detector_noise_px * crop / 256,
                           settings.seed + number)
                     if variant.packing is None
                     else code_packed(basis, original, crop, settings.fps,
                                      CodecSettings(step_px=variant.step_px), variant.packing)[0])
            renders = render_ours(generator, enrollment, list(shown * (size / crop)), size)
            scores[variant.name] += [ssim(a, b) for a, b in zip(renders, reference)]
            errors[variant.name].append(
                float(np.linalg.norm(shown - original, axis=-1).mean()) * 256 / crop)
    return {"model": str(model), "clips": [clip.clip_id for clip in clips],
            "identities": sorted({clip.identity for clip in clips}),
            "frames_per_clip": settings.frames, "render_size": size,
            "variants": [{"name": variant.name, "step_px": variant.step_px,
                          "send_fps": variant.packing.send_fps if variant.packing else None,
                          "frames_per_packet": (variant.packing.frames_per_packet
                                                if variant.packing else None),
                          "ssim": float(np.mean(scores[variant.name])),
                          "ssim_p05": float(np.percentile(scores[variant.name], 5)),
                          "mean_error_px": float(np.mean(errors[variant.name]))}
                         for variant in variants]}


def quality_report_lines(report: dict) -> list[str]:
    lines = [f"rendered quality ({Path(report['model']).name}, {len(report['clips'])} "
             f"held-out clips of {', '.join(report['identities'])}, {report['frames_per_clip']} "
             f"frames each, enrolled from the first): SSIM against renders from the original "
             f"landmarks"]
    for row in report["variants"]:
        lines.append(f"  {row['name']:<24} SSIM {row['ssim']:.4f} (p5 {row['ssim_p05']:.4f}), "
                     f"landmark error {row['mean_error_px']:.2f} px")
    return lines
