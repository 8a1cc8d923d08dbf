import numpy as np
import pytest

from vcam.eval.motion import ALL_FRAMES, MOUTH_BEYOND, SUBSETS
from vcam.eval.versus import MIN_CLIPS, VERSUS_METRICS, cell, compare, versus_rows


def frame_rows(method: str, shots: int, clips: dict[str, list[float]], beyond: int = 0):
    """Rows as `vcam eval` scores frames: every metric set to the clip's values; the first
    ``beyond`` frames of each clip in the mouth-opens subset."""
    rows = []
    for clip, values in clips.items():
        for frame, value in enumerate(values):
            subsets = [ALL_FRAMES, *([MOUTH_BEYOND] if frame < beyond else [])]
            rows.append({"clip": clip, "frame": frame, "method": method, "shots": shots,
                         "subsets": subsets, **dict.fromkeys(VERSUS_METRICS, value)})
    return rows


def test_a_clear_gain_on_every_clip_is_better_and_its_interval_holds_it():
    rng = np.random.default_rng(1)
    by_clip = {f"clip{i}": list(1.0 + 0.1 * rng.standard_normal(20)) for i in range(6)}
    figure = compare(by_clip)
    assert figure["verdict"] == "better"
    assert figure["low"] < figure["difference"] < figure["high"]
    assert figure["low"] > 0.8 and figure["high"] < 1.2
    worse = compare({clip: [-value for value in values] for clip, values in by_clip.items()})
    assert worse["verdict"] == "worse" and worse["high"] < 0


def test_gains_that_one_clip_carries_are_a_tie():
    # Many frames of one clip gain a lot, the other clips lose a little: pooled over frames
    # the mean is positive, but resampling clips shows it hangs on that one clip.
    by_clip = {"lucky": [3.0] * 40, **{f"clip{i}": [-0.3] * 10 for i in range(5)}}
    figure = compare(by_clip)
    assert figure["difference"] > 0 and figure["verdict"] == "tie"
    assert figure["low"] < 0 < figure["high"]


def test_too_few_clips_or_frames_give_no_interval():
    two = compare({"a": [1.0, 1.2], "b": [0.9]})
    assert two["difference"] == pytest.approx(3.1 / 3) and two["low"] is None
    assert str(MIN_CLIPS) in two["verdict"] and "(fewer than" in cell(two)
    assert compare({})["verdict"] == "no frames" and cell(compare({})) == "n/a"


def test_rows_pair_the_same_frames_of_the_same_k():
    clips = {f"clip{i}": [0.5] * 6 for i in range(4)}
    ours = frame_rows("ff", 1, {clip: [0.7] * 6 for clip in clips}, beyond=2)
    warp = frame_rows("warp", 1, clips, beyond=2)
    other_k = frame_rows("warp", 8, {clip: [0.0] * 6 for clip in clips})
    rows = versus_rows(ours + warp + other_k)
    assert {(row["method"], row["shots"], row["subset"]) for row in rows} == {
        ("ff", 1, subset) for subset in SUBSETS}
    by_subset = {row["subset"]: row for row in rows}
    assert by_subset[ALL_FRAMES]["frames"] == 24 and by_subset[MOUTH_BEYOND]["frames"] == 8
    for metric in VERSUS_METRICS:
        assert by_subset[ALL_FRAMES][metric]["difference"] == pytest.approx(0.2)
    assert by_subset[ALL_FRAMES]["ssim"]["verdict"] == "better"
    empty = [row for row in rows if row["frames"] == 0]
    assert all(row["ssim"]["verdict"] == "no frames" for row in empty)
    # A frame the warp was not scored on is left out, not compared with another frame.
    assert versus_rows(ours[:1] + warp[1:])[0]["ssim"]["difference"] is None


def test_less_of_a_lower_is_better_figure_is_better():
    rng = np.random.default_rng(2)
    lower = {f"clip{i}": list(-0.02 + 0.002 * rng.standard_normal(10)) for i in range(5)}
    assert compare(lower, lower_is_better=True)["verdict"] == "better"
    assert compare(lower)["verdict"] == "worse"
    clips = {f"clip{i}": [0.5] * 6 for i in range(4)}
    rows = versus_rows(frame_rows("ff", 1, {clip: [0.7] * 6 for clip in clips})
                       + frame_rows("warp", 1, clips))
    everything = next(row for row in rows if row["subset"] == ALL_FRAMES)
    assert everything["ssim"]["verdict"] == "better"  # more SSIM: better
    assert everything["mouth_opening_error"]["verdict"] == "worse"  # more error: worse
