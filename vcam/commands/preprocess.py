"""`vcam preprocess`: videos and frame folders -> aligned face crops and landmarks."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from vcam.commands.arguments import positive_int

SUMMARY = ("Turn talking-head videos (or folders of numbered frames) into aligned face crops "
           "and 68-point landmarks for training.")
DESCRIPTION = SUMMARY


def add_arguments(command: argparse.ArgumentParser) -> None:
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


def run(args: argparse.Namespace) -> int:
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
