"""`vcam bench pipeline` runs end to end (tiny config, a few frames: figures are printed,
not asserted), on the synthetic clip or a recording, and counts the frames the network
painted: none for a closed mouth, some for a talking one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from vcam.bench.pipeline import (
    CLIP_FPS,
    pipeline_bench_lines,
    recorded_frames,
    run_pipeline_bench,
)
from vcam.data.synthetic import moving_face_frames, write_video
from vcam.landmarks.tracker import FaceTracker
from vcam.runtime.capture import VideoFileSource
from vcam.runtime.compositor import CompositorSettings
from vcam.runtime.file_sink import FileSink
from vcam.runtime.pipeline import Pipeline, PipelineSettings
from vcam.warp import PiecewiseAffineWarp


def test_pipeline_bench_reports_throughput_latency_and_stage_times():
    report = run_pipeline_bench("tiny", frames=8, backend="torch", threads=1,
                                output_size=(320, 240))
    for mode in ("file", "live"):
        run = report[mode]
        assert run["frames_captured"] == 8
        assert run["frames_per_second"] > 0
        assert 0 < run["latency_median_ms"] <= run["latency_p95_ms"]
        assert set(run["stage_ms"]) == {"capture", "landmarks", "render", "output"}
    assert report["file"]["frames_output"] == 8 and report["file"]["dropped"] == 0
    assert report["file"]["frames_painted"] == 8  # the direct generator: every frame
    lines = pipeline_bench_lines(report)
    print("\n".join(lines))
    assert any("frames/s" in line for line in lines)


def test_pipeline_bench_runs_a_given_warp_guided_model(tiny_dataset, tmp_path):
    from tests.conftest import fast_settings
    from vcam.models.config import get_config
    from vcam.train.run import run_meta_training

    run = tmp_path / "run"
    config = dataclasses.replace(get_config("tiny"), generator="warp")
    run_meta_training(tiny_dataset, run, config, fast_settings(steps=1), quiet=True)
    report = run_pipeline_bench(frames=6, backend="onnxruntime", threads=1,
                                output_size=(320, 240), model=run)
    assert report["generator"] == "warp" and report["config"] == str(run)
    assert report["file"]["frames_output"] == 6


# A talking face: the astronaut (her photo's mouth, smiling, is the enrollment's) with her
# lower lip and jaw moved down by this many inter-ocular distances on the opening frames.
OPENING = 0.25
CLOSED_FIRST = 4
# The frames of each clip: closed, then open and closed in turn.
CLIP_FRAMES = 12


def still_frame(photo: np.ndarray) -> np.ndarray:
    """The 512 px photo as a 640x480 camera frame (top rows, grey sides)."""
    return np.pad(photo[:480], ((0, 0), (64, 64), (0, 0)), constant_values=96)


def mouth_opened(photo: np.ndarray, points: np.ndarray, opening: float) -> np.ndarray:
    """``photo`` warped so that its lower lip and chin move down by ``opening`` inter-ocular
    distances (the jaw's sides half as much)."""
    moved = np.array(points, np.float64)
    drop = opening * np.linalg.norm(moved[36] - moved[45])
    moved[[6, 7, 8, 9, 10, 55, 56, 57, 58, 59, 65, 66, 67], 1] += drop
    moved[[5, 11], 1] += drop / 2
    return PiecewiseAffineWarp(points, photo.shape[0]).warp(photo, moved)


def opens(index: int) -> bool:
    return index >= CLOSED_FIRST and (index - CLOSED_FIRST) % 2 == 0


@pytest.fixture(scope="module")
def mouth_clips(astronaut_image, dlib_detector, tmp_path_factory) -> dict[str, Path]:
    """30 frames/s clips of the still astronaut: "closed" never opens her mouth, "talking"
    opens it on every other frame after the first few."""
    points = dlib_detector.detect(astronaut_image)[0].points
    closed = still_frame(astronaut_image)
    opened = still_frame(mouth_opened(astronaut_image, points, OPENING))
    folder = tmp_path_factory.mktemp("mouth")
    clips = {"closed": [closed] * CLIP_FRAMES,
             "talking": [opened if opens(index) else closed for index in range(CLIP_FRAMES)]}
    for name, frames in clips.items():
        write_video(str(folder / f"{name}.mp4"), iter(frames), fps=CLIP_FPS)
    return {name: folder / f"{name}.mp4" for name in clips}


@pytest.mark.parametrize("clip", ["closed", "talking"])
def test_painted_frames_are_the_frames_the_network_ran_on(clip, mouth_clips, warp_library,
                                                           dlib_detector, tmp_path):
    calls = []
    render = warp_library.render
    warp_library.render = lambda index, inputs: calls.append(index) or render(index, inputs)
    settings = PipelineSettings(fps=CLIP_FPS, log_every=0,
                                compositor=CompositorSettings(320, 240))
    try:
        summary = Pipeline(VideoFileSource(mouth_clips[clip]), warp_library,
                           [FileSink(tmp_path / "out.mp4", 320, 240, CLIP_FPS)], settings,
                           FaceTracker(dlib_detector)).run()
    finally:
        warp_library.render = render
    assert summary.frames_rendered == CLIP_FRAMES
    assert summary.frames_painted == len(calls)
    assert f"({len(calls)} painted by the network)" in summary.lines()[1]  # what `vcam run` prints
    if clip == "closed":
        assert summary.frames_painted == 0
    else:  # none before the mouth first opens (the tracker's smoothing lets an opening
        # linger into the next frame)
        assert 0 < summary.frames_painted <= CLIP_FRAMES - CLOSED_FIRST


def test_pipeline_bench_runs_on_a_recording_and_reports_the_painted_share(mouth_clips):
    report = run_pipeline_bench("tiny", frames=10, backend="torch", threads=1,
                                output_size=(320, 240), generator="warp",
                                clip=mouth_clips["talking"])
    assert str(mouth_clips["talking"]) in report["clip"]
    for mode in ("file", "live"):
        run = report[mode]
        assert run["frames_captured"] == 10
        assert 0 < run["frames_painted"] <= run["frames_rendered"]
        assert run["painted_percent"] == pytest.approx(
            100 * run["frames_painted"] / run["frames_rendered"])
    lines = pipeline_bench_lines(report)
    print("\n".join(lines))
    painted = report["file"]["frames_painted"]
    assert any(f"painted {painted} of 10 frames rendered" in line for line in lines)
    reused = report["live"]["frames_reused"]
    assert any(f"{reused} more showed its last painting warped" in line for line in lines)


def test_a_recording_is_read_up_to_the_frame_count_and_scaled_down_to_fit(tmp_path):
    path = tmp_path / "wide.mp4"
    write_video(str(path), moving_face_frames(5, 1280, 720), fps=CLIP_FPS)
    frames = recorded_frames(path, 3)
    assert len(frames) == 3 and all(frame.shape == (360, 640, 3) for frame in frames)
    assert len(recorded_frames(path, 50)) == 5
    write_video(str(path), moving_face_frames(2, 320, 240), fps=CLIP_FPS)
    assert recorded_frames(path, 50)[0].shape == (240, 320, 3)
