"""The `vcam` command line. Options are parsed here, once, and passed on explicitly."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from vcam import __version__
from vcam.errors import UserError

SHARED_CLIPS = Path("../shared/data/clips")


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vcam", description="Appear on video calls as a neural avatar of yourself.")
    parser.add_argument("--version", action="version", version=f"vcam {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    add_preprocess(commands)
    add_bench(commands)
    return parser


def add_command(commands, name: str, summary: str,
                handler: Callable[[argparse.Namespace], int | None]) -> argparse.ArgumentParser:
    command = commands.add_parser(name, help=summary, description=summary)
    command.set_defaults(handler=handler)
    return command


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


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
    landmarks.add_argument("--data", type=Path, default=SHARED_CLIPS,
                           help="clips for the preprocessing figure (default: ../shared/data/"
                           "clips; synthetic clips when absent)")
    landmarks.add_argument("--clips", type=positive_int, default=12)
    landmarks.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1)
    landmarks.add_argument("--json", action="store_true")


def run_landmark_bench_command(args: argparse.Namespace) -> int:
    from vcam.bench.landmarks import run_landmark_bench

    report = run_landmark_bench(args.backend, args.frames, args.data, args.clips, args.workers)
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
