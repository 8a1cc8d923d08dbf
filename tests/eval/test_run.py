import json

import cv2
import numpy as np
import pytest

from tests.conftest import REPO
from vcam.cli import main
from vcam.data.clips import open_dataset
from vcam.data.preprocess import PreprocessSettings, run_preprocess
from vcam.eval.motion import ALL_FRAMES, MOTIONS, SUBSETS
from vcam.eval.run import enrolled, render_baseline


def run_eval(model, data, out, *extra: str) -> int:
    return main(["eval", "--model", str(model), "--data", str(data), "--out", str(out),
                 "--vgg", "none", *extra])


def check_report(out, shots: list[int], methods: set[str], clips: int) -> dict:
    report = json.loads((out / "metrics.json").read_text(),
                        parse_constant=lambda name: pytest.fail(f"{name} in metrics.json"))
    overall = report["overall"]
    assert {(row["method"], row["shots"]) for row in overall} == {
        (method, k) for method in methods for k in shots}
    for row in overall:
        assert row["clips"] == clips
        assert 0 < row["ssim"] <= 1 and row["psnr"] > 5 and 0 < row["csim"] <= 1
        assert row["pose_error"] >= 0 and row["flicker"] > 0
        assert 0 <= row["mouth_opening_error"] < 0.5
    table = (out / "metrics.md").read_text()
    assert "warping baseline" in table and "ours, feed-forward" in table
    assert "## By motion" in table and "## By subset" in table and "mouth PSNR" in table
    assert "mouth opening error" in table
    assert "## Against the warp" in table
    assert {(row["method"], row["shots"], row["subset"]) for row in report["versus_warp"]} == {
        (method, k, subset) for method in methods - {"warp"} for k in shots
        for subset in SUBSETS}
    check_motion_rows(report)
    check_subset_rows(report)
    assert len(list((out / "grids").glob("*.png"))) == clips * len(shots)
    for method, k in {(row["method"], row["shots"]) for row in overall} - {("warp", k)
                                                                          for k in shots}:
        differ = cv2.imread(str(out / f"differ-most-{method}-k{k}.png"))
        frames = min(8, report["settings"]["frames"] * clips)
        size = differ.shape[1] // 3
        assert differ.shape[:2] == (size * frames, size * 3)  # real | warp | ours
    video = cv2.VideoCapture(str(out / "side_by_side.mp4"))
    assert video.isOpened() and video.get(cv2.CAP_PROP_FRAME_COUNT) > 0
    return report


def check_motion_rows(report: dict) -> None:
    """by_motion splits every (method, K)'s frames by kind of motion, all of them."""
    by_motion = report["by_motion"]
    assert {row["motion"] for row in by_motion} <= set(MOTIONS)
    for overall in report["overall"]:
        rows = [row for row in by_motion
                if (row["method"], row["shots"]) == (overall["method"], overall["shots"])]
        assert rows and all(row["frames"] > 0 for row in rows)
        assert sum(row["frames"] for row in rows) == overall["frames"]
        assert all(0 < row["ssim"] <= 1 and row["pose_error"] >= 0 for row in rows)


def check_subset_rows(report: dict) -> None:
    """by_subset gives every (method, K) its figures on all frames, the frames whose mouth
    opens beyond the enrollment and the large-pose frames, mouth and eye regions included."""
    by_subset = report["by_subset"]
    for overall in report["overall"]:
        rows = {row["subset"]: row for row in by_subset
                if (row["method"], row["shots"]) == (overall["method"], overall["shots"])}
        assert set(rows) == set(SUBSETS)
        assert rows[ALL_FRAMES]["frames"] == overall["frames"]
        assert rows[ALL_FRAMES]["mouth_ssim"] == pytest.approx(
            np.mean([row["mouth_ssim"] for row in report["per_clip"]
                     if (row["method"], row["shots"]) == (overall["method"], overall["shots"])]),
            abs=0.05)
        for row in rows.values():
            assert 0 <= row["frames"] <= overall["frames"]
            if row["frames"]:
                assert all(0 < row[f"{region}_ssim"] <= 1 and row[f"{region}_psnr"] > 5
                           for region in ("mouth", "eye"))


