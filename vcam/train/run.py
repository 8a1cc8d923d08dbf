"""`vcam train meta`: a meta-learning run folder, resumable, on one CPU, one GPU or many
processes under ``torchrun`` (DistributedDataParallel; only rank 0 writes).

RUN/run.json           config, settings, identity split, W's column order, data folder
RUN/checkpoints/       safetensors + JSON, the newest ``keep_checkpoints`` of them
RUN/log.tsv            step, seconds and every loss, every ``log_every`` steps
RUN/samples/           PNG grids (enrollment | target landmarks | generated | real)
RUN/tensorboard/       TensorBoard scalars
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.distributed as dist

from vcam.data.clips import Dataset, open_dataset
from vcam.errors import UserError
from vcam.files import atomic_write_text
from vcam.images import to_image, to_tensor
from vcam.landmarks.raster import rasterise
from vcam.models.config import ModelConfig
from vcam.models.generator import generator_input
from vcam.models.losses import LossWeights
from vcam.models.store import MetaModels, load_models
from vcam.train.checkpoint import (
    MODELS,
    MOUTH_CRITIC,
    TRAINED,
    Checkpoint,
    holds_module,
    latest_checkpoint,
    load_checkpoint,
    module_state,
    restore_modules,
    restore_optimisers,
    save_checkpoint,
)
from vcam.train.episodes import (
    Episodes,
    Split,
    load_frame,
    split_identities,
)
from vcam.train.meta import DivergedError, MetaSettings, MetaTrainer, unwrap
from vcam.train.snapshot import SnapshotEpisodes
from vcam.warp import WarpGuide

RUN_FILE = "run.json"
LOG_FILE = "log.tsv"


@dataclass(frozen=True)
class Process:
    """This process's place in a (possibly one-process) distributed run."""

    rank: int
    world: int
    device: torch.device

    @property
    def writes(self) -> bool:
        return self.rank == 0


def start_process(device: str) -> Process:
    """Join the process group when launched by torchrun (gloo on CPU, NCCL on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if world == 1:
        return Process(0, 1, torch.device("cuda" if use_cuda else "cpu"))
    dist.init_process_group("nccl" if use_cuda else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local)
    return Process(dist.get_rank(), world,
                   torch.device(f"cuda:{local}" if use_cuda else "cpu"))


@dataclass(frozen=True)
class RunPlan:
    """What a run trains on: the architecture, settings, split and W's columns."""

    config: ModelConfig
    settings: MetaSettings
    split: Split
    train_clips: tuple[str, ...]
    data: str

    def to_dict(self) -> dict:
        settings = dataclasses.asdict(self.settings)
        return {"format": "vcam-meta-run", "version": 1, "config": self.config.to_dict(),
                "settings": settings, "split": self.split.to_dict(),
                "train_clips": list(self.train_clips), "data": self.data}

    @classmethod
    def from_dict(cls, data: dict) -> RunPlan:
        settings = dict(data["settings"])
        settings["losses"] = LossWeights(**settings["losses"])
        return cls(ModelConfig.from_dict(data["config"]), MetaSettings(**settings),
                   Split.from_dict(data["split"]), tuple(data["train_clips"]), data["data"])


def plan_run(dataset: Dataset, config: ModelConfig, settings: MetaSettings) -> RunPlan:
    split = split_identities([clip.identity for clip in dataset.clips],
                             settings.validation_fraction, settings.seed)
    train = tuple(sorted(clip.clip_id for clip in dataset.clips if clip.identity in split.train))
    if not train:
        raise UserError(f"{dataset.root} has no clips left for training after holding out "
                        "validation identities: add clips or lower --validation-fraction")
    return RunPlan(config, settings, split, train, str(dataset.root))


def prepare_run(out: Path, data: Path, config: ModelConfig, settings: MetaSettings,
                resume: bool) -> tuple[RunPlan, Dataset]:
    """The plan of a new run, or of the run being resumed (whose stored plan wins, except
    for the number of steps)."""
    dataset = open_dataset(data)
    existing = out / RUN_FILE
    if existing.exists() and not resume:
        raise UserError(f"{out} already holds a run: pass --resume to continue it, or "
                        "choose another --out")
    if resume and existing.exists():
        plan = RunPlan.from_dict(json.loads(existing.read_text()))
        if plan.config != config:
            raise UserError(f"{out} was trained with another --config: resume with the same one")
        plan = dataclasses.replace(plan, settings=dataclasses.replace(
            plan.settings, steps=settings.steps))
        return plan, dataset
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    return plan_run(dataset, config, settings), dataset


