"""Snapshot-like episodes, region losses and warm starts (training for the situation of use)."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.train.test_meta import fast_settings
from vcam.data.clips import Clip, open_dataset
from vcam.errors import UserError
from vcam.models.config import get_config
from vcam.models.generator import Generator
from vcam.models.losses import LossWeights, region_l1, region_terms
from vcam.models.store import MetaModels, load_models
from vcam.train.run import run_meta_training, warm_start
from vcam.train.snapshot import (
    FaceStates,
    SnapshotEpisodes,
    far_frames,
    region_maps,
    warp_difficulty,
)

WARP_TINY = dataclasses.replace(get_config("tiny"), generator="warp")


def face(mouth_gap: float = 0.0, turn: float = 0.0) -> np.ndarray:
    """A crude 68-point face in a 64 px crop: eyes 20 px apart, inner lips ``mouth_gap``
    inter-ocular distances apart, the jaw and nose shifted sideways by ``turn`` px."""
    rng = np.random.default_rng(0)
    points = rng.uniform(20, 44, (68, 2))
    points[36], points[45] = (22, 26), (42, 26)
    points[[37, 38, 43, 44], 1], points[[41, 40, 47, 46], 1] = 24, 28
    points[[61, 62, 63], 1] = 44
    points[[67, 66, 65], 1] = 44 + 20 * mouth_gap
    points[60:68, 0] = [28, 30, 32, 34, 36, 34, 32, 30]
    points[:36, 0] += turn
    return points.astype(np.float32)


def test_mouth_opening_and_turns_make_hard_targets():
    source = face(0.0)
    targets = np.stack([face(0.0), face(0.2), face(0.0, turn=6.0)])
    states = FaceStates.of(targets)
    assert states.mouth[1] == pytest.approx(0.2, abs=1e-6)
    difficulty = warp_difficulty(source.astype(np.float64), (0.0, states.eyes[0]),
                                 targets, states)
    assert difficulty[0] < 1 <= difficulty[1]
    assert difficulty[2] >= 1


def test_region_maps_cover_the_mouth_and_paint_only_an_opening_mouth():
    open_face = face(0.3)
    maps = region_maps(open_face, paint=True, size=64)
    mouth, eyes, paint = maps
    for x, y in np.round(open_face[48:68]).astype(int):
        assert mouth[min(y, 63), min(x, 63)] == 1
    assert eyes[26, 22] == 1 and eyes[26, 42] == 1 and eyes[60, 5] == 0
    assert paint.sum() > 0 and np.all(mouth[paint > 0] == 1)
    assert region_maps(open_face, paint=False, size=64)[2].sum() == 0


def test_same_clip_sources_are_far_in_time():
    assert set(far_frames(30, 0)) == set(range(10, 30))
    assert set(far_frames(30, 15)) == set(range(0, 6)) | set(range(25, 30))
    assert len(far_frames(2, 0)) == 1 and len(far_frames(1, 0)) == 1


def synthetic_clip(landmarks: np.ndarray, identity: str = "a") -> Clip:
    meta = {"id": f"clip-{identity}", "identity": identity}
    count = len(landmarks)
    return Clip(Path("unused"), meta, landmarks, np.zeros((count, 2, 3)), np.arange(count))


def test_hard_targets_open_the_mouth_beyond_a_closed_source():
    landmarks = np.stack([face(0.25 if 20 <= i < 30 else 0.0) for i in range(30)])
    episodes = SnapshotEpisodes((synthetic_clip(landmarks),), shots=1, size=64, batch=1,
                                hard_targets=1.0, closed_source=1.0)
    rng = np.random.default_rng(1)
    clip = episodes.clips[0]
    for _ in range(20):
        source = episodes.pick_source(clip, rng)
        assert not 20 <= source < 30
        target = episodes.pick_target(clip, clip.landmarks[source],
                                      far_frames(len(clip), source), rng)
        assert 20 <= target < 30


def test_snapshot_batches_are_reproducible_and_carry_regions(tiny_dataset):
    clips = open_dataset(tiny_dataset).clips
    episodes = SnapshotEpisodes(clips, shots=2, size=64, batch=3, seed=4)
    batch = episodes.draw(2)
    assert batch["frames"].shape == (3, 2, 3, 64, 64)
    assert batch["target_warp"].shape == batch["target"].shape == (3, 3, 64, 64)
    assert batch["regions"].shape == (3, 3, 64, 64)
    assert float(batch["regions"][:, 0].sum()) > 0
    again = episodes.draw(2)
    assert all(torch.equal(batch[key], again[key]) for key in batch)
    assert not torch.equal(batch["target"], episodes.draw(3)["target"])


def test_the_painter_is_reached_where_the_mask_hides_it():
    torch.manual_seed(0)
    generator = Generator(WARP_TINY).eval()  # spectral norm's power iteration stays put
    inputs = torch.rand(2, 6, 64, 64) * 2 - 1
    embedding = torch.rand(2, 32)
    blended, painted, mask = generator(inputs, e=embedding, parts=True)
    assert torch.allclose(blended, mask * inputs[:, 3:] + (1 - mask) * painted, atol=1e-6)
    assert torch.allclose(blended, generator(inputs, e=embedding), atol=1e-6)
    regions = torch.zeros(2, 3, 64, 64)
    regions[:, 2, 20:30, 20:30] = 1
    real = torch.zeros(2, 3, 64, 64)
    weights = LossWeights(paint=1.0, mask_open=1.0, mouth=1.0)
    terms = region_terms(weights, None, blended, painted, mask, real, regions)
    assert set(terms) == {"paint", "mask_open", "mouth"}
    assert float(terms["mouth"].detach()) == 0.0  # an empty mouth box contributes nothing
    painted.retain_grad(), mask.retain_grad()
    (terms["paint"] + terms["mask_open"]).backward()
    assert float(painted.grad[:, :, 20:30, 20:30].abs().sum()) > 0
    assert float(painted.grad[:, :, :20].abs().sum()) == 0
    assert float(mask.grad[:, :, 20:30, 20:30].min()) > 0  # pushes the mask off the warp


def test_region_l1_is_a_mean_inside_the_region():
    fake, real = torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)
    fake[:, :, :4] = 1.0
    region = torch.zeros(1, 8, 8)
    region[:, :2] = 1
    assert float(region_l1(fake, real, region)) == pytest.approx(1.0)
    region[:, 6:] = 1
    assert float(region_l1(fake, real, region)) == pytest.approx(0.5)


def test_snapshot_run_warm_started_from_a_model(tiny_dataset, tmp_path):
    losses = LossWeights(pixel=1.0, mouth=5.0, eyes=2.0, paint=5.0, mask_open=1.0)
    first = run_meta_training(tiny_dataset, tmp_path / "first", WARP_TINY,
                              fast_settings(steps=2, losses=losses), quiet=True)
    assert first.steps == 2
    settings = fast_settings(steps=3, losses=losses, episodes="snapshot", shots=1,
                             init=str(tmp_path / "first"), identity_loss=False)
    run_meta_training(tiny_dataset, tmp_path / "second", WARP_TINY, settings, quiet=True)
    header = (tmp_path / "second" / "log.tsv").read_text().splitlines()[0].split("\t")
    assert {"mouth", "eyes", "paint", "mask_open"} <= set(header)
    started = MetaModels(WARP_TINY, 2)
    warm_start(started, tmp_path / "first")
    trained = load_models(tmp_path / "first").state_dict()
    for key, value in started.state_dict().items():
        assert torch.equal(value, trained[key]), key


def test_warm_start_refuses_another_architecture(tiny_dataset, tmp_path):
    run_meta_training(tiny_dataset, tmp_path / "direct", get_config("tiny"),
                      fast_settings(steps=1), quiet=True)
    with pytest.raises(UserError, match="another architecture"):
        warm_start(MetaModels(WARP_TINY, 2), tmp_path / "direct")


def test_cheaper_steps_skip_the_discriminator_and_shrink_vgg_inputs(tiny_dataset):
    from vcam.models.losses import shrunk
    from vcam.train.meta import MetaTrainer

    images = torch.rand(2, 3, 64, 64)
    assert shrunk(images, 32).shape == (2, 3, 32, 32) and shrunk(images, 0) is images
    assert torch.allclose(shrunk(images, 32).mean(), images.mean(), atol=1e-6)
    clips = open_dataset(tiny_dataset).clips
    settings = fast_settings(discriminator_every=2, identity_every=2, shots=1,
                             episodes="snapshot")
    trainer = MetaTrainer(MetaModels(WARP_TINY, len(clips)), settings, torch.device("cpu"))
    episodes = SnapshotEpisodes(clips, shots=1, size=64, batch=2)
    before = [p.detach().clone() for p in trainer.models.discriminator.parameters()]
    first = trainer.step(episodes.draw(0))
    after_first = [p.detach().clone() for p in trainer.models.discriminator.parameters()]
    second = trainer.step(episodes.draw(1))
    after_second = list(trainer.models.discriminator.parameters())
    assert "discriminator" in first and "adversarial" in first
    assert "discriminator" not in second and "adversarial" not in second
    assert any(not torch.equal(a, b) for a, b in zip(before, after_first))
    # Only D's own update moves D (G's step holds it frozen).
    assert all(torch.equal(a, b) for a, b in zip(after_first, after_second))


def test_a_cavity_model_trains_on_warps_with_the_mouth_cut_out(tiny_dataset):
    clip = open_dataset(tiny_dataset).clips[0]
    landmarks = np.array(clip.landmarks, np.float32)
    iod = np.linalg.norm(landmarks[:, 36] - landmarks[:, 45], axis=1)
    landmarks[8:, 60:68, 1] -= 0.15 * iod[8:, None]  # the second half opens its mouth wide
    landmarks[8:, [65, 66, 67], 1] += 0.3 * iod[8:, None]
    opening = (dataclasses.replace(clip, landmarks=landmarks),)
    draws = {cavity: SnapshotEpisodes(opening, shots=1, size=64, batch=4, seed=1,
                                      hard_targets=1.0, closed_source=1.0, cavity=cavity).draw(0)
             for cavity in (False, True)}
    plain, holed = draws[False], draws[True]
    assert torch.equal(plain["target"], holed["target"])
    paint = holed["regions"][:, 2:3].expand_as(holed["target_warp"]) > 0
    assert bool(paint.any())  # the mouth opened beyond the source
    grown = torch.nn.functional.max_pool2d(paint.float(), 5, 1, 2) > 0
    assert torch.equal(plain["target_warp"][~grown], holed["target_warp"][~grown])
    darker = plain["target_warp"][paint].mean() - holed["target_warp"][paint].mean()
    assert float(darker) > 0.2


def test_the_mouth_input_is_chosen_on_the_command_line_and_kept_by_the_model(tiny_dataset,
                                                                              tmp_path):
    from vcam.cli import main
    from vcam.train.run import RunPlan, episodes_for

    code = main(["train", "meta", "--data", str(tiny_dataset), "--config", "tiny",
                 "--generator", "warp", "--mouth-input", "cavity", "--episodes", "snapshot",
                 "--shots", "1", "--steps", "1", "--vgg", "none", "--no-identity-loss",
                 "--workers", "0", "--device", "cpu", "--out", str(tmp_path / "run")])
    assert code == 0
    models = load_models(tmp_path / "run")
    assert models.config.mouth_input == "cavity"
    plan = RunPlan.from_dict(json.loads((tmp_path / "run" / "run.json").read_text()))
    for episodes in ("snapshot", "nearest"):
        plan = dataclasses.replace(plan, settings=dataclasses.replace(plan.settings,
                                                                      episodes=episodes))
        assert episodes_for(plan, open_dataset(tiny_dataset).clips).cavity
    assert not episodes_for(dataclasses.replace(plan, config=WARP_TINY), ()).cavity
    # A warm start keeps the model's choice unless told otherwise.
    for given, kept in ((None, "cavity"), ("warp", "warp")):
        out = tmp_path / f"from-{given}"
        choice = ["--mouth-input", given] if given else []
        assert main(["train", "meta", "--data", str(tiny_dataset), "--config", "tiny",
                     "--generator", "warp", *choice, "--init", str(tmp_path / "run"),
                     "--shots", "1", "--steps", "1", "--vgg", "none", "--no-identity-loss",
                     "--workers", "0", "--device", "cpu", "--out", str(out)]) == 0
        assert load_models(out).config.mouth_input == kept
    # Resuming without the option continues with the run's own choice.
    assert main(["train", "meta", "--data", str(tiny_dataset), "--config", "tiny",
                 "--generator", "warp", "--episodes", "snapshot", "--shots", "1", "--steps", "2",
                 "--vgg", "none", "--no-identity-loss", "--workers", "0", "--device", "cpu",
                 "--out", str(tmp_path / "run"), "--resume"]) == 0
    assert load_models(tmp_path / "run").config.mouth_input == "cavity"
