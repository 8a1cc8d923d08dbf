"""`vcam eval`: self-reenactment metrics on held-out clips, beside the warping baseline."""

from __future__ import annotations

import argparse
import json
import sys
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
    add_vgg_option(command, "as for `vcam train meta` (fine-tuning)")
    command.add_argument("--force", action="store_true", help="replace an earlier report")
    command.add_argument("--json", action="store_true", help="print the overall figures as JSON")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from vcam.data.clips import open_dataset
    from vcam.eval.report import check_report_folder, markdown_report, write_report
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