def training_clips(dataset: Dataset, plan: RunPlan):
    by_id = {clip.clip_id: clip for clip in dataset.clips}
    missing = [clip_id for clip_id in plan.train_clips if clip_id not in by_id]
    if missing:
        raise UserError(f"{dataset.root} lacks {len(missing)} clips this run trained on "
                        f"(e.g. {missing[0]}): resume with the same --data")
    return tuple(by_id[clip_id] for clip_id in plan.train_clips)


class StepBatches(torch.utils.data.Dataset):
    """Batch ``i`` is the episodes of step ``first + i``: loader workers can prefetch them
    without changing what each step sees."""

    def __init__(self, episodes: Episodes, first: int, last: int, rank: int) -> None:
        self.episodes, self.first, self.last, self.rank = episodes, first, last, rank

    def __len__(self) -> int:
        return max(0, self.last - self.first)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.episodes.draw(self.first + index, self.rank)


def batches(episodes: Episodes, first: int, last: int, rank: int,
            workers: int) -> Iterator[dict[str, torch.Tensor]]:
    loader = torch.utils.data.DataLoader(StepBatches(episodes, first, last, rank),
                                         batch_size=None, num_workers=workers,
                                         pin_memory=torch.cuda.is_available())
    yield from loader


def fingerprint(models: torch.nn.Module) -> float:
    """A number that differs between replicas whose weights differ."""
    with torch.no_grad():
        return float(sum((p.double() * (1 + (i % 7))).sum() for i, p in
                         enumerate(models.state_dict().values()) if p.is_floating_point()))


def replica_fingerprints(models: torch.nn.Module, process: Process) -> list[float]:
    value = torch.tensor([fingerprint(models)], dtype=torch.float64, device=process.device)
    if process.world == 1:
        return [float(value)]
    gathered = [torch.zeros_like(value) for _ in range(process.world)]
    dist.all_gather(gathered, value)
    return [float(v) for v in gathered]


