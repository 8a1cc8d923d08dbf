"""Ours against the warping baseline, frame for frame.

The same target frames are rendered both ways, so each figure is compared as a paired
difference (ours minus the warp's, per frame), pooled over the frames of a subset. Frames of
one clip are far from independent (one person, one enrollment), so the 95% interval comes
from a bootstrap over *clips*: clips are drawn with replacement and the pooled mean of their
frames is taken again. The verdict is ``better`` or ``worse`` when the interval excludes 0,
otherwise ``tie``; with fewer than MIN_CLIPS clips in a subset there is no interval.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
from scipy.stats import bootstrap

from vcam.eval.metrics import capped
from vcam.eval.motion import SUBSETS
from vcam.eval.regions import REGION_METRICS

VERSUS_METRICS = ("ssim", "psnr", *REGION_METRICS, "mouth_opening_error")
VERSUS_HEADERS = ["SSIM", "PSNR (dB)", "mouth SSIM", "mouth PSNR", "eye SSIM", "eye PSNR",
                  "mouth interior", "mouth opening error"]
# Figures where less is better: a negative difference from the warp is ``better``.
LOWER_IS_BETTER = ("mouth_opening_error",)
BASELINE = "warp"
# A bootstrap over fewer clips than this says nothing.
MIN_CLIPS = 3
RESAMPLES = 2000
CONFIDENCE = 0.95
SEED = 0


def paired_frames(ours: list[dict], warp: list[dict]) -> list[tuple[dict, dict]]:
    """Each of our frame rows with the warp's row of the same clip and frame (frames the
    warp was not scored on are left out)."""
    baseline = {(row["clip"], row["frame"]): row for row in warp}
    return [(row, baseline[key]) for row in ours
            if (key := (row["clip"], row["frame"])) in baseline]


def frame_differences(pairs: list[tuple[dict, dict]], subset: str,
                      metric: str) -> dict[str, list[float]]:
    """Per clip, ours minus the warp's ``metric`` on each paired frame of ``subset`` (frames
    where either figure is missing are left out)."""
    by_clip: dict[str, list[float]] = defaultdict(list)
    for row, paired in pairs:
        if subset not in row["subsets"]:
            continue
        difference = capped(metric, row[metric]) - capped(metric, paired[metric])
        if math.isfinite(difference):
            by_clip[row["clip"]].append(difference)
    return dict(by_clip)


def pooled_mean(sums: np.ndarray, counts: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.sum(sums, axis=axis) / np.sum(counts, axis=axis)


def compare(by_clip: dict[str, list[float]], lower_is_better: bool = False) -> dict:
    """The pooled mean difference, its interval over clips and the verdict (``better`` when
    the interval lies above 0, or below it for a figure where less is better)."""
    if not by_clip:
        return {"difference": None, "low": None, "high": None, "verdict": "no frames"}
    sums = np.array([sum(values) for values in by_clip.values()])
    counts = np.array([len(values) for values in by_clip.values()], float)
    difference = float(sums.sum() / counts.sum())
    if len(by_clip) < MIN_CLIPS:
        return {"difference": difference, "low": None, "high": None,
                "verdict": f"fewer than {MIN_CLIPS} clips"}
    interval = bootstrap((sums, counts), pooled_mean, paired=True, vectorized=True,
                         n_resamples=RESAMPLES, confidence_level=CONFIDENCE,
                         method="percentile", rng=np.random.default_rng(SEED))
    low, high = (float(value) for value in interval.confidence_interval)
    gain, loss = (high < 0, low > 0) if lower_is_better else (low > 0, high < 0)
    verdict = "better" if gain else "worse" if loss else "tie"
    return {"difference": difference, "low": low, "high": high, "verdict": verdict}


def versus_rows(frame_rows: list[dict]) -> list[dict]:
    """One row per (our method, K, subset): each metric's comparison with the warp at the
    same K (see :func:`compare`)."""
    runs: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for row in frame_rows:
        runs[(row["method"], row["shots"])].append(row)
    rows = []
    for (method, shots), ours in sorted(runs.items(), key=lambda item: (item[0][1], item[0][0])):
        warp = runs.get((BASELINE, shots))
        if method == BASELINE or warp is None:
            continue
        pairs = paired_frames(ours, warp)
        for subset in SUBSETS:
            figures = {metric: compare(frame_differences(pairs, subset, metric),
                                       metric in LOWER_IS_BETTER)
                       for metric in VERSUS_METRICS}
            clips = {row["clip"] for row in ours if subset in row["subsets"]}
            frames = sum(subset in row["subsets"] for row in ours)
            rows.append({"method": method, "shots": shots, "subset": subset,
                         "clips": len(clips), "frames": frames, **figures})
    return rows


def cell(figure: dict) -> str:
    """``+1.39 [+0.52, +2.31] better``, or the difference and why there is no interval."""
    if figure["difference"] is None:
        return "n/a"
    if figure["low"] is None:
        return f"{figure['difference']:+.3f} ({figure['verdict']})"
    return (f"{figure['difference']:+.3f} [{figure['low']:+.3f}, {figure['high']:+.3f}] "
            f"{figure['verdict']}")
