"""Writing an evaluation: metrics.json, a markdown table, PNG grids and a side-by-side mp4."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np

from vcam.errors import UserError
from vcam.eval.metrics import METRIC_CAPS, means_of
from vcam.eval.motion import (
    BEYOND_SOURCE_OPENING,
    BEYOND_TARGET_OPENING,
    LARGE_POSE_THRESHOLD,
    MOTIONS,
    OPEN_MOUTH_THRESHOLD,
    SUBSETS,
)
from vcam.eval.regions import BOX_SCALE, MIN_BOX_SIDE, MOUTH_POINTS, mouth_difference, region_box
from vcam.eval.run import METRICS, ClipResult, ClipRun, flicker_rows
from vcam.eval.versus import (
    CONFIDENCE,
    MIN_CLIPS,
    VERSUS_HEADERS,
    VERSUS_METRICS,
    cell,
    versus_rows,
)
from vcam.files import atomic_write_text, is_within
from vcam.landmarks.raster import rasterise
from vcam.shared import repository_root

METHOD_NAMES = {"ff": "ours, feed-forward", "ft": "ours, fine-tuned",
                "warp": "warping baseline"}
COLUMNS = (*METRICS, "flicker")
METRIC_HEADERS = ["SSIM", "PSNR (dB)", "mouth SSIM", "mouth PSNR", "eye SSIM", "eye PSNR",
                  "mouth interior", "CSIM", "pose error", "mouth opening error"]
# Frames in the grid of frames where ours and the warping baseline differ most.
DIFFER_MOST_FRAMES = 8
BOX_COLOUR = (0, 200, 0)


def per_clip_rows(results: list[ClipResult]) -> list[dict]:
    """One row per (clip, method, K): the means of its frames, plus flicker."""
    rows = []
    for result in results:
        flicker = {(row["method"], row["shots"]): row["flicker"] for row in flicker_rows(result)}
        for run in result.runs:
            means = means_of(run.rows, METRICS)
            rows.append({"clip": result.clip.clip_id, "identity": result.clip.identity,
                         "method": run.method, "shots": run.shots, "frames": len(run.rows),
                         **means, "flicker": flicker[(run.method, run.shots)],
                         "faces_detected": float(np.mean([r["face_detected"] for r in run.rows]))})
    return rows


def method_keys(rows: list[dict]) -> list[tuple[str, int]]:
    """The (method, K) pairs of ``rows``, by K and then in METHOD_NAMES' order."""
    return sorted({(row["method"], row["shots"]) for row in rows},
                  key=lambda key: (key[1], list(METHOD_NAMES).index(key[0])))


def overall_rows(clip_rows: list[dict]) -> list[dict]:
    """Means over clips for each (method, K); every clip counts once."""
    keys = method_keys(clip_rows)
    overall = []
    for method, shots in keys:
        group = [row for row in clip_rows if (row["method"], row["shots"]) == (method, shots)]
        overall.append({"method": method, "shots": shots, "clips": len(group),
                        "frames": sum(row["frames"] for row in group),
                        **means_of(group, [*COLUMNS, "faces_detected"])})
    return overall


def motion_rows(results: list[ClipResult]) -> list[dict]:
    """Means over frames for each (method, K, kind of motion), frames of all clips pooled;
    kinds without frames are left out."""
    frames = [row for result in results for run in result.runs for row in run.rows]
    rows = []
    for method, shots in method_keys(frames):
        for motion in MOTIONS:
            group = [row for row in frames if (row["method"], row["shots"], row["motion"])
                     == (method, shots, motion)]
            if group:
                rows.append({"method": method, "shots": shots, "motion": motion,
                             "frames": len(group), **means_of(group, METRICS)})
    return rows


def subset_rows(results: list[ClipResult]) -> list[dict]:
    """Means over frames for each (method, K, subset of vcam.eval.motion.SUBSETS), frames of
    all clips pooled; an empty subset is listed with no frames and None for its figures."""
    frames = [row for result in results for run in result.runs for row in run.rows]
    rows = []
    for method, shots in method_keys(frames):
        for subset in SUBSETS:
            group = [row for row in frames if (row["method"], row["shots"]) == (method, shots)
                     and subset in row["subsets"]]
            figures = means_of(group, METRICS) if group else dict.fromkeys(METRICS)
            rows.append({"method": method, "shots": shots, "subset": subset,
                         "frames": len(group), **figures})
    return rows


