"""`vcam train meta` (meta-learning) and `vcam train export` (a run -> a model that ships)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from vcam.commands.arguments import positive_int
from vcam.commands.options import add_vgg_option
from vcam.errors import UserError

SUMMARY = "Train the networks."
DESCRIPTION = SUMMARY


def add_arguments(command: argparse.ArgumentParser) -> None:
    stages = command.add_subparsers(title="stages", metavar="STAGE", dest="stage",
                                    required=True)
    meta = stages.add_parser(
        "meta", help="meta-learning of the embedder, generator and discriminator on K-shot "
        "episodes (runs under torchrun for several processes or GPUs)",
        description="Meta-learning on preprocessed clips (see `vcam preprocess`). Under "
        "`torchrun --nproc_per_node=N` the same command trains with DistributedDataParallel.")
    meta.add_argument("--data", type=Path, required=True, help="a `vcam preprocess` folder")
    meta.add_argument("--config", choices=("tiny", "cpu", "paper"), required=True)
    meta.add_argument("--generator", choices=("direct", "warp"), default="direct",
                      help="direct: G sees the landmark image (the paper); warp: G also sees "
                      "the nearest enrollment frame warped to the target landmarks")
    # vcam.models.config.MOUTH_INPUTS, spelt out: importing vcam.models loads torch, which
    # every `vcam --help` would then pay for.
    meta.add_argument("--mouth-input", choices=("warp", "cavity"), default=None,
                      help="what the warp-guided generator sees where the mouth opens beyond its "
                      "source: the stretched lips of the warp, or a dark cavity it must paint "
                      "(default: the run's own with --resume, the --init model's, else warp)")
    meta.add_argument("--out", type=Path, required=True, help="the run folder")
    meta.add_argument("--steps", type=positive_int, default=1000,
                      help="train until this step (total, also when resuming)")
    meta.add_argument("--resume", action="store_true",
                      help="continue the run in --out from its latest checkpoint")
    meta.add_argument("--shots", type=positive_int, default=8, help="K frames per episode")
    meta.add_argument("--batch", type=positive_int, default=2, help="episodes per step")
    meta.add_argument("--lr-generator", type=float, default=5e-5)
    meta.add_argument("--lr-discriminator", type=float, default=2e-4)
    meta.add_argument("--discriminator-steps", type=positive_int, default=1)
    meta.add_argument("--loss-weights", default="",
                      help="e.g. 'vgg=1,identity=0.5,feature_matching=10,match=80,pixel=0'")
    add_vgg_option(meta, "VGG19 weights for the content loss: a file, 'auto' "
                   "($VCAM_VGG_WEIGHTS, else the shared weights folder: $VCAM_SHARED_WEIGHTS "
                   "or ../shared/weights beside the repository) or 'none'")
    meta.add_argument("--no-identity-loss", action="store_true",
                      help="leave out the dlib face-recognition content loss")
    meta.add_argument("--checkpoint-every", type=positive_int, default=250)
    meta.add_argument("--sample-every", type=positive_int, default=250)
    meta.add_argument("--log-every", type=positive_int, default=10)
    meta.add_argument("--validation-fraction", type=float, default=0.1)
    meta.add_argument("--seed", type=int, default=0)
    meta.add_argument("--workers", type=int, default=1, help="data loading processes")
    meta.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    add_situation_options(meta)
    meta.add_argument("--init", type=Path, default=None,
                      help="start a new run from this model file or run (E, G and D)")
    add_cost_options(meta)
    meta.add_argument("--weight-average", type=float, default=0.0, metavar="DECAY",
                      help="checkpoints hold an exponential moving average of the weights "
                      "with this decay per step, e.g. 0.995 (about the last 200 steps); "
                      "0: the trained weights")
    meta.add_argument("--json", action="store_true", help="print the result as JSON")
    add_train_export(stages)


def add_situation_options(parser: argparse.ArgumentParser) -> None:
    """How episodes are drawn (see vcam.train.snapshot)."""
    parser.add_argument("--episodes", choices=("nearest", "snapshot"), default="nearest",
                        help="nearest: K frames of a clip, the target warped from the nearest "
                        "(the paper); snapshot: one snapshot-like source, targets where its "
                        "warp is wrong, region maps for the mouth/eyes/paint loss weights")
    parser.add_argument("--cross-clip", type=float, default=0.25,
                        help="snapshot episodes: share of sources from another clip of the "
                        "same person")
    parser.add_argument("--hard-targets", type=float, default=0.7,
                        help="snapshot episodes: share of targets where the warp is wrong")


def add_cost_options(parser: argparse.ArgumentParser) -> None:
    """Options that trade a step's cost for its signal."""
    parser.add_argument("--identity-every", type=positive_int, default=1,
                        help="compute the identity loss every N steps (it is the dearest)")
    parser.add_argument("--vgg-size", type=int, default=0,
                        help="compute the VGG content loss on frames shrunk to this many px "
                        "(0: full size; 128 costs a quarter)")
    parser.add_argument("--discriminator-every", type=positive_int, default=1,
                        help="adversarial terms and D's update every N steps (1: the paper)")


