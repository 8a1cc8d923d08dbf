"""`vcam bench enroll`: feed-forward enrollment time for one photo and fine-tuning time.

Speed does not depend on what the weights have learned, so the networks are freshly
initialised for the chosen config (saved and re-loaded, as the command would).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from vcam.avatar import save_avatar
from vcam.data.synthetic import astronaut
from vcam.enroll import Photo, enroll
from vcam.landmarks.detector import create_detector
from vcam.models.config import get_config
from vcam.models.store import MetaModels, load_models
from vcam.train.checkpoint import save_checkpoint
from vcam.train.finetune import FineTuneSettings


def timed(action) -> tuple[object, float]:
    started = time.perf_counter()
    result = action()
    return result, time.perf_counter() - started


def run_enroll_bench(config_name: str, steps: int, vgg_weights: str | None) -> dict:
    config = get_config(config_name)
    photo = Photo("astronaut", astronaut())
    with tempfile.TemporaryDirectory() as scratch:
        run = Path(scratch) / "model"
        torch.manual_seed(0)
        save_checkpoint(run, 0, {"models": MetaModels(config, 4)}, {},
                        {"config": config.to_dict()})
        detector = create_detector("dlib")
        models, load_seconds = timed(lambda: load_models(run))

        def feed_forward():
            avatar, _ = enroll([photo], "bench", models, detector, FineTuneSettings())
            return save_avatar(avatar, Path(scratch) / "ff.avatar.safetensors", force=True)

        _, ff_seconds = timed(feed_forward)
        models = load_models(run)
        settings = FineTuneSettings(steps=steps, vgg_weights=vgg_weights)
        _, ft_seconds = timed(lambda: enroll([photo], "bench", models, detector, settings))
    return {"config": config_name, "threads": torch.get_num_threads(),
            "model_load_seconds": load_seconds, "feed_forward_seconds": ff_seconds,
            "feed_forward_with_load_seconds": ff_seconds + load_seconds,
            "finetune_steps": steps, "finetune_seconds": ft_seconds,
            "finetune_seconds_per_step": ft_seconds / max(steps, 1)}