def subset_table(by_subset: list[dict]) -> str:
    lines = table_lines(
        ["method", "K", "subset", "frames", *METRIC_HEADERS],
        [[METHOD_NAMES[row["method"]], str(row["shots"]), row["subset"], str(row["frames"]),
          *(number(row[name]) for name in METRICS)] for row in by_subset])
    notes = ["", "Frames of all clips pooled. Mouth opens beyond enrollment: the target's "
             f"inner-lip gap exceeds {BEYOND_TARGET_OPENING} inter-ocular distances while the "
             "enrollment frame nearest by landmarks (the warp's source) has it below "
             f"{BEYOND_SOURCE_OPENING}. Large pose: as in the table by motion. Mouth and eye "
             "figures are measured in a square box around landmarks 48-67 and 36-47 of the "
             f"target, {BOX_SCALE}x their extent and at least {MIN_BOX_SIDE} px, clipped to "
             "the frame. Mouth interior: the smaller over the larger spread of luma (90th "
             "minus 10th percentile) inside the inner-lip polygon (landmarks 60-67), ours "
             "against the real frame's; 1 when ours is as contrasted as the real frame (where "
             "dark and bright lie is left to PSNR and SSIM), low for a smooth fill where "
             "teeth and cavity show; open mouths only."]
    return "\n".join(lines + notes) + "\n"


def motion_table(by_motion: list[dict]) -> str:
    lines = table_lines(
        ["method", "K", "motion", "frames", *METRIC_HEADERS],
        [[METHOD_NAMES[row["method"]], str(row["shots"]), row["motion"], str(row["frames"]),
          *(number(row[name]) for name in METRICS)] for row in by_motion])
    notes = ["", "Frames of all clips pooled. Each target frame is labelled from landmarks "
             "alone (vcam/eval/motion.py): large pose when, after a similarity alignment of "
             "the non-mouth points to the closest enrollment frame, the residual exceeds "
             f"{LARGE_POSE_THRESHOLD} inter-ocular distances; otherwise open mouth when the "
             f"inner-lip gap exceeds {OPEN_MOUTH_THRESHOLD} inter-ocular distances; otherwise "
             "small motion."]
    return "\n".join(lines + notes) + "\n"


def versus_table(versus: list[dict]) -> str:
    lines = table_lines(
        ["method", "K", "subset", "clips", "frames", *VERSUS_HEADERS],
        [[METHOD_NAMES[row["method"]], str(row["shots"]), row["subset"], str(row["clips"]),
          str(row["frames"]), *(cell(row[name]) for name in VERSUS_METRICS)]
         for row in versus])
    notes = ["", "Ours minus the warping baseline on the same frames (same K), pooled over the "
             f"subset's frames, with a {CONFIDENCE:.0%} interval from a bootstrap over clips "
             "(frames of one clip are not independent): better or worse when the interval "
             f"excludes 0, else a tie (for the mouth opening error, where lower is better, a "
             f"negative difference is better). No interval below {MIN_CLIPS} clips."]
    return "\n".join(lines + notes) + "\n"


def markdown_report(report: dict) -> str:
    """metrics.md: the overall table, ours against the warp, the table by subset, then by
    kind of motion."""
    return (markdown_table(report["overall"]) + "\n## Against the warp\n\n"
            + versus_table(report["versus_warp"]) + "\n## By subset\n\n"
            + subset_table(report["by_subset"]) + "\n## By motion\n\n"
            + motion_table(report["by_motion"]))


def markdown_table(overall: list[dict]) -> str:
    lines = table_lines(
        ["method", "K", "clips", "frames", *METRIC_HEADERS, "flicker"],
        [[METHOD_NAMES[row["method"]], str(row["shots"]), str(row["clips"]), str(row["frames"]),
          *(number(row[name]) for name in COLUMNS)] for row in overall])
    notes = ["", "SSIM, PSNR, mouth interior, CSIM: higher is better. Pose error (landmarks "
             "re-detected on the rendering vs the driving landmarks, over the inter-ocular "
             "distance), mouth opening error (the inner-lip gap of those re-detected landmarks "
             "against the driving one, in inter-ocular distances: does the mouth open as "
             "driven) and flicker (frame-to-frame change relative to the real clip's; "
             "1 = as steady as reality): "
             f"lower is better. PSNR of identical frames counts as {METRIC_CAPS['psnr']:.0f} "
             "dB. CSIM uses dlib's face descriptors, which are not centred: unrelated faces "
             "still score about 0.85, so it is not comparable with ArcFace-based CSIM."]
    return "\n".join(lines + notes) + "\n"