def loss_weights(text: str, episodes: str):
    """``--loss-weights`` parsed (a one-line error for an unknown term, or for a region
    term with episodes that carry no regions: it would silently do nothing)."""
    from vcam.models.losses import REGION_TERMS, LossWeights

    try:
        weights = LossWeights.parse(text)
    except ValueError as error:
        raise UserError(f"--loss-weights: {error}") from None
    used = [name for name in REGION_TERMS if getattr(weights, name) > 0]
    if used and episodes != "snapshot":
        raise UserError(f"--loss-weights: {used[0]} acts on the mouth and eye regions, which "
                        "only snapshot episodes mark: add --episodes snapshot")
    return weights


def fraction(option: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise UserError(f"{option} must be between 0 and 1, got {value}")
    return value


def weight_decay_option(value: float) -> float:
    """``--weight-average``: 0 (off) or a decay below 1."""
    if not 0.0 <= value < 1.0:
        raise UserError(f"--weight-average must be 0 (off) or a decay below 1, e.g. 0.995; "
                        f"got {value}")
    return value


def add_train_export(stages) -> None:
    export = stages.add_parser(
        "export", help="write a run's checkpoint as a model file that ships",
        description="Write MODEL.safetensors (+ MODEL.json: config, step, identity split, "
        "data counts) and MODEL.shape-basis.safetensors (the landmark shape basis calls "
        "encode with, fitted on the run's training clips) from a `vcam train meta` run.")
    export.add_argument("run", type=Path, help="a run folder (its latest checkpoint) or one "
                        "of its checkpoint folders")
    export.add_argument("--out", type=Path, required=True, help="MODEL.safetensors")
    export.add_argument("--data", type=Path, default=None,
                        help="the run's `vcam preprocess` folder, if it has moved")
    export.add_argument("--precision", choices=("fp16", "fp32"), default="fp16")
    export.add_argument("--force", action="store_true", help="replace existing files")
    export.add_argument("--json", action="store_true", help="print the result as JSON")


def run_train_export_command(args: argparse.Namespace) -> int:
    from vcam.train.export import check_loads, export_model

    result = export_model(args.run, args.out, args.data, args.precision == "fp16",
                          args.force)
    check_loads(args.out)
    if args.json:
        print(json.dumps(vars(result), indent=1))
    else:
        print(f"wrote {result.model} ({result.megabytes} MB, step {result.step}), "
              f"{result.metadata} and {result.shape_basis}")
    return 0


def mouth_input_option(args: argparse.Namespace, init_config: dict) -> str:
    """``--mouth-input``, or by default the one the run resumes with (its ``run.json``) or a
    warm start inherits (``init_config``, the ``--init`` model's); ``warp`` for a new run from
    scratch and for the direct generator (a one-line error if a cavity is asked of it)."""
    if args.generator != "warp":
        if args.mouth_input == "cavity":
            raise UserError("--mouth-input cavity needs --generator warp (only the "
                            "warp-guided generator is given a warp to cut the cavity into)")
        return "warp"
    if args.mouth_input:
        return args.mouth_input
    from vcam.train.run import RUN_FILE, RunPlan

    run_file = args.out / RUN_FILE
    if args.resume and run_file.is_file():
        try:
            return RunPlan.from_dict(json.loads(run_file.read_text())).config.mouth_input
        except (OSError, ValueError, KeyError, TypeError):
            return "warp"  # the run's own check names what is wrong with it
    return init_config.get("mouth_input", "warp")


def run_train_meta_command(args: argparse.Namespace) -> int:
    from vcam.models.config import get_config
    from vcam.models.store import find_weights
    from vcam.models.vgg import vgg_weights_setting
    from vcam.train.meta import MetaSettings
    from vcam.train.run import run_meta_training

    losses = loss_weights(args.loss_weights, args.episodes)
    init_config = find_weights(args.init)[1].get("config", {}) if args.init else {}
    mouth_input = mouth_input_option(args, init_config)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA GPU is visible; use --device cpu")
    settings = MetaSettings(
        shots=args.shots, batch=args.batch, steps=args.steps, lr_generator=args.lr_generator,
        lr_discriminator=args.lr_discriminator, discriminator_steps=args.discriminator_steps,
        losses=losses, vgg_weights=vgg_weights_setting(args.vgg),
        identity_loss=not args.no_identity_loss, seed=args.seed,
        validation_fraction=args.validation_fraction, checkpoint_every=args.checkpoint_every,
        sample_every=args.sample_every, log_every=args.log_every,
        loader_workers=max(0, args.workers), identity_every=args.identity_every,
        episodes=args.episodes, cross_clip=fraction("--cross-clip", args.cross_clip),
        hard_targets=fraction("--hard-targets", args.hard_targets),
        init=str(args.init.resolve()) if args.init else None,
        vgg_size=args.vgg_size, discriminator_every=args.discriminator_every,
        weight_average=weight_decay_option(args.weight_average))
    config = dataclasses.replace(get_config(args.config), generator=args.generator,
                                 mouth_input=mouth_input)
    result = run_meta_training(args.data, args.out, config, settings,
                               resume=args.resume, device=args.device, quiet=args.json)
    if result.rank != 0:
        return 0
    if args.json:
        print(json.dumps(vars(result), indent=1))
    else:
        print(f"trained steps {result.first_step + 1}..{result.steps} in "
              f"{result.seconds:.0f} s; run folder {result.out}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the stage asked for (``args.stage``)."""
    stages = {"meta": run_train_meta_command, "export": run_train_export_command}
    return stages[args.stage](args)
