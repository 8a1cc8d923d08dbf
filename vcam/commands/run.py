"""`vcam run` at the command line: its options, and running it from the parsed options.

This module imports only the standard library, so defining the options costs nothing to
the other commands; :func:`run` loads :mod:`vcam.runtime.session` (torch, OpenCV, the
pipeline) when the command actually runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from vcam.commands.arguments import non_negative_int
from vcam.commands.options import add_media_options

SUMMARY = ("Appear as your avatar: webcam (or a clip, or the demo animation) -> landmarks -> "
           "avatar -> virtual camera, preview window or mp4 file.")
DESCRIPTION = SUMMARY
logger = logging.getLogger("vcam.runtime")


def add_arguments(parser: argparse.ArgumentParser) -> None:
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
    add_media_options(parser, call=False)
    parser.add_argument("--max-frames", type=non_negative_int, default=0, metavar="N",
                        help="stop after N input frames (default: run until stopped)")
    parser.add_argument("--follow-head", action="store_true",
                        help="move the avatar with your head instead of keeping it centred")


def run(args: argparse.Namespace) -> int:
    """`vcam run`: returns the exit code (0 also after Ctrl-C, the usual way to stop)."""
    from vcam.runtime import session

    settings = session.settings_from_args(args)
    log_to_stderr(quiet=settings.json)
    summary = session.run(settings)
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