class RunLog:
    """log.tsv, TensorBoard scalars and the progress bar: rank 0 only."""

    def __init__(self, out: Path, first: int, last: int, enabled: bool, quiet: bool) -> None:
        self.enabled = enabled
        self.path = out / LOG_FILE
        self.started = time.perf_counter()
        self.writer = None
        self.bar = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        self.writer = SummaryWriter(str(out / "tensorboard"), purge_step=first)
        self.bar = tqdm(total=last, initial=first, desc="train meta", unit="step",
                        disable=quiet, dynamic_ncols=True)

    def step(self, step: int, losses: dict[str, float], every: int) -> None:
        if not self.enabled:
            return
        self.bar.update()
        if step % every and step != 1:
            return
        self.bar.set_postfix({key: f"{losses[key]:.3g}" for key in
                              ("l1", "generator_total", "discriminator") if key in losses})
        for name, value in losses.items():
            self.writer.add_scalar(f"train/{name}", value, step)
        self.append(step, losses)

    def append(self, step: int, losses: dict[str, float]) -> None:
        """One row; the columns are the header's (a term absent this step, such as an
        identity loss computed every few steps, is written as nan)."""
        if self.path.exists():
            with self.path.open() as stream:
                columns = stream.readline().rstrip("\n").split("\t")[2:]
        else:
            columns = list(losses)
            atomic_write_text(self.path, "\t".join(["step", "seconds", *columns]) + "\n")
        elapsed = time.perf_counter() - self.started
        values = (f"{losses[name]:.5g}" if name in losses else "nan" for name in columns)
        with self.path.open("a") as stream:
            stream.write("\t".join([str(step), f"{elapsed:.1f}", *values]) + "\n")

    def scalar(self, name: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.bar is not None:
            self.bar.close()


@torch.no_grad()
def sample_grid(trainer: MetaTrainer, clips, shots: int, size: int) -> tuple[np.ndarray, float]:
    """Rows of (first enrollment frame | target landmarks | generated | real) for a few
    clips: each is enrolled from its first ``shots`` frames and driven by its last frame.
    Returns the grid and the mean L1 of the generated frames."""
    models = trainer.models
    models.eval()
    rows, errors = [], []
    for clip in clips:
        pairs = [load_frame(clip, i, size) for i in range(min(shots, len(clip) - 1))]
        frames = torch.stack([to_tensor(frame) for frame, _ in pairs]).to(trainer.device)
        landmarks = torch.stack([to_tensor(rasterise(p, size)) for _, p in pairs])
        target, target_points = load_frame(clip, len(clip) - 1, size)
        target_landmarks = to_tensor(rasterise(target_points, size))[None]
        warped = None
        if models.config.generator == "warp":
            guide = WarpGuide(np.stack([f for f, _ in pairs]), np.stack([p for _, p in pairs]),
                              cavity=models.config.mouth_cavity)
            warped = to_tensor(guide.network_image(target_points, guide.image_for(target_points)))
            warped = warped[None].to(trainer.device)
        embedding = models.embedder(frames, landmarks.to(trainer.device)).mean(0, keepdim=True)
        inputs = generator_input(target_landmarks.to(trainer.device), warped)
        fake = models.generator(inputs, e=embedding)[0].cpu()
        errors.append(float((fake - to_tensor(target)).abs().mean()))
        rows.append(np.hstack([pairs[0][0], to_image(target_landmarks[0]), to_image(fake),
                               target]))
    models.train()
    return np.vstack(rows), float(np.mean(errors))


def save_samples(out: Path, step: int, trainer: MetaTrainer, clips, plan: RunPlan,
                 log: RunLog) -> None:
    grid, error = sample_grid(trainer, clips, plan.settings.shots, plan.config.image_size)
    folder = out / "samples"
    folder.mkdir(exist_ok=True)
    cv2.imwrite(str(folder / f"step-{step:07d}.png"), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    log.scalar("validation/l1", error, step)


def sample_clips(dataset: Dataset, plan: RunPlan, count: int = 4):
    """Clips of validation identities (training ones when none are held out)."""
    held = [clip for clip in dataset.clips if clip.identity in plan.split.validation]
    chosen = held or [clip for clip in dataset.clips if clip.clip_id in plan.train_clips]
    return [clip for clip in chosen if len(clip) >= 2][:count]


def wrap_for(process: Process):
    if process.world == 1:
        return lambda module: module
    ids = [process.device.index] if process.device.type == "cuda" else None
    return lambda module: torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)


def build_trainer(plan: RunPlan, process: Process, out: Path) -> tuple[MetaTrainer, int]:
    """Networks, optimisers and losses, restored from the latest checkpoint if any; returns
    the trainer and the number of steps already done."""
    torch.manual_seed(plan.settings.seed)
    models = MetaModels(plan.config, len(plan.train_clips))
    latest = latest_checkpoint(out)
    checkpoint = load_checkpoint(latest) if latest is not None else None
    averaged = checkpoint is not None and holds_module(checkpoint, TRAINED)
    if checkpoint is not None:
        restore_modules(checkpoint, {TRAINED if averaged else MODELS: models})
    elif plan.settings.init:
        warm_start(models, Path(plan.settings.init))
    models.to(process.device).train()
    trainer = MetaTrainer(models, plan.settings, process.device, wrap_for(process))
    if checkpoint is not None:
        restore_training_aids(checkpoint, trainer)
        if averaged and trainer.average is not None:
            trainer.average.restore(module_state(checkpoint, MODELS))
    return trainer, checkpoint.step if checkpoint is not None else 0


def restore_training_aids(checkpoint: Checkpoint, trainer: MetaTrainer) -> None:
    """The optimisers, and the run's mouth critic, as the checkpoint left them."""
    if trainer.mouth_critic is not None:
        restore_modules(checkpoint, {MOUTH_CRITIC: unwrap(trainer.mouth_critic)})
    restore_optimisers(checkpoint, trainer.optimisers)


def warm_start(models: MetaModels, source: Path) -> None:
    """Start from another model's E, G and D; W (one column per training clip) too when
    the clips are as many, else W starts afresh."""
    trained = load_models(source).state_dict()
    own = models.state_dict()
    fitting = {key: value for key, value in trained.items()
               if key in own and own[key].shape == value.shape}
    missing = sorted(set(own) - set(fitting))
    if any(not key.endswith("video_embeddings") for key in missing):
        raise UserError(f"--init {source} has another architecture ({missing[0]} differs): "
                        "pass the same --config and --generator it was trained with")
    models.load_state_dict(fitting, strict=False)


def checkpoint_modules(trainer: MetaTrainer) -> dict[str, torch.nn.Module]:
    """What a checkpoint holds: the model (the weight average when the run keeps one, with
    the trained weights beside it for ``--resume``)."""
    modules: dict[str, torch.nn.Module] = {MODELS: trainer.models}
    if trainer.average is not None:
        modules = {MODELS: trainer.average.settled(trainer.models), TRAINED: trainer.models}
    if trainer.mouth_critic is not None:
        modules[MOUTH_CRITIC] = unwrap(trainer.mouth_critic)
    return modules


def checkpoint_now(out: Path, step: int, trainer: MetaTrainer, plan: RunPlan,
                   process: Process) -> None:
    prints = replica_fingerprints(trainer.models, process)
    if process.writes:
        save_checkpoint(out, step, checkpoint_modules(trainer), trainer.optimisers,
                        {"replica_fingerprints": prints, "world_size": process.world,
                         "config": plan.config.to_dict()},
                        keep=plan.settings.keep_checkpoints)


@dataclass
class TrainResult:
    out: str
    steps: int
    first_step: int
    seconds: float
    last_losses: dict
    rank: int = 0


def run_meta_training(data: Path, out: Path, config: ModelConfig, settings: MetaSettings,
                      resume: bool = False, device: str = "auto",
                      quiet: bool = False) -> TrainResult:
    """Train (or continue training) until ``settings.steps``; see the module docstring."""
    process = start_process(device)
    try:
        return train_process(data, out, config, settings, resume, process, quiet)
    finally:
        if process.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def share_from_rank_zero(process: Process, produce) -> str:
    """Rank 0 runs ``produce`` (text, or a UserError); every rank gets the same text or
    raises the same error, so no replica decides differently or waits on a failed one."""
    if process.world == 1:
        return produce()
    text, failed = "", False
    if process.writes:
        try:
            text = produce()
        except UserError as error:
            text, failed = str(error), True
    payload = torch.tensor(list(text.encode()), dtype=torch.uint8)
    header = torch.tensor([payload.numel(), int(failed)], dtype=torch.int64)
    dist.broadcast(header, src=0)
    if not process.writes:
        payload = torch.zeros(int(header[0]), dtype=torch.uint8)
    dist.broadcast(payload, src=0)
    shared = bytes(payload.tolist()).decode()
    if header[1]:
        raise UserError(shared)
    return shared


def agree_on_plan(out: Path, data: Path, config: ModelConfig, settings: MetaSettings,
                  resume: bool, process: Process) -> RunPlan:
    """Rank 0 checks the run folder and writes run.json; the other ranks take its plan."""
    def write_plan() -> str:
        plan, _ = prepare_run(out, data, config, settings, resume)
        text = json.dumps(plan.to_dict(), indent=1)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / RUN_FILE, text)
        return text

    return RunPlan.from_dict(json.loads(share_from_rank_zero(process, write_plan)))


