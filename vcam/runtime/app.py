"""`vcam run` at the command line: its options, and running it from the parsed options.

This module imports only the standard library, so defining the options costs nothing to
the other commands; :func:`run_from_args` loads :mod:`vcam.runtime.session` (torch, OpenCV,
the pipeline) when the command actually runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

from vcam.arguments import non_negative_int, positive_int, positive_number

BACKEND_CHOICES = ("auto", "torch", "onnxruntime", "tensorrt")
RETARGET_CHOICES = ("relative", "raw")  # vcam.runtime.retarget.RETARGET_MODES
LANDMARK_CHOICES = ("dlib", "face-alignment")
LAYOUT_CHOICES = ("paste", "tile")  # vcam.runtime.compositor.LAYOUTS
logger = logging.getLogger("vcam.runtime")


def parse_size(text: str) -> tuple[int, int]:
    """``1280x720`` -> (1280, 720)."""
    match = re.fullmatch(r"(\d+)[xX](\d+)", text)
    if not match or min(int(match[1]), int(match[2])) < 16:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 1280x720, got {text}")
    return int(match[1]), int(match[2])


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Define `vcam run`'s options on ``parser``."""
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--avatar", action="append", metavar="NAME|PATH",
                     help="an enrolled avatar (name or bundle file); repeat it to switch live "
                     "with the number keys in the preview (default: the bundled avatar)")
    who.add_argument("--photo", type=Path, metavar="FILE",
                     help="enroll this photo on the fly (feed-forward) and use it")
    parser.add_argument("--model", type=Path,
                        help="meta-learned model for --photo and the built-in avatar "
                        "(default: the one shipped)")
    parser.add_argument("--input", default="0", metavar="0|FILE|demo",
                        help="camera index, a video file, or 'demo' (an animated avatar, no "
                        "camera needed; written only to files it is a 10 s clip, every frame "
                        "kept); default: camera 0")
    parser.add_argument("--sink", action="append", metavar="virtualcam|window|file:PATH",
                        help="where the video goes; repeat for several (default: virtualcam)")
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default="auto",
                        help="inference engine (default: the fastest available)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="CPU threads for inference (default: all but one core)")
    parser.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                        help="int8: ONNX Runtime's quantised model, about a third less CPU "
                        "per frame (exported once, checked against torch)")
    parser.add_argument("--size", type=parse_size, default=(1280, 720), metavar="WxH",
                        help="output size (default: 1280x720)")
    parser.add_argument("--fps", type=positive_number, default=None,
                        help="output frame rate (default: the video's, or 30)")
    parser.add_argument("--max-frames", type=non_negative_int, default=0, metavar="N",
                        help="stop after N input frames (default: run until stopped)")
    parser.add_argument("--retarget", choices=RETARGET_CHOICES, default="relative",
                        help="relative: your motion on the avatar's face shape (default); "
                        "raw: your own landmarks (when the avatar is you)")
    parser.add_argument("--layout", choices=LAYOUT_CHOICES, default="paste",
                        help="paste: the avatar's face pasted back into its enrollment photo, "
                        "like a webcam picture (default); tile: the face crop on a background")
    parser.add_argument("--background", default="#202020", metavar="COLOUR|blur|IMAGE",
                        help="a colour '#RRGGBB' for any bars beside the photo; with --layout "
                        "tile, behind the tile: a colour, 'blur' (your blurred camera image) or "
                        "an image file")
    parser.add_argument("--mirror", action="store_true", help="flip the output left-right")
    parser.add_argument("--follow-head", action="store_true",
                        help="--layout tile: move the tile with your head instead of keeping "
                        "it centred")
    parser.add_argument("--landmarks", choices=LANDMARK_CHOICES, default="dlib",
                        help="landmark detector (default: dlib)")
    parser.add_argument("--virtualcam-device", metavar="DEVICE",
                        help="virtual camera to use, e.g. /dev/video4 (default: the first)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing --sink file (never the --input file)")
    parser.add_argument("--json", action="store_true", help="print the run summary as JSON")


def run_from_args(args: argparse.Namespace) -> int:
    """`vcam run`: returns the exit code (0 also after Ctrl-C, the usual way to stop)."""
    from vcam.runtime.session import run, settings_from_args

    settings = settings_from_args(args)
    log_to_stderr(quiet=settings.json)
    summary = run(settings)
    if settings.json:
        print(json.dumps(summary.to_dict(), indent=1))
    else:
        for line in summary.lines():
            print(line)
    return 0


def log_to_stderr(quiet: bool) -> None:
    """Send the runtime's log lines (stats, events) to stderr, once."""
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("vcam: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


