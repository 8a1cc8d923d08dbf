import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.conftest import fast_settings
from vcam.errors import UserError
from vcam.models.config import get_config
from vcam.train.checkpoint import latest_checkpoint
from vcam.train.run import run_meta_training


def test_tiny_run_lowers_the_l1_to_the_target(tiny_dataset, tmp_path):
    result = run_meta_training(tiny_dataset, tmp_path / "run", get_config("tiny"),
                               fast_settings(steps=40, checkpoint_every=40), quiet=True)
    assert result.steps == 40
    rows = (tmp_path / "run" / "log.tsv").read_text().splitlines()
    header = rows[0].split("\t")
    l1 = [float(row.split("\t")[header.index("l1")]) for row in rows[1:]]
    assert np.mean(l1[-5:]) < 0.6 * np.mean(l1[:3])
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["split"]["validation"] and run["split"]["train"]
    assert not set(run["split"]["validation"]) & set(run["split"]["train"])
    assert len(run["train_clips"]) == 2
    assert (tmp_path / "run" / "samples" / "step-0000040.png").is_file()
    assert any((tmp_path / "run" / "tensorboard").iterdir())


def checkpoint_weights(run) -> dict:
    return load_file(str(latest_checkpoint(run) / "weights.safetensors"))


def test_resume_gives_exactly_the_uninterrupted_run(tiny_dataset, tmp_path):
    config = get_config("tiny")
    run_meta_training(tiny_dataset, tmp_path / "whole", config, fast_settings(steps=6),
                      quiet=True)
    run_meta_training(tiny_dataset, tmp_path / "split", config, fast_settings(steps=3),
                      quiet=True)
    resumed = run_meta_training(tiny_dataset, tmp_path / "split", config,
                                fast_settings(steps=6), resume=True, quiet=True)
    assert resumed.first_step == 3 and resumed.steps == 6
    whole, split = checkpoint_weights(tmp_path / "whole"), checkpoint_weights(tmp_path / "split")
    assert whole.keys() == split.keys()
    for key in whole:
        np.testing.assert_array_equal(whole[key], split[key], err_msg=key)


def test_existing_run_needs_resume_and_the_same_config(tiny_dataset, tmp_path):
    run_meta_training(tiny_dataset, tmp_path / "run", get_config("tiny"),
                      fast_settings(steps=1), quiet=True)
    with pytest.raises(UserError, match="--resume"):
        run_meta_training(tiny_dataset, tmp_path / "run", get_config("tiny"),
                          fast_settings(steps=2), quiet=True)
    with pytest.raises(UserError, match="another --config"):
        run_meta_training(tiny_dataset, tmp_path / "run", get_config("cpu"),
                          fast_settings(steps=2), resume=True, quiet=True)


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tiny_dataset, tmp_path,
                                                              monkeypatch):
    import vcam.train.meta as meta

    original = meta.generator_adversarial

    def poisoned(scores):
        poisoned.calls += 1
        value = original(scores)
        return value * float("nan") if poisoned.calls == 5 else value

    poisoned.calls = 0
    monkeypatch.setattr(meta, "generator_adversarial", poisoned)
    with pytest.raises(UserError, match="diverged at step 5") as raised:
        run_meta_training(tiny_dataset, tmp_path / "run", get_config("tiny"),
                          fast_settings(steps=8), quiet=True)
    assert "step-0000003" in str(raised.value)
    assert latest_checkpoint(tmp_path / "run").name == "step-0000003"


def test_collapse_to_flat_images_is_caught(tiny_dataset, tmp_path, monkeypatch):
    import torch

    from vcam.models.generator import Generator

    monkeypatch.setattr(Generator, "forward",
                        lambda self, landmarks, e=None, psi=None: torch.tanh(
                            0 * landmarks + self.head_conv.parametrizations.weight.original.sum()
                            * 0 + e.sum() * 0))
    with pytest.raises(UserError, match="flat images"):
        run_meta_training(tiny_dataset, tmp_path / "run", get_config("tiny"),
                          fast_settings(steps=8, collapse_patience=3), quiet=True)


@pytest.mark.parametrize("case", ["empty", "not_preprocessed"])
def test_bad_data_is_a_one_line_error(case, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    if case == "not_preprocessed":
        (data / "video.mp4").write_bytes(b"x")
    with pytest.raises(UserError) as raised:
        run_meta_training(data, tmp_path / "run", get_config("tiny"), fast_settings(),
                          quiet=True)
    assert "vcam preprocess" in str(raised.value) and "\n" not in str(raised.value)
    assert not (tmp_path / "run").exists()
