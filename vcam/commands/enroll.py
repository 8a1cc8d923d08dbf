"""`vcam enroll`: an avatar from one photo (or a few, a clip, or a webcam snapshot)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vcam.commands.arguments import positive_int
from vcam.commands.options import add_vgg_option
from vcam.errors import UserError

SUMMARY = ("Create an avatar of a face from one photo (or a few, a clip, or a webcam "
           "snapshot).")
DESCRIPTION = SUMMARY


def add_arguments(command: argparse.ArgumentParser) -> None:
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
    add_vgg_option(command, "VGG19 weights for fine-tuning's content loss (as for "
                   "`vcam train meta`)")
    command.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    command.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    from vcam.avatar import avatar_path, save_avatar
    from vcam.enroll import enroll, enrollment_photos, warn
    from vcam.landmarks.detector import create_detector
    from vcam.models.store import default_model_path, load_models
    from vcam.models.vgg import vgg_weights_setting
    from vcam.train.finetune import FineTuneSettings

    out = args.out or avatar_path(args.name)
    if out.exists() and not args.force:
        raise UserError(f"{out} already exists: pass --force to replace it")
    if args.steps < 0:
        raise UserError("--steps must be 0 or more")
    model_path = args.model or default_model_path()
    models = load_models(model_path, args.device, discriminator=args.steps > 0)
    detector = create_detector("dlib")
    photos = enrollment_photos(args.photos, args.video, args.frames, args.snapshot,
                               args.camera, args.countdown, not args.no_preview, detector)
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