def test_eval_writes_every_output(tiny_model, tiny_dataset, tmp_path, capsys):
    out = tmp_path / "report"
    assert run_eval(tiny_model, tiny_dataset, out, "--shots", "1", "2", "--frames", "5",
                    "--max-clips", "2", "--finetune-steps", "2", "--json") == 0
    printed = json.loads(capsys.readouterr().out)
    report = check_report(out, [1, 2], {"ff", "ft", "warp"}, clips=2)
    assert printed == {key: report[key]
                       for key in ("overall", "versus_warp", "by_subset", "by_motion")}
    assert all(row["frames"] == 5 for row in report["per_clip"])
    grid = cv2.imread(str(next((out / "grids").glob("*.png"))))
    assert grid.shape[1] == 64 * 6  # enrollment, landmarks, real, ff, ft, warp
    assert run_eval(tiny_model, tiny_dataset, out) == 2
    assert "--force" in capsys.readouterr().err


def test_eval_skips_identities_the_model_trained_on(tiny_dataset, tmp_path):
    from vcam.models.config import get_config
    from vcam.train.meta import MetaSettings
    from vcam.train.run import run_meta_training

    run = tmp_path / "run"
    run_meta_training(tiny_dataset, run, get_config("tiny"),
                      MetaSettings(steps=1, shots=2, identity_loss=False, loader_workers=0,
                                   sample_every=100), quiet=True)
    held_out = json.loads((run / "run.json").read_text())["split"]["validation"]
    assert run_eval(run, tiny_dataset, tmp_path / "report", "--shots", "1",
                    "--frames", "3") == 0
    report = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert {row["identity"] for row in report["per_clip"]} == set(held_out)


def test_baseline_reproduces_the_enrollment_frame_for_its_own_landmarks(tiny_dataset):
    clip = open_dataset(tiny_dataset).clips[0]
    enrollment = enrolled(clip, 3, 64)
    frames = render_baseline(enrollment, [enrollment.landmarks[1], enrollment.landmarks[2]], 64)
    for frame, crop in zip(frames, enrollment.crops[1:]):
        assert np.abs(frame.astype(int) - crop.astype(int)).max() <= 1


def test_eval_refuses_to_write_into_the_repository(tiny_model, tiny_dataset, capsys):
    assert run_eval(tiny_model, tiny_dataset, REPO / "eval-report") == 2
    assert "inside the vcam repository" in capsys.readouterr().err
    assert not (REPO / "eval-report").exists()


@pytest.mark.data
@pytest.mark.slow
def test_eval_over_two_shared_clips(shared_data, tiny_model, tmp_path):
    clips = [shared_data / "clips/AliaksandrSiarohin__first-order-model/demo_old/00.mp4",
             shared_data / "clips/AliaksandrSiarohin__first-order-model/demo_old/08.mp4"]
    if not all(path.exists() for path in clips):
        pytest.skip("the expected shared clips are not in this copy of the corpus")
    run_preprocess(clips, tmp_path / "data", PreprocessSettings(size=64, max_frames=40),
                   manifest=shared_data / "MANIFEST.tsv")
    out = tmp_path / "report"
    assert run_eval(tiny_model, tmp_path / "data", out, "--shots", "1", "8",
                    "--frames", "8") == 0
    check_report(out, [1, 8], {"ff", "warp"}, clips=2)


def test_fine_tuning_one_clip_leaves_the_loaded_model_unchanged(tiny_model, tiny_dataset):
    import torch

    from vcam.eval.run import LoadedModel, personalise
    from vcam.train.finetune import FineTuneSettings

    model = LoadedModel(tiny_model)
    enrollment = enrolled(open_dataset(tiny_dataset).clips[0], 2, 64)
    tuning = FineTuneSettings(lr_generator=1e-2, identity_loss=False)
    inputs = enrollment.marks[:1]
    before = personalise(model, enrollment, 0, tuning)(inputs).clone()
    tuned = personalise(model, enrollment, 3, tuning)(inputs)
    assert not torch.allclose(tuned, before)
    after = personalise(model, enrollment, 0, tuning)(inputs)
    assert torch.equal(after, before)


def test_figures_without_frames_are_written_as_null():
    from vcam.eval.report import json_text

    text = json_text({"rows": [{"mouth_interior": float("nan"), "psnr": float("inf"),
                                "ssim": 0.5}], "shots": (1, 8)})
    assert json.loads(text) == {"rows": [{"mouth_interior": None, "psnr": None, "ssim": 0.5}],
                                "shots": [1, 8]}
