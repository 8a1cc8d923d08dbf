"""The same `vcam train meta` command under torchrun: two CPU processes with gloo."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from vcam.train.checkpoint import latest_checkpoint


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
    assert result.returncode == 0, result.stderr[-2000:]
    state = json.loads((latest_checkpoint(run) / "state.json").read_text())
    assert state["step"] == 4 and state["world_size"] == 2
    first, second = state["replica_fingerprints"]
    assert first == second
    # Only rank 0 wrote: one log line per step, not two.
    steps = [line.split("\t")[0] for line in (run / "log.tsv").read_text().splitlines()[1:]]
    assert steps == ["1", "2", "3", "4"]
