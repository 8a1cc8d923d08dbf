"""The `vcam` command line. Options are parsed here, once, and passed on explicitly."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from vcam import __version__
from vcam.arguments import positive_int
from vcam.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        return args.handler(args) or 0
    except UserError as error:
        print(f"vcam: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vcam: interrupted", file=sys.stderr)
        return 130


def with_default_command(argv: list[str]) -> list[str]:
    """``python run_vcam.py [OPTIONS]`` means ``vcam run [OPTIONS]``: no command, or options
    first (other than --help and --version), select the real-time camera."""
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        return ["run", *argv]
    return argv


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vcam", description="Appear on video calls as a neural avatar of yourself.")
    parser.add_argument("--version", action="version", version=f"vcam {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    add_run(commands)
    add_preprocess(commands)
    add_train(commands)
    add_enroll(commands)
    add_avatars(commands)
    add_eval(commands)
    add_compile(commands)
    add_call(commands)
    add_bench(commands)
    return parser


def add_command(commands, name: str, summary: str,
                handler: Callable[[argparse.Namespace], int | None]) -> argparse.ArgumentParser:
    command = commands.add_parser(name, help=summary, description=summary)
    command.set_defaults(handler=handler)
    return command


def add_run(commands) -> None:
    from vcam.runtime.app import add_run_arguments, run_from_args

    command = add_command(
        commands, "run", "Appear as your avatar: webcam (or a clip, or the demo animation) -> "
        "landmarks -> avatar -> virtual camera, preview window or mp4 file.", run_from_args)
    add_run_arguments(command)


def add_preprocess(commands) -> None:
    command = add_command(
        commands, "preprocess",
        "Turn talking-head videos (or folders of numbered frames) into aligned face crops "
        "and 68-point landmarks for training.", run_preprocess_command)
    command.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                         help="video files or folders (searched recursively)")
    command.add_argument("--out", type=Path, required=True,
                         help="output folder (re-running resumes: finished clips are kept)")
    command.add_argument("--manifest", type=Path,
                         help="TSV with 'path' and 'identity' columns labelling the clips")
    command.add_argument("--size", type=positive_int, default=256, help="crop size in pixels")
    command.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1,
                         help="clips processed in parallel (default: one per core)")
    command.add_argument("--landmarks", choices=("dlib", "face-alignment"), default="dlib",
                         help="landmark backend (default: dlib, fully offline)")
    command.add_argument("--max-frames", type=int, default=0,
                         help="read at most this many frames of each clip (0: all)")
    command.add_argument("--json", action="store_true", help="print the summary as JSON")


def run_preprocess_command(args: argparse.Namespace) -> int:
    from vcam.data.preprocess import PreprocessSettings, run_preprocess

    settings = PreprocessSettings(size=args.size, landmarks=args.landmarks,
                                  max_frames=max(0, args.max_frames))
    progress = ClipProgress(quiet=args.json)
    try:
        summary = run_preprocess(args.inputs, args.out, settings, manifest=args.manifest,
                                 workers=args.workers, progress=progress)
    finally:
        progress.close()
    if args.json:
        print(json.dumps(vars(summary) | {"frames_per_second": summary.frames_per_second},
                         indent=1))
    else:
        print_summary(summary)
    return 0


class ClipProgress:
    """A progress bar over clips, opened once the inputs have been checked."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self._bar = None

    def start(self, clips: int) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=clips, desc="preprocess", unit="clip", disable=self.quiet,
                         file=sys.stderr)

    def advance(self, result) -> None:
        if self._bar is None:
            return
        self._bar.update()
        if result.reason and not result.reused:
            self._bar.write(f"skipped {result.source}: {result.reason}", file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def print_summary(summary) -> None:
    print(f"clips: {summary.clips} ({summary.clips_reused} from an earlier run), "
          f"identities: {summary.identities}")
    print(f"frames kept: {summary.frames_kept}, dropped: {summary.frames_dropped}, "
          f"{summary.frames_per_second:.0f} frames/s over {summary.seconds:.1f} s")
    if summary.skipped:
        print(f"skipped {len(summary.skipped)} clips:")
        for skip in summary.skipped:
            print(f"  {skip['source']}: {skip['reason']}")
    print(f"written to {summary.out}")


def add_train(commands) -> None:
    command = add_command(commands, "train", "Train the networks.",
                          lambda args: args.train_handler(args))
    stages = command.add_subparsers(title="stages", metavar="STAGE", required=True)
    meta = stages.add_parser(
        "meta", help="meta-learning of the embedder, generator and discriminator on K-shot "
        "episodes (runs under torchrun for several processes or GPUs)",
        description="Meta-learning on preprocessed clips (see `vcam preprocess`). Under "
        "`torchrun --nproc_per_node=N` the same command trains with DistributedDataParallel.")
    meta.set_defaults(train_handler=run_train_meta_command)
    meta.add_argument("--data", type=Path, required=True, help="a `vcam preprocess` folder")
    meta.add_argument("--config", choices=("tiny", "cpu", "paper"), required=True)
    meta.add_argument("--generator", choices=("direct", "warp"), default="direct",
                      help="direct: G sees the landmark image (the paper); warp: G also sees "
                      "the nearest enrollment frame warped to the target landmarks")
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
    meta.add_argument("--vgg", default="auto",
                      help="VGG19 weights for the content loss: a file, 'auto' "
                      "($VCAM_VGG_WEIGHTS, else the shared weights folder: "
                      "$VCAM_SHARED_WEIGHTS or ../shared/weights beside the repository) or "
                      "'none'")
    meta.add_argument("--no-identity-loss", action="store_true",
                      help="leave out the dlib face-recognition content loss")
    meta.add_argument("--checkpoint-every", type=positive_int, default=250)
    meta.add_argument("--sample-every", type=positive_int, default=250)
    meta.add_argument("--log-every", type=positive_int, default=10)
    meta.add_argument("--validation-fraction", type=float, default=0.1)
    meta.add_argument("--seed", type=int, default=0)
    meta.add_argument("--workers", type=int, default=1, help="data loading processes")
    meta.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    meta.add_argument("--episodes", choices=("nearest", "snapshot"), default="nearest",
                      help="nearest: K frames of a clip, the target warped from the nearest "
                      "(the paper); snapshot: one snapshot-like source, targets where its "
                      "warp is wrong, region maps for the mouth/eyes/paint loss weights")
    meta.add_argument("--cross-clip", type=float, default=0.25,
                      help="snapshot episodes: share of sources from another clip of the "
                      "same person")
    meta.add_argument("--hard-targets", type=float, default=0.7,
                      help="snapshot episodes: share of targets where the warp is wrong")
    meta.add_argument("--identity-every", type=positive_int, default=1,
                      help="compute the identity loss every N steps (it is the dearest)")
    meta.add_argument("--init", type=Path, default=None,
                      help="start a new run from this model file or run (E, G and D)")
    add_cost_options(meta)
    meta.add_argument("--json", action="store_true", help="print the result as JSON")
    add_train_export(stages)


def add_train_export(stages) -> None:
    export = stages.add_parser(
        "export", help="write a run's checkpoint as a model file that ships",
        description="Write MODEL.safetensors (+ MODEL.json: config, step, identity split, "
        "data counts) and MODEL.shape-basis.safetensors (the landmark shape basis calls "
        "encode with, fitted on the run's training clips) from a `vcam train meta` run.")
    export.set_defaults(train_handler=run_train_export_command)
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


def vgg_weights_setting(choice: str) -> str | None:
    from vcam.models.vgg import find_default_vgg_weights
    from vcam.shared import shared_weights_dir

    if choice == "none":
        return None
    if choice != "auto":
        if not Path(choice).is_file():
            raise UserError(f"--vgg {choice} does not exist")
        return str(Path(choice).resolve())
    try:
        found = find_default_vgg_weights()
    except FileNotFoundError as error:
        raise UserError(str(error)) from None
    if found is None:
        raise UserError(f"VGG19 weights not found in {shared_weights_dir()}: pass --vgg FILE, "
                        "set VCAM_VGG_WEIGHTS, or --vgg none to train without the VGG loss")
    return str(found.resolve())


def add_cost_options(parser) -> None:
    """Options that trade a step's cost for its signal."""
    parser.add_argument("--vgg-size", type=int, default=0,
                        help="compute the VGG content loss on frames shrunk to this many px "
                        "(0: full size; 128 costs a quarter)")
    parser.add_argument("--discriminator-every", type=positive_int, default=1,
                        help="adversarial terms and D's update every N steps (1: the paper)")


def loss_weights(text: str):
    from vcam.models.losses import LossWeights

    try:
        return LossWeights.parse(text)
    except ValueError as error:
        raise UserError(f"--loss-weights: {error}") from None


def fraction(option: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise UserError(f"{option} must be between 0 and 1, got {value}")
    return value


def run_train_meta_command(args: argparse.Namespace) -> int:
    from vcam.models.config import get_config
    from vcam.models.store import find_weights
    from vcam.train.meta import MetaSettings
    from vcam.train.run import run_meta_training

    losses = loss_weights(args.loss_weights)
    if args.init:
        find_weights(args.init)
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
        vgg_size=args.vgg_size, discriminator_every=args.discriminator_every)
    config = dataclasses.replace(get_config(args.config), generator=args.generator)
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


def add_enroll(commands) -> None:
    command = add_command(
        commands, "enroll",
        "Create an avatar of a face from one photo (or a few, a clip, or a webcam snapshot).",
        run_enroll_command)
    command.add_argument("photos", nargs="*", type=Path, metavar="PHOTO",
                         help="photos of one person (the largest face in each is used)")
    command.add_argument("--name", required=True, help="the avatar's name")
    command.add_argument("--model", type=Path,
                         help="meta-learned model: a `vcam train meta` run or checkpoint "
                         "folder, or a model file (default: the model shipped with vcam)")
    command.add_argument("--steps", type=int, default=0,
                         help="fine-tuning steps (0: feed-forward only, instant)")
    command.add_argument("--out", type=Path,
                         help="where to write the bundle (default: the avatar folder)")
    command.add_argument("--force", action="store_true", help="replace an existing avatar")
    command.add_argument("--video", type=Path, help="enroll from frames of this clip")
    command.add_argument("--frames", type=positive_int, default=8,
                         help="frames taken from --video (default 8)")
    command.add_argument("--snapshot", action="store_true",
                         help="take the photo with the webcam after a countdown")
    command.add_argument("--camera", default="0", help="camera index for --snapshot")
    command.add_argument("--countdown", type=float, default=3.0,
                         help="seconds of countdown before the snapshot")
    command.add_argument("--no-preview", action="store_true",
                         help="no preview window during --snapshot")
    command.add_argument("--vgg", default="auto", help="VGG19 weights for fine-tuning's "
                         "content loss (as for `vcam train meta`)")
    command.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    command.add_argument("--json", action="store_true", help="print the result as JSON")


def enrollment_photos(args: argparse.Namespace, detector) -> list:
    from vcam.enroll import capture_snapshot, read_photo, video_photos

    sources = sum([bool(args.photos), args.video is not None, args.snapshot])
    if sources != 1:
        raise UserError("give photos, or --video FILE, or --snapshot (exactly one of them)")
    if args.snapshot:
        return [capture_snapshot(args.camera, detector, seconds=args.countdown,
                                 preview=not args.no_preview)]
    if args.video is not None:
        return video_photos(args.video, args.frames)
    return [read_photo(path) for path in args.photos]


def run_enroll_command(args: argparse.Namespace) -> int:
    from vcam.avatar import avatar_path, save_avatar
    from vcam.enroll import enroll, warn
    from vcam.landmarks.detector import create_detector
    from vcam.models.store import default_model_path, load_models
    from vcam.train.finetune import FineTuneSettings

    out = args.out or avatar_path(args.name)
    if out.exists() and not args.force:
        raise UserError(f"{out} already exists: pass --force to replace it")
    if args.steps < 0:
        raise UserError("--steps must be 0 or more")
    model_path = args.model or default_model_path()
    models = load_models(model_path, args.device, discriminator=args.steps > 0)
    detector = create_detector("dlib")
    photos = enrollment_photos(args, detector)
    settings = FineTuneSettings(
        steps=args.steps, identity_loss=True,
        vgg_weights=vgg_weights_setting(args.vgg) if args.steps else None)
    with FineTuneProgress(args.steps, quiet=args.json) as progress:
        avatar, enrollment = enroll(photos, args.name, models, detector, settings,
                                    str(model_path), progress.update)
    for message in enrollment.warnings:
        warn(message)
    save_avatar(avatar, out, force=args.force)
    result = {"name": args.name, "path": str(out), "shots": len(photos),
              "finetune_steps": args.steps, "warnings": enrollment.warnings}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        mode = f"fine-tuned {args.steps} steps" if args.steps else "feed-forward"
        print(f"avatar {args.name!r} ({len(photos)} photo(s), {mode}) saved to {out}")
    return 0


class FineTuneProgress:
    """A progress bar with the losses, shown only when there is fine-tuning to do."""

    def __init__(self, steps: int, quiet: bool) -> None:
        self.steps, self.quiet, self.bar = steps, quiet, None

    def __enter__(self) -> FineTuneProgress:
        if self.steps > 0:
            from tqdm import tqdm

            self.bar = tqdm(total=self.steps, desc="fine-tune", unit="step",
                            disable=self.quiet, file=sys.stderr)
        return self

    def update(self, step: int, losses: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.update()
            self.bar.set_postfix({key: f"{value:.3g}" for key, value in losses.items()})

    def __exit__(self, *exc_info) -> None:
        if self.bar is not None:
            self.bar.close()


def add_avatars(commands) -> None:
    command = add_command(commands, "avatars", "List the enrolled avatars.",
                          run_avatars_command)
    command.add_argument("--json", action="store_true")


def run_avatars_command(args: argparse.Namespace) -> int:
    from vcam.avatar import avatars_dir, list_avatars

    entries = list_avatars()
    if args.json:
        print(json.dumps(entries, indent=1))
        return 0
    if not entries:
        print(f"no avatars in {avatars_dir()}: create one with `vcam enroll PHOTO --name NAME`")
    for entry in entries:
        if "error" in entry:
            print(f"{entry['name']:<20} unreadable  {entry['path']}")
            continue
        mode = f"FT {entry['finetune_steps']}" if entry["finetune_steps"] else "FF"
        print(f"{entry['name']:<20} {entry['config']:<6} {entry['shots']} shot(s) {mode:<7} "
              f"{entry['megabytes']:>6} MB  {entry['created']}  {entry['path']}")
    return 0


def add_eval(commands) -> None:
    command = add_command(
        commands, "eval", "Self-reenactment metrics on clips of people the model never saw, "
        "beside a warping baseline.", run_eval_command)
    command.add_argument("--model", type=Path, required=True,
                         help="a `vcam train meta` run or checkpoint folder, or a model file")
    command.add_argument("--data", type=Path, required=True, help="a `vcam preprocess` folder")
    command.add_argument("--out", type=Path, required=True,
                         help="report folder (outside the repository: it holds frames)")
    command.add_argument("--shots", type=positive_int, nargs="+", default=[1, 8])
    command.add_argument("--max-clips", type=positive_int, default=10)
    command.add_argument("--frames", type=positive_int, default=50,
                         help="target frames per clip")
    command.add_argument("--finetune-steps", type=int, default=0,
                         help="also evaluate avatars fine-tuned for this many steps")
    command.add_argument("--vgg", default="auto", help="as for `vcam train meta` (fine-tuning)")
    command.add_argument("--force", action="store_true", help="replace an earlier report")
    command.add_argument("--json", action="store_true", help="print the overall figures as JSON")


def check_report_folder(out: Path, force: bool) -> None:
    from vcam.files import is_within
    from vcam.shared import repository_root

    repository = repository_root()
    if (repository / ".git").exists() and is_within(out, repository):
        raise UserError(f"--out {out} is inside the vcam repository; reports hold frames of "
                        "real people, so write them elsewhere")
    if (out / "metrics.json").exists() and not force:
        raise UserError(f"{out} already holds a report: pass --force to replace it")


def run_eval_command(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from vcam.data.clips import open_dataset
    from vcam.eval.report import markdown_report, write_report
    from vcam.eval.run import EvalSettings, evaluate
    from vcam.landmarks.detector import create_detector
    from vcam.train.finetune import FineTuneSettings

    check_report_folder(args.out, args.force)
    dataset = open_dataset(args.data)
    tuning = FineTuneSettings(steps=max(0, args.finetune_steps),
                              vgg_weights=vgg_weights_setting(args.vgg)
                              if args.finetune_steps > 0 else None)
    settings = EvalSettings(shots=tuple(sorted(set(args.shots))), max_clips=args.max_clips,
                            frames=args.frames, finetune=tuning)
    with tqdm(total=args.max_clips, desc="eval", unit="clip", disable=args.json,
              file=sys.stderr) as bar:
        results = evaluate(args.model, dataset, settings, create_detector("dlib"),
                           on_clip=lambda _: bar.update())
    record = {"model": str(args.model), "data": str(args.data), "shots": list(settings.shots),
              "frames": args.frames, "finetune_steps": tuning.steps, "clips": len(results)}
    report = write_report(args.out, results, record, settings.grid_frames)
    if args.json:
        print(json.dumps({key: report[key] for key in ("overall", "by_motion")}, indent=1))
    else:
        print(markdown_report(report))
        print(f"report written to {args.out}")
    return 0


def add_compile(commands) -> None:
    command = add_command(
        commands, "compile", "Export an avatar's generator to ONNX (checked against torch) "
        "and build its TensorRT engine.", run_compile_command)
    command.add_argument("avatar", help="avatar name or bundle path")
    command.add_argument("--backend", choices=("onnx", "tensorrt"), default="onnx")
    command.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32")
    command.add_argument("--out", type=Path, help="ONNX file to write (default: the avatar's "
                         "compiled folder, where the runtime finds it)")
    command.add_argument("--threads", type=positive_int, help="CPU threads for the checks")
    command.add_argument("--json", action="store_true")


def run_compile_command(args: argparse.Namespace) -> int:
    from vcam.avatar import load_avatar, resolve_avatar
    from vcam.compiled import export_avatar

    avatar = load_avatar(resolve_avatar(args.avatar))
    onnx_precision = "fp32" if args.backend == "tensorrt" and args.precision == "fp16" \
        else args.precision
    result = export_avatar(avatar, onnx_precision, args.out, args.threads)
    report = {"avatar": avatar.name, "onnx": str(result.path), "precision": onnx_precision,
              "max_abs_diff_fp32": result.fp32_report.max_abs_diff,
              "check": dataclasses.asdict(result.report)}
    if args.backend == "tensorrt":
        report["tensorrt"] = build_engine(avatar, result.path, args.precision)
    if args.json:
        print(json.dumps(report, indent=1, default=str))
        return 0
    print(f"{avatar.name}: ONNX {onnx_precision} written to {result.path}; against torch "
          f"max abs diff {result.fp32_report.max_abs_diff:.2e} (FP32 graph)"
          + (f", PSNR {result.report.psnr_db:.1f} dB ({onnx_precision})"
             if onnx_precision != "fp32" else ""))
    if "tensorrt" in report:
        print(f"TensorRT {args.precision} engine: {report['tensorrt']['engine']}")
    return 0


def build_engine(avatar, onnx_file: Path, precision: str) -> dict:
    """Build (or reuse) the TensorRT engine and check it against ONNX Runtime."""
    from engines.backend import BackendOptions, NoBackendError, create_backend
    from engines.export import ExportMismatchError, onnx_frames, verify_backend
    from vcam.compiled import generator_inputs

    source = dataclasses.replace(
        _source_for(avatar, onnx_file), onnx_path=onnx_file,
        calibration_images=generator_inputs(avatar, 64, seed=2) if precision == "int8" else None)
    try:
        backend = create_backend("tensorrt", source, BackendOptions(device="cuda",
                                                                    precision=precision))
    except NoBackendError as error:
        raise UserError(f"cannot build a TensorRT engine here: {error.reasons['tensorrt']}") \
            from None
    images = generator_inputs(avatar, 16, seed=1)
    try:
        verify_backend(backend, images, onnx_frames(onnx_file, images), precision)
    except ExportMismatchError as error:
        raise UserError(f"TensorRT engine refused: {error}") from None
    info = backend.describe().to_dict()
    backend.close()
    return {"engine": info.get("model_path") or "cached", "info": info}


def _source_for(avatar, onnx_file: Path):
    from engines.backend import GeneratorSource

    return GeneratorSource(avatar.config.image_size, module=avatar.generator(),
                           onnx_path=onnx_file,
                           input_channels=avatar.config.generator_input_channels)


def add_call(commands) -> None:
    from vcam.net.call_args import add_call_arguments

    add_call_arguments(commands)


def add_bench(commands) -> None:
    command = add_command(commands, "bench", "Measure speed and print the figures.",
                          lambda args: args.bench_handler(args))
    benches = command.add_subparsers(title="benchmarks", metavar="BENCH", required=True)
    landmarks = benches.add_parser(
        "landmarks", help="landmark ms per 640x480 frame (detected vs tracked) and "
        "preprocessing frames/s")
    landmarks.set_defaults(bench_handler=run_landmark_bench_command)
    landmarks.add_argument("--backend", choices=("dlib", "face-alignment"), default="dlib")
    landmarks.add_argument("--frames", type=positive_int, default=150)
    landmarks.add_argument("--data", type=Path,
                           help="clips for the preprocessing figure (default: clips/ of the "
                           "shared corpus, $VCAM_SHARED_DATA or ../shared/data beside the "
                           "repository; synthetic clips when absent)")
    landmarks.add_argument("--clips", type=positive_int, default=12)
    landmarks.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1)
    landmarks.add_argument("--json", action="store_true")
    add_train_bench(benches)
    add_enroll_bench(benches)
    add_render_bench(benches)
    add_codec_bench(benches)
    add_pipeline_bench(benches)


def add_train_bench(benches) -> None:
    train = benches.add_parser("train", help="seconds per meta-learning step and peak memory")
    train.set_defaults(bench_handler=run_train_bench_command)
    train.add_argument("--config", choices=("tiny", "cpu", "paper"), default="cpu")
    train.add_argument("--steps", type=positive_int, default=5)
    train.add_argument("--batch", type=positive_int, default=2)
    train.add_argument("--shots", type=positive_int, default=8)
    train.add_argument("--vgg", default="auto", help="as for `vcam train meta`")
    train.add_argument("--no-identity-loss", action="store_true")
    train.add_argument("--generator", choices=("direct", "warp"), default="direct")
    train.add_argument("--episodes", choices=("nearest", "snapshot"), default="nearest",
                       help="as for `vcam train meta`")
    train.add_argument("--identity-every", type=positive_int, default=1)
    train.add_argument("--loss-weights", default="", help="as for `vcam train meta`")
    add_cost_options(train)
    train.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    train.add_argument("--data", type=Path, help="a `vcam preprocess` folder (default: "
                       "synthetic clips)")
    train.add_argument("--json", action="store_true")


def add_enroll_bench(benches) -> None:
    command = benches.add_parser("enroll", help="seconds to enroll one photo feed-forward "
                                 "and to fine-tune for N steps")
    command.set_defaults(bench_handler=run_enroll_bench_command)
    command.add_argument("--config", choices=("tiny", "cpu", "paper"), default="cpu")
    command.add_argument("--steps", type=positive_int, default=100)
    command.add_argument("--vgg", default="auto", help="as for `vcam train meta`")
    command.add_argument("--json", action="store_true")


def run_enroll_bench_command(args: argparse.Namespace) -> int:
    from vcam.bench.enroll import run_enroll_bench

    report = run_enroll_bench(args.config, args.steps, vgg_weights_setting(args.vgg))
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"enroll, {report['config']} config, {report['threads']} threads:")
    print(f"  feed-forward, one photo: {report['feed_forward_seconds']:.2f} s "
          f"(+ {report['model_load_seconds']:.2f} s loading the model)")
    print(f"  fine-tuning {report['finetune_steps']} steps: {report['finetune_seconds']:.1f} s "
          f"({report['finetune_seconds_per_step']:.2f} s per step)")
    return 0


def add_render_bench(benches) -> None:
    command = benches.add_parser("render", help="ms per frame of the personalised generator "
                                 "on every available backend and precision")
    command.set_defaults(bench_handler=run_render_bench_command)
    command.add_argument("--config", choices=("tiny", "cpu", "paper"), default="cpu")
    command.add_argument("--generator", choices=("direct", "warp"), default="direct")
    command.add_argument("--backend", nargs="+", default=["torch", "onnxruntime", "tensorrt"],
                         choices=("torch", "onnxruntime", "tensorrt"))
    command.add_argument("--threads", type=positive_int)
    command.add_argument("--no-int8", action="store_true", help="skip the INT8 comparison")
    command.add_argument("--repeats", type=positive_int, default=20)
    command.add_argument("--json", action="store_true")


def run_render_bench_command(args: argparse.Namespace) -> int:
    from engines.benchmark import TimingSettings
    from vcam.bench.render import render_report_lines, run_render_bench

    report = run_render_bench(args.config, args.generator, tuple(args.backend), args.threads,
                              not args.no_int8, TimingSettings(repeats=args.repeats))
    print(json.dumps(report, indent=1) if args.json else "\n".join(render_report_lines(report)))
    return 0


def add_pipeline_bench(benches) -> None:
    command = benches.add_parser("pipeline", help="frames/s and capture-to-sink latency of "
                                 "the real-time pipeline, 640x480 clip -> file sink")
    command.set_defaults(bench_handler=run_pipeline_bench_command)
    command.add_argument("--config", choices=("tiny", "cpu", "paper"), default="cpu",
                         help="architecture of the random model used without --model")
    command.add_argument("--generator", choices=("direct", "warp"), default="direct",
                         help="generator variant of the random model used without --model")
    command.add_argument("--model", type=Path,
                         help="a trained model (e.g. vcam/weights/default.safetensors)")
    command.add_argument("--frames", type=positive_int, default=150)
    command.add_argument("--backend", choices=("auto", "torch", "onnxruntime", "tensorrt"),
                         default="auto")
    command.add_argument("--threads", type=positive_int)
    command.add_argument("--json", action="store_true")


def run_pipeline_bench_command(args: argparse.Namespace) -> int:
    from vcam.bench.pipeline import pipeline_bench_lines, run_pipeline_bench

    report = run_pipeline_bench(args.config, args.frames, args.backend, args.threads,
                                generator=args.generator, model=args.model)
    print(json.dumps(report, indent=1) if args.json else "\n".join(pipeline_bench_lines(report)))
    return 0


def add_codec_bench(benches) -> None:
    command = benches.add_parser("codec", help="kbit/s and error of the landmark stream "
                                 "against H.264 of the same crops")
    command.set_defaults(bench_handler=run_codec_bench_command)
    command.add_argument("--data", type=Path, required=True,
                         help="a `vcam preprocess` folder (256 px crops)")
    command.add_argument("--max-clips", type=positive_int, default=20)
    command.add_argument("--json", action="store_true")


def run_codec_bench_command(args: argparse.Namespace) -> int:
    from vcam.bench.codec import codec_report_lines, run_codec_bench
    from vcam.data.clips import open_dataset

    clips = list(open_dataset(args.data).clips)
    clips = clips[::max(1, len(clips) // args.max_clips)][:args.max_clips]
    report = run_codec_bench(clips)
    print(json.dumps(report, indent=1) if args.json else "\n".join(codec_report_lines(report)))
    return 0


def run_train_bench_command(args: argparse.Namespace) -> int:
    import torch

    from vcam.bench.train import run_train_bench
    from vcam.train.meta import MetaSettings

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    settings = MetaSettings(shots=args.shots, batch=args.batch,
                            vgg_weights=vgg_weights_setting(args.vgg),
                            identity_loss=not args.no_identity_loss,
                            episodes=args.episodes, identity_every=args.identity_every,
                            losses=loss_weights(args.loss_weights), vgg_size=args.vgg_size,
                            discriminator_every=args.discriminator_every)
    report = run_train_bench(args.config, args.steps, settings, device, args.data,
                             args.generator)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"train meta, {report['config']} config on {report['device']}: batch "
          f"{report['batch']}, K={report['shots']}, VGG loss {report['vgg_loss']}, "
          f"identity loss {report['identity_loss']}")
    print(f"  {report['seconds_per_step_median']:.2f} s per step (median of "
          f"{report['steps']}), {report['seconds_per_sample']:.2f} s per training sample "
          f"(+{report['draw_seconds_per_sample']:.2f} s drawing it, {report['episodes']} "
          f"episodes, {report['generator']} generator), peak memory "
          f"{report['peak_rss_mb']:.0f} MB resident"
          + (f", {report['peak_cuda_mb']:.0f} MB CUDA" if "peak_cuda_mb" in report else ""))
    return 0


def run_landmark_bench_command(args: argparse.Namespace) -> int:
    from vcam.bench.landmarks import run_landmark_bench
    from vcam.shared import shared_data_dir

    clips = args.data or shared_data_dir() / "clips"
    report = run_landmark_bench(args.backend, args.frames, clips, args.clips, args.workers)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    frame, pre = report["per_frame"], report["preprocess"]
    print(f"landmarks ({frame['backend']}, {frame['frame_size']}, {frame['frames']} frames)")
    for mode in ("detect_every_frame", "tracked"):
        row = frame[mode]
        print(f"  {mode:<19} mean {row['mean_ms']:6.2f} ms  median {row['median_ms']:6.2f} ms"
              f"  p95 {row['p95_ms']:6.2f} ms  faces {row['faces_found']}/{frame['frames']}")
    print(f"  tracked ran {frame['tracked']['detections']} detections")
    print(f"preprocess ({pre['source']}, {pre['clips']} clips, {pre['workers']} workers): "
          f"{pre['frames_per_second']:.1f} frames/s, {pre['frames_kept']} kept, "
          f"{pre['frames_dropped']} dropped in {pre['seconds']:.1f} s")
    return 0
