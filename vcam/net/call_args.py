"""The options of `vcam call serve` and `vcam call join`.

Kept apart from ``vcam.net.cli_call`` so that building the command line imports neither
torch nor the network stack: the handlers import them when a call actually starts.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vcam.arguments import positive_int, positive_number
from vcam.net.defaults import DEFAULT_PORT
from vcam.runtime.app import BACKEND_CHOICES, LANDMARK_CHOICES, RETARGET_CHOICES, parse_size

# Where the peer goes without --sink: a call is for watching the other side.
DEFAULT_SINK = "window"
EXAMPLES = """examples:
  vcam call serve --avatar me                    # webcam and microphone; the peer in a window
  vcam call join URL --token T --avatar you --sink virtualcam --sink window
  vcam call serve --input demo --audio-input voice.wav --sink file:peer.mp4 --max-seconds 30
"""


def run_serve(args: argparse.Namespace) -> int:
    from vcam.net.cli_call import run_serve as serve

    return serve(args)


def run_join(args: argparse.Namespace) -> int:
    from vcam.net.cli_call import run_join as join

    return join(args)


def add_call_arguments(commands: Any) -> argparse.ArgumentParser:
    """Add ``call serve`` and ``call join`` to ``commands`` (a parser's subparsers)."""
    call = commands.add_parser(
        "call", help="a landmark-only video call: only face landmarks cross the network",
        description="A two-way landmark-only call: each side sends its own face landmarks "
        "(a few kbit/s) and renders the other side's avatar locally, with `vcam run`'s "
        "renderer, into the sinks it chooses (a preview window unless --sink says otherwise).")
    modes = call.add_subparsers(title="modes", metavar="MODE", required=True)
    serve = modes.add_parser(
        "serve", help="wait for a peer and print the join command (URL and token)",
        description="Start a call: listen for one peer and print the join URL and token.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.set_defaults(handler=run_serve)
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, metavar="PORT",
                       help=f"port to listen on (default {DEFAULT_PORT}; 0 picks a free one)")
    serve.add_argument("--wait-seconds", type=float, default=0.0, metavar="SECONDS",
                       help="give up when nobody joined within this time (default: wait)")
    add_common_arguments(serve)
    join = modes.add_parser("join", help="join a call started with `vcam call serve`",
                            description="Join a call with the URL and token it printed.",
                            epilog=EXAMPLES,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    join.set_defaults(handler=run_join)
    join.add_argument("url", help="the join URL printed by `vcam call serve`")
    join.add_argument("--token", required=True, help="the token printed by `vcam call serve`")
    add_common_arguments(join)
    return call


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--avatar", metavar="NAME|PATH",
                        help="your avatar: a name (see `vcam avatars`) or a bundle file "
                        "(default: the built-in avatar, as for `vcam run`)")
    parser.add_argument("--audio-input", default="default", metavar="DEVICE|FILE|none",
                        help="your voice: an input device ('default', the system's default "
                        "microphone; or a device name), a sound file (played in real time) "
                        "or 'none' for a call without your voice")
    parser.add_argument("--input", default="0", metavar="0|FILE|demo|none",
                        help="where your face comes from, as for `vcam run`: a camera index "
                        "(default 0), a video file (played in real time), 'demo' (your avatar "
                        "animated, no camera needed) or 'none' to only watch")
    parser.add_argument("--loop", action="store_true", help="play an --input file in a loop")
    parser.add_argument("--fps", type=positive_number, default=None,
                        help="your frame rate with a camera or the demo, 1 to 120 (default 30; "
                        "a video file sends at its own rate)")
    parser.add_argument("--landmarks", choices=LANDMARK_CHOICES, default="dlib",
                        help="landmark detector (default: dlib)")
    parser.add_argument("--retarget", choices=RETARGET_CHOICES, default="relative",
                        help="relative: your motion on your avatar's face shape (default); "
                        "raw: your own landmarks")
    parser.add_argument("--max-seconds", type=float, default=0.0, metavar="SECONDS",
                        help="hang up after this many seconds (default: no limit)")
    parser.add_argument("--sink", action="append", metavar="window|virtualcam|file:PATH",
                        help="where the peer's avatar goes: 'window' (a preview window; q hangs "
                        "up), 'virtualcam' (the virtual camera, as `vcam run` uses it) or "
                        "'file:PATH.mp4'; repeat for several (default: window)")
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default="auto",
                        help="engine rendering the peer's avatar, as for `vcam run` (default: "
                        "TensorRT on an NVIDIA GPU, else ONNX Runtime on the CPU)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the peer's avatar is rendered (default: a CUDA GPU when "
                        "there is one)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="CPU threads of ONNX Runtime for rendering (default: all but one "
                        "core); torch's own thread count is left as it is")
    parser.add_argument("--size", type=parse_size, default=(1280, 720), metavar="WxH",
                        help="size of the peer's picture in the sinks (default: 1280x720)")
    parser.add_argument("--background", default="#202020", metavar="COLOUR|IMAGE",
                        help="behind the peer's avatar: a colour '#RRGGBB' or an image file "
                        "(default: #202020)")
    parser.add_argument("--mirror", action="store_true",
                        help="flip the peer's picture left-right")
    parser.add_argument("--virtualcam-device", metavar="DEVICE",
                        help="virtual camera for --sink virtualcam, e.g. /dev/video4 (default: "
                        "the first)")
    parser.add_argument("--share-avatar", action="store_true",
                        help="send your avatar bundle to a peer that does not have it")
    parser.add_argument("--keep", action="store_true",
                        help="keep a received avatar among yours (default: for this call only)")
    parser.add_argument("--max-avatar-mb", type=float, metavar="MIB",
                        help="largest avatar accepted from the peer, in MiB (default: 400, the "
                        "largest a vcam avatar can be)")
    parser.add_argument("--shape-basis", type=Path, metavar="FILE",
                        help="shape basis file for the landmark codec (both sides must use the "
                        "same; default: the one shipped with the default model)")
    parser.add_argument("--ice-server", action="append", default=[], metavar="URL",
                        help="a STUN or TURN server (stun:HOST:PORT, turn:HOST:PORT); "
                        "repeatable; none by default")
    parser.add_argument("--ice-username", metavar="NAME", help="TURN user name")
    parser.add_argument("--ice-credential", metavar="PASSWORD", help="TURN password")
    parser.add_argument("--ice-address", action="append", default=[], metavar="ADDRESS",
                        help="offer only this local address for media (repeatable; default: "
                        "127.0.0.1 when the call is on loopback, else every interface)")
    parser.add_argument("--jitter-ms", type=float, default=50.0, metavar="MS",
                        help="playout delay of the peer's landmarks (default 50 ms)")
    parser.add_argument("--peer-timeout", type=float, default=5.0, metavar="SECONDS",
                        help="end the call when the peer is silent this long (default: 5 s)")
    parser.add_argument("--inject-loss", type=float, default=0.0, metavar="P",
                        help="testing: drop this fraction of the landmark packets sent")
    parser.add_argument("--inject-reorder", type=float, default=0.0, metavar="P",
                        help="testing: swap this fraction of the landmark packets sent")
    parser.add_argument("--inject-seed", type=int, default=0, metavar="N",
                        help="testing: seed of the injected faults")
    parser.add_argument("--json", action="store_true",
                        help="print the join details and the call report as JSON lines")