def table_lines(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table: header, rule, one line per row."""
    return ["| " + " | ".join(cells) + " |" for cells in [header, ["---"] * len(header), *rows]]


def number(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def landmark_panel(points: np.ndarray, size: int) -> np.ndarray:
    return rasterise(points, size)


def grid(result: ClipResult, shots: int, count: int) -> np.ndarray:
    """Rows of (enrollment | driving landmarks | real | ours ... | baseline)."""
    runs = [run for run in result.runs if run.shots == shots]
    size = result.reals[0].shape[0]
    picks = np.unique(np.linspace(0, len(result.reals) - 1, min(count, len(result.reals)))
                      .round()).astype(int)
    rows = []
    for index in picks:
        panels = [result.enrollment[shots].crops[0],
                  landmark_panel(result.targets[index], size), result.reals[index],
                  *(run.frames[index] for run in ordered(runs))]
        rows.append(np.hstack(panels))
    return np.vstack(rows)


def differ_most(results: list[ClipResult], method: str, shots: int,
                count: int = DIFFER_MOST_FRAMES) -> np.ndarray | None:
    """Rows of (real | warping baseline | ours) for the ``count`` frames of all clips where
    ours differs most from the baseline inside the mouth box, the box drawn on each panel;
    None when ``method`` or the baseline was not run for this K."""
    candidates = []
    for result in results:
        runs = {run.method: run for run in result.runs if run.shots == shots}
        if method not in runs or "warp" not in runs:
            continue
        for index, points in enumerate(result.targets):
            ours, warp = runs[method].frames[index], runs["warp"].frames[index]
            candidates.append((mouth_difference(ours, warp, points), result.reals[index], warp,
                               ours, points))
    if not candidates:
        return None
    candidates.sort(key=lambda candidate: -candidate[0])
    rows = []
    for _, real, warp, ours, points in candidates[:count]:
        box = region_box(points, MOUTH_POINTS, real.shape[:2])
        rows.append(np.hstack([boxed(panel, box) for panel in (real, warp, ours)]))
    return np.vstack(rows)


def boxed(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """A copy of ``image`` with ``box`` outlined."""
    copy = image.copy()
    cv2.rectangle(copy, box[:2], (box[2] - 1, box[3] - 1), BOX_COLOUR, 1)
    return copy


def ordered(runs: list[ClipRun]) -> list[ClipRun]:
    return sorted(runs, key=lambda run: list(METHOD_NAMES).index(run.method))


def write_png(path: Path, image: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode {path}")
    path.write_bytes(encoded.tobytes())


def write_video(path: Path, result: ClipResult, shots: int, fps: float) -> None:
    """real | ours ... | baseline, side by side, for every evaluated frame."""
    runs = ordered([run for run in result.runs if run.shots == shots])
    partial = path.with_name(f".{path.name}.partial.mp4")
    height = result.reals[0].shape[0]
    width = height * (1 + len(runs))
    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                             (width, height))
    try:
        for index, real in enumerate(result.reals):
            frame = np.hstack([real, *(run.frames[index] for run in runs)])
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    partial.replace(path)


def check_report_folder(out: Path, force: bool) -> None:
    """Refuse a report folder inside the repository (reports hold frames of real people) or
    one that holds a report already (unless ``force``)."""
    repository = repository_root()
    if (repository / ".git").exists() and is_within(out, repository):
        raise UserError(f"--out {out} is inside the vcam repository; reports hold frames of "
                        "real people, so write them elsewhere")
    if (out / "metrics.json").exists() and not force:
        raise UserError(f"{out} already holds a report: pass --force to replace it")


def write_report(out: Path, results: list[ClipResult], settings_record: dict,
                 grid_frames: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    (out / "grids").mkdir(exist_ok=True)
    clip_rows = per_clip_rows(results)
    overall = overall_rows(clip_rows)
    for result in results:
        for shots in sorted({run.shots for run in result.runs}):
            write_png(out / "grids" / f"{result.clip.clip_id}-k{shots}.png",
                      grid(result, shots, grid_frames))
    for method, shots in method_keys(clip_rows):
        image = differ_most(results, method, shots) if method != "warp" else None
        if image is not None:
            write_png(out / f"differ-most-{method}-k{shots}.png", image)
    first = results[0]
    span = max(1, first.indices[-1] - first.indices[0] + 1)
    fps = float(first.clip.meta.get("fps", 25.0)) * len(first.indices) / span
    write_video(out / "side_by_side.mp4", first, min(run.shots for run in first.runs),
                max(fps, 1.0))
    frames = [row for result in results for run in result.runs for row in run.rows]
    report = {"settings": settings_record, "overall": overall,
              "versus_warp": versus_rows(frames),
              "by_subset": subset_rows(results), "by_motion": motion_rows(results),
              "per_clip": clip_rows}
    atomic_write_text(out / "metrics.md", markdown_report(report))
    atomic_write_text(out / "metrics.json", json_text(report))
    return report


def json_text(value: object) -> str:
    """``value`` as strict JSON: a figure that is not finite (``nan``: no frame had it, e.g.
    the mouth interior of a clip whose mouth never opens) is written as null."""
    return json.dumps(finite_or_null(value), indent=1, default=str, allow_nan=False)


def finite_or_null(value: object) -> object:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_null(item) for item in value]
    return value
