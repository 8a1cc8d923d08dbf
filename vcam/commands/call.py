"""`vcam call serve` and `vcam call join`: their options, and running a call from them.

This module imports only the standard library, so building the command line imports
neither torch nor the network stack: :func:`run` loads ``vcam.net.call_runner`` when a call
actually starts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vcam.commands.options import add_media_options
from vcam.net.defaults import DEFAULT_PORT

SUMMARY = "a landmark-only video call: only face landmarks cross the network"
DESCRIPTION = ("A two-way landmark-only call: each side sends its own face landmarks (a few "
               "kbit/s) and renders the other side's avatar locally, with `vcam run`'s "
               "renderer, into the sinks it chooses (a preview window unless --sink says "
               "otherwise).")
EXAMPLES = """examples:
  vcam call serve --avatar me                    # webcam and microphone; the peer in a window
  vcam call join URL --token=T --avatar you --sink virtualcam --sink window
  vcam call serve --input demo --audio-input voice.wav --sink file:peer.mp4 --max-seconds 30
"""


def add_arguments(call: argparse.ArgumentParser) -> None:
    """``call serve`` and ``call join`` on ``call`` (the ``call`` command's parser)."""
    modes = call.add_subparsers(title="modes", metavar="MODE", dest="mode", required=True)
    serve = modes.add_parser(
        "serve", help="wait for a peer and print the join command (URL and token)",
        description="Start a call: listen for one peer and print the join URL and token.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    join.add_argument("url", help="the join URL printed by `vcam call serve`")
    join.add_argument("--token", required=True, help="the token printed by `vcam call serve`")
    add_common_arguments(join)


def run(args: argparse.Namespace) -> int:
    """Run one call (``args.mode``: serve or join); the exit code."""
    from vcam.net import call_runner

    return call_runner.run_serve(args) if args.mode == "serve" else call_runner.run_join(args)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--avatar", metavar="NAME|PATH",
                        help="your avatar: a name (see `vcam avatars`) or a bundle file "
                        "(default: the built-in avatar, as for `vcam run`)")
    parser.add_argument("--audio-input", default="default", metavar="DEVICE|FILE|none",
                        help="your voice: an input device ('default', the system's default "
                        "microphone; or a device name), a sound file (played in real time) "
                        "or 'none' for a call without your voice")
    add_media_options(parser, call=True)
    parser.add_argument("--loop", action="store_true", help="play an --input file in a loop")
    parser.add_argument("--max-seconds", type=float, default=0.0, metavar="SECONDS",
                        help="hang up after this many seconds (default: no limit)")
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
                        help="playout delay of the peer's landmarks (default 50 ms; more "
                        "when its packets or its voice need it)")
    parser.add_argument("--landmark-step", type=float, default=3.0, metavar="PX",
                        help="quantiser step of your landmarks, in pixels of a 256 px crop "
                        "(0.02 to 3.98; default 3, chosen by measurement: see README)")
    parser.add_argument("--frames-per-packet", type=int, default=6, metavar="N",
                        help="frames of your landmarks in one packet, 1 to 15 (default 6: "
                        "fewer bytes on the wire, 33 ms more delay per extra frame)")
    parser.add_argument("--peer-timeout", type=float, default=5.0, metavar="SECONDS",
                        help="end the call when the peer is silent this long (default: 5 s)")
    parser.add_argument("--inject-loss", type=float, default=0.0, metavar="P",
                        help="testing: drop this fraction of the landmark packets sent")
    parser.add_argument("--inject-reorder", type=float, default=0.0, metavar="P",
                        help="testing: swap this fraction of the landmark packets sent")
    parser.add_argument("--inject-seed", type=int, default=0, metavar="N",
                        help="testing: seed of the injected faults")
