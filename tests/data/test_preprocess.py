import json
import os

import cv2
import numpy as np
import pytest

from vcam.data.clips import open_dataset
from vcam.data.preprocess import PARTIAL_DIR, PreprocessSettings, run_preprocess
from vcam.data.synthetic import moving_face_frames, write_video
from vcam.errors import UserError

SETTINGS = PreprocessSettings(size=128)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A folder with an mp4 of the moving astronaut, a folder of numbered PNG frames, a
    video with no face and a file that only pretends to be a video, plus a manifest."""
    root = tmp_path_factory.mktemp("inputs")
    videos = root / "videos"
    videos.mkdir()
    write_video(str(videos / "moving.mp4"), moving_face_frames(24, 320, 240, face_size=90))
    frames = videos / "frames" / "take1"
    frames.mkdir(parents=True)
    for index, frame in enumerate(moving_face_frames(10, 320, 240, face_size=90)):
        cv2.imwrite(str(frames / f"{index + 1}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    write_video(str(videos / "empty_room.mp4"),
                (np.full((120, 160, 3), 70, np.uint8) for _ in range(6)))
    (videos / "broken.mp4").write_bytes(b"this is not a video")
    (root / "manifest.tsv").write_text(
        "path\tidentity\tnote\nvideos/moving.mp4\tastronaut\t\n"
        "videos/frames/take1\tastronaut\tframes\n")
    return root


@pytest.fixture(scope="module")
def processed(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "dataset"
    summary = run_preprocess([inputs / "videos"], out, SETTINGS,
                             manifest=inputs / "manifest.tsv", workers=1)
    return out, summary


def test_clips_become_aligned_crops_with_landmarks(processed, dlib_detector):
    out, summary = processed
    assert summary.clips == 2 and summary.identities == 1
    assert summary.frames_kept == 34
    dataset = open_dataset(out)
    assert dataset.size == 128 and dataset.identities == ["astronaut"]
    for clip in dataset.clips:
        assert len(clip) == clip.meta["frames_kept"] == len(clip.source_frames)
        assert clip.landmarks.shape == (len(clip), 68, 2)
        for index in (0, len(clip) - 1):
            crop = clip.frame(index)
            assert crop.shape == (128, 128, 3)
            # The stored landmarks are where a detector finds the face in the crop.
            upscaled = cv2.resize(crop, (256, 256))
            found = dlib_detector.detect(upscaled)[0].points / 2
            assert np.abs(found - clip.landmarks[index]).mean() < 2.5
        extent = np.ptp(clip.landmarks, axis=1).max(axis=1)
        assert np.all((extent > 128 / 2.4) & (extent < 128 / 1.4))


def test_unusable_clips_are_listed_with_reasons(processed):
    out, summary = processed
    reasons = {os.path.basename(skip["source"]): skip["reason"] for skip in summary.skipped}
    assert set(reasons) == {"empty_room.mp4", "broken.mp4"}
    assert "no face" in reasons["empty_room.mp4"]
    assert "could not be read" in reasons["broken.mp4"]
    info = json.loads((out / "dataset.json").read_text())
    assert len(info["skipped"]) == 2 and len(info["clips"]) == 2
    assert not (out / PARTIAL_DIR).exists()
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(
        clip["id"] for clip in info["clips"])


def test_rerun_resumes_without_redoing_clips(processed, inputs):
    out, _ = processed
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/clip.json")}
    summary = run_preprocess([inputs / "videos"], out, SETTINGS,
                             manifest=inputs / "manifest.tsv")
    assert summary.clips == 2 and summary.clips_reused == 2
    assert len(summary.skipped) == 2
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/clip.json")} == stamps


def test_inputs_are_never_touched(processed, inputs):
    names = sorted(p.relative_to(inputs).as_posix() for p in inputs.rglob("*"))
    assert names == ["manifest.tsv", "videos", "videos/broken.mp4", "videos/empty_room.mp4",
                     "videos/frames", "videos/frames/take1"] + [
        f"videos/frames/take1/{i}.png" for i in sorted(range(1, 11), key=str)] + [
        "videos/moving.mp4"]


def test_upper_body_shot_comes_out_as_a_face_crop(tmp_path):
    frames = moving_face_frames(8, 1280, 720, face_size=100)
    write_video(str(tmp_path / "wide.mp4"), frames)
    summary = run_preprocess([tmp_path / "wide.mp4"], tmp_path / "out", SETTINGS)
    assert summary.clips == 1
    clip = open_dataset(tmp_path / "out").clips[0]
    extent = np.ptp(clip.landmarks[0], axis=0).max()
    assert 128 / 2.2 < extent < 128 / 1.5  # the face fills the crop, not a speck in a frame


def test_parallel_workers_give_the_same_result(inputs, tmp_path, processed):
    out, _ = processed
    summary = run_preprocess([inputs / "videos"], tmp_path / "parallel", SETTINGS,
                             manifest=inputs / "manifest.tsv", workers=2)
    assert summary.clips == 2 and summary.frames_kept == 34
    serial = {clip.clip_id: clip.landmarks for clip in open_dataset(out).clips}
    for clip in open_dataset(tmp_path / "parallel").clips:
        np.testing.assert_allclose(clip.landmarks, serial[clip.clip_id], atol=1e-4)


def test_a_failure_while_writing_leaves_nothing(inputs, tmp_path, monkeypatch):
    import vcam.data.preprocess as preprocess

    def fail(*_):
        raise OSError("disk full")

    monkeypatch.setattr(preprocess, "write_arrays", fail)
    out = tmp_path / "out"
    with pytest.raises(UserError, match=r"every input was skipped .*disk full"):
        run_preprocess([inputs / "videos" / "moving.mp4"], out, SETTINGS)
    assert not out.exists()


def test_when_every_input_is_skipped_preprocess_exits_2_and_leaves_nothing(inputs, tmp_path,
                                                                          capsys):
    from vcam.cli import main

    given = [inputs / "videos" / "empty_room.mp4", inputs / "videos" / "broken.mp4"]
    before = [path.read_bytes() for path in given]
    out = tmp_path / "out"
    assert main(["preprocess", *map(str, given), "--out", str(out), "--size", "64",
                 "--workers", "1", "--json"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith("vcam: error: every input was skipped (2 clips;")
    assert all(line.startswith("skipped ") for line in lines[:-1])  # one line per clip
    assert not out.exists()
    assert [path.read_bytes() for path in given] == before


@pytest.mark.parametrize("case", ["missing", "not_video", "empty_folder", "out_inside_input",
                                  "other_size", "foreign_out", "bad_manifest"])
def test_bad_input_is_a_one_line_error(case, inputs, tmp_path, processed):
    out = tmp_path / "out"
    given = [inputs / "videos"]
    manifest = None
    if case == "missing":
        given = [tmp_path / "nope.mp4"]
    elif case == "not_video":
        (tmp_path / "notes.txt").write_text("hello")
        given = [tmp_path / "notes.txt"]
    elif case == "empty_folder":
        (tmp_path / "empty").mkdir()
        given = [tmp_path / "empty"]
    elif case == "out_inside_input":
        out = inputs / "videos" / "out"
    elif case == "other_size":
        out = processed[0]
    elif case == "foreign_out":
        out.mkdir()
        (out / "holiday.jpg").write_bytes(b"x")
    elif case == "bad_manifest":
        manifest = tmp_path / "manifest.tsv"
        manifest.write_text("file\tperson\nx\ty\n")
    settings = PreprocessSettings(size=64)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(UserError) as raised:
        run_preprocess(given, out, settings, manifest=manifest)
    assert "\n" not in str(raised.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not (inputs / "videos" / "out").exists()


def test_open_dataset_refuses_other_folders(tmp_path):
    with pytest.raises(UserError, match="not a preprocessed dataset"):
        open_dataset(tmp_path)


@pytest.mark.data
@pytest.mark.slow
def test_shared_clips_preprocess(shared_data, tmp_path):
    manifest = shared_data / "MANIFEST.tsv"
    clips = [shared_data / "clips/AliaksandrSiarohin__first-order-model/demo_old/04.mp4",
             shared_data / "clips/ajay-sainy__Wav2Lip-GFPGAN/inputs/kim_7s_raw.mp4",
             shared_data / "clips/KwaiVGI__LivePortrait/assets/examples/source/s18.mp4"]
    clips = [path for path in clips if path.exists()]
    if len(clips) < 3:
        pytest.skip("the expected shared clips are not in this copy of the corpus")
    summary = run_preprocess(clips, tmp_path / "out", PreprocessSettings(max_frames=30),
                             manifest=manifest, workers=2)
    dataset = open_dataset(tmp_path / "out")
    assert summary.clips == 3 and summary.frames_kept >= 60
    assert all(not clip.identity.endswith(clip.clip_id[-8:]) for clip in dataset.clips)
    for clip in dataset.clips:
        assert clip.frame(0).shape == (256, 256, 3)
        extent = np.ptp(clip.landmarks, axis=1).max(axis=1)
        assert np.median(extent) > 256 / 2.5
