"""The same `vcam train meta` command under torchrun: two CPU processes with gloo."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from vcam.train.checkpoint import latest_checkpoint


def failure_lines(stderr: str) -> str:
    """The lines that say why a rank died (torchrun's summary hides them)."""
    keys = ("error", "terminate", "abort", "exception", "what()", "gloo")
    lines = [line for line in stderr.splitlines() if any(k in line.lower() for k in keys)]
    return "\n".join(lines[:40]) or stderr[-2000:]


@pytest.mark.slow
def test_two_processes_train_identical_replicas(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", str(REPO / "run_vcam.py"), "train", "meta",
               "--data", str(tiny_dataset), "--config", "tiny", "--out", str(run),
               "--steps", "4", "--shots", "2", "--vgg", "none", "--no-identity-loss",
               "--loss-weights", "pixel=1", "--checkpoint-every", "2", "--workers", "0",
               "--lr-generator", "2e-3", "--device", "cpu", "--log-every", "1", "--json"]
    environment = os.environ | {"OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env=environment, cwd=tmp_path)
    assert result.returncode == 0, failure_lines(result.stderr)
    # Only rank 0 reports: one JSON document on stdout.
    assert json.loads(result.stdout)["steps"] == 4
    state = json.loads((latest_checkpoint(run) / "state.json").read_text())
    assert state["step"] == 4 and state["world_size"] == 2
    first, second = state["replica_fingerprints"]
    assert first == second
    # Only rank 0 wrote: one log line per step, not two.
    steps = [line.split("\t")[0] for line in (run / "log.tsv").read_text().splitlines()[1:]]
    assert steps == ["1", "2", "3", "4"]


@pytest.mark.slow
def test_every_rank_refuses_an_existing_run_without_hanging(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", str(REPO / "run_vcam.py"), "train", "meta",
               "--data", str(tiny_dataset), "--config", "tiny", "--out", str(run),
               "--steps", "2", "--vgg", "none", "--no-identity-loss", "--device", "cpu"]
    environment = os.environ | {"OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                            env=environment, cwd=tmp_path)
    assert result.returncode != 0
    # Both ranks refuse (their lines may interleave) instead of one waiting on the other.
    assert result.stderr.count("already holds a run: pass --resume") == 2
    assert (run / "run.json").read_text() == "{}"