def train_process(data: Path, out: Path, config: ModelConfig, settings: MetaSettings,
                  resume: bool, process: Process, quiet: bool) -> TrainResult:
    plan = agree_on_plan(out, data, config, settings, resume, process)
    dataset = open_dataset(data)
    clips = training_clips(dataset, plan)
    trainer, first = build_trainer(plan, process, out)
    episodes = episodes_for(plan, clips)
    log = RunLog(out, first, plan.settings.steps, process.writes, quiet)
    started, losses, step = time.perf_counter(), {}, first
    try:
        for step, batch in enumerate(batches(episodes, first, plan.settings.steps,
                                             process.rank, plan.settings.loader_workers),
                                     start=first + 1):
            losses = train_step(trainer, batch, step, out)
            log.step(step, losses, plan.settings.log_every)
            last = step == plan.settings.steps
            if step % plan.settings.checkpoint_every == 0 or last:
                checkpoint_now(out, step, trainer, plan, process)
            if process.writes and (step % plan.settings.sample_every == 0 or last):
                save_samples(out, step, trainer, sample_clips(dataset, plan), plan, log)
    finally:
        log.close()
    if process.world > 1:
        dist.barrier()  # rank 0 may still be writing samples: leave the group together
    return TrainResult(str(out), step, first, time.perf_counter() - started, losses,
                       process.rank)


def episodes_for(plan: RunPlan, clips) -> Episodes | SnapshotEpisodes:
    """The run's episode sampler (see ``MetaSettings.episodes``)."""
    settings = plan.settings
    cavity = plan.config.mouth_cavity
    if settings.episodes == "snapshot":
        return SnapshotEpisodes(clips, settings.shots, plan.config.image_size, settings.batch,
                                settings.seed, cross_clip=settings.cross_clip,
                                hard_targets=settings.hard_targets, cavity=cavity)
    return Episodes(clips, settings.shots, plan.config.image_size, settings.batch,
                    settings.seed, warp=plan.config.generator == "warp", cavity=cavity)


def train_step(trainer: MetaTrainer, batch, step: int, out: Path) -> dict[str, float]:
    try:
        return trainer.step(batch)
    except DivergedError as error:
        latest = latest_checkpoint(out)
        kept = f"the last good checkpoint is {latest}" if latest else "no checkpoint was saved"
        raise UserError(f"training diverged at step {step}: {error}; {kept}") from None
