"""`vcam eval`: self-reenactment metrics on held-out clips, beside the warping baseline."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from vcam.commands.arguments import positive_int
from vcam.commands.options import add_vgg_option

SUMMARY = ("Self-reenactment metrics on clips of people the model never saw, beside a warping "
           "baseline.")
DESCRIPTION = SUMMARY


def add_arguments(command: argparse.ArgumentParser) -> None:
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
    command.add_argument("--protocol", choices=("chosen", "first"), default="chosen",
                         help="chosen: enroll from K frames chosen for coverage in each clip's "
                         "first half, targets from its second half; first: the first K frames")
    command.add_argument("--warp-source", choices=("nearest", "regions"),
                         help="how the warp's source frame is chosen (default: as the avatar "
                         "renders)")
    add_vgg_option(command, "as for `vcam train meta` (fine-tuning)")
    command.add_argument("--force", action="store_true", help="replace an earlier report")
    command.add_argument("--json", action="store_true", help="print the overall figures as JSON")


def run(args: argparse.Namespace) -> int:
    from vcam.data.clips import open_dataset
    from vcam.eval.report import (
        check_report_folder,
        json_text,
        markdown_report,
        write_report,
    )
    from vcam.eval.run import EvalSettings, evaluate
    from vcam.landmarks.detector import create_detector
    from vcam.models.vgg import vgg_weights_setting
    from vcam.train.finetune import FineTuneSettings

    check_report_folder(args.out, args.force)
    dataset = open_dataset(args.data)
    tuning = FineTuneSettings(steps=max(0, args.finetune_steps),
                              vgg_weights=vgg_weights_setting(args.vgg)
                              if args.finetune_steps > 0 else None)
    settings = EvalSettings(shots=tuple(sorted(set(args.shots))), max_clips=args.max_clips,
                            frames=args.frames, finetune=tuning, protocol=args.protocol)
    if args.warp_source:
        settings = dataclasses.replace(settings, warp_source=args.warp_source)
    results = evaluate(args.model, dataset, settings, create_detector("dlib"),
                       progress=not args.json)
    record = {"model": str(args.model), "data": str(args.data), "shots": list(settings.shots),
              "frames": args.frames, "finetune_steps": tuning.steps, "clips": len(results),
              "protocol": settings.protocol, "warp_source": settings.warp_source}
    report = write_report(args.out, results, record, settings.grid_frames)
    if args.json:
        printed = ("overall", "versus_warp", "by_subset", "by_motion")
        print(json_text({key: report[key] for key in printed}))
    else:
        print(markdown_report(report))
        print(f"report written to {args.out}")
    return 0
