"""`vcam train export`: a run's checkpoint as a shipping model file, its JSON and the landmark
shape basis fitted on the run's training clips."""

import json

import numpy as np
import pytest
import torch

from tests.train.test_meta import fast_settings
from vcam.cli import main
from vcam.data.clips import open_dataset
from vcam.landmarks.shape_basis import load_shape_basis
from vcam.models.config import get_config
from vcam.models.store import load_models
from vcam.train.run import run_meta_training


@pytest.fixture(scope="module")
def tiny_run(tiny_dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("export") / "run"
    run_meta_training(tiny_dataset, run, get_config("tiny"), fast_settings(steps=2), quiet=True)
    return run


def test_export_writes_a_loadable_half_precision_model(tiny_run, tiny_dataset, tmp_path,
                                                      capsys):
    out = tmp_path / "model.safetensors"
    assert main(["train", "export", str(tiny_run), "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["step"] == 2
    exported, trained = load_models(out), load_models(tiny_run)
    for (name, value), (_, reference) in zip(exported.state_dict().items(),
                                             trained.state_dict().items(), strict=True):
        if value.is_floating_point():  # FP16 storage: within half precision of the original
            assert torch.allclose(value, reference, rtol=2e-3, atol=1e-4), name
    metadata = json.loads(out.with_suffix(".json").read_text())
    dataset = open_dataset(tiny_dataset)
    counted = metadata["data"]["train"]["frames"] + metadata["data"]["validation"]["frames"]
    assert counted == sum(len(clip) for clip in dataset.clips)
    assert metadata["precision"] == "fp16" and metadata["split"]["validation"]
    basis = load_shape_basis(tmp_path / "model.shape-basis.safetensors")
    train_clips = [clip for clip in dataset.clips
                   if clip.identity in metadata["split"]["train"]]
    assert basis.samples == sum(len(clip) for clip in train_clips)
    shapes = np.concatenate([clip.landmarks for clip in train_clips])
    rebuilt = basis.reconstruct(basis.project(shapes, dataset.size), dataset.size)
    assert np.abs(rebuilt - shapes).mean() < 1.0  # px: the basis describes these faces


def test_fp32_export_is_twice_the_size_and_nothing_is_replaced_without_force(
        tiny_run, tmp_path, capsys):
    half, full = tmp_path / "half.safetensors", tmp_path / "full.safetensors"
    assert main(["train", "export", str(tiny_run), "--out", str(half)]) == 0
    assert main(["train", "export", str(tiny_run), "--out", str(full),
                 "--precision", "fp32"]) == 0
    assert 1.8 < full.stat().st_size / half.stat().st_size < 2.1
    before = half.read_bytes()
    assert main(["train", "export", str(tiny_run), "--out", str(half),
                 "--precision", "fp32"]) == 2
    assert "--force" in capsys.readouterr().err
    assert half.read_bytes() == before
    assert main(["train", "export", str(tiny_run), "--out", str(half), "--precision",
                 "fp32", "--force"]) == 0
    assert half.read_bytes() != before


def test_export_refuses_what_is_not_a_run(tmp_path, capsys):
    assert main(["train", "export", str(tmp_path), "--out", str(tmp_path / "m.safetensors")]) == 2
    assert "not a `vcam train meta` run" in capsys.readouterr().err
    assert not (tmp_path / "m.safetensors").exists()
