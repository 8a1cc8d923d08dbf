"""The options several commands share, defined once: what `vcam run` and `vcam call` both
take (input, sinks, rendering, compositing, landmarks), the render backend's name, and the
VGG19 weights of the commands that fine-tune or train.

Standard library only: defining the options costs the other commands nothing.
"""

from __future__ import annotations

import argparse
import re

from vcam.commands.arguments import positive_int, positive_number

# --backend as the command line spells it -> the engine's name (``engines.backend``).
BACKENDS = {"auto": "auto", "torch": "torch", "onnx": "onnxruntime", "tensorrt": "tensorrt"}
# Accepted and not shown: the engine's own name.
HIDDEN_BACKEND_ALIASES = {"onnxruntime": "onnxruntime"}
RETARGET_CHOICES = ("relative", "raw")  # vcam.runtime.retarget.RETARGET_MODES
LANDMARK_CHOICES = ("dlib", "face-alignment")
DEVICE_CHOICES = ("auto", "cpu", "cuda")


def parse_size(text: str) -> tuple[int, int]:
    """``1280x720`` -> (1280, 720)."""
    match = re.fullmatch(r"(\d+)[xX](\d+)", text)
    if not match or min(int(match[1]), int(match[2])) < 16:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 1280x720, got {text}")
    return int(match[1]), int(match[2])


def engine_backend(text: str, auto: bool = True) -> str:
    """``--backend NAME`` -> the engine's name: ``onnx`` is ONNX Runtime (``onnxruntime``,
    the engine's own name, is accepted too)."""
    names = [name for name in BACKENDS if auto or name != "auto"]
    engine = BACKENDS.get(text) if text in names else HIDDEN_BACKEND_ALIASES.get(text)
    if engine is None:
        raise argparse.ArgumentTypeError(
            f"invalid choice: {text!r} (choose from {', '.join(names)})")
    return engine


def add_backend_option(parser: argparse.ArgumentParser, help: str,
                       default: str | list[str] = "auto", several: bool = False) -> None:
    """``--backend auto|torch|onnx|tensorrt``, parsed to the engine's name; ``several``: one
    or more of the engines (no ``auto``), ``default`` then a list of engine names."""
    names = [name for name in BACKENDS if not several or name != "auto"]
    parser.add_argument("--backend", type=lambda text: engine_backend(text, auto=not several),
                        nargs="+" if several else None, default=default,
                        metavar="|".join(names), help=help)


def add_media_options(parser: argparse.ArgumentParser, call: bool) -> None:
    """The options of `vcam run` (``call`` False) and of `vcam call` (True), where the sinks
    show the peer's avatar and one's own input may be ``none``."""
    parser.add_argument(
        "--input", default="0", metavar="0|FILE|demo|none" if call else "0|FILE|demo",
        help="where your face comes from, as for `vcam run`: a camera index (default 0), a "
        "video file (played in real time), 'demo' (your avatar animated, no camera needed) or "
        "'none' to only watch" if call else "camera index, a video file, or 'demo' (an "
        "animated avatar, no camera needed; written only to files it is a 10 s clip, every "
        "frame kept); default: camera 0")
    parser.add_argument(
        "--sink", action="append",
        metavar="window|virtualcam|file:PATH" if call else "virtualcam|window|file:PATH",
        help="where the peer's avatar goes: 'window' (a preview window; q hangs up), "
        "'virtualcam' (the virtual camera, as `vcam run` uses it) or 'file:PATH.mp4'; repeat "
        "for several (default: window)" if call else "where the video goes; repeat for "
        "several (default: virtualcam)")
    add_backend_option(parser, "engine rendering the peer's avatar, as for `vcam run` "
                       "(default: TensorRT on an NVIDIA GPU, else ONNX Runtime on the CPU)"
                       if call else "inference engine (default: the fastest available)")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto",
                        help="where the peer's avatar is rendered (default: a CUDA GPU when "
                        "there is one)" if call else None)
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="CPU threads of ONNX Runtime for rendering (default: all but one "
                        "core); torch's own thread count is left as it is" if call
                        else "CPU threads for inference (default: all but one core)")
    parser.add_argument("--size", type=parse_size, default=(1280, 720), metavar="WxH",
                        help="size of the peer's picture in the sinks (default: 1280x720)"
                        if call else "output size (default: 1280x720)")
    parser.add_argument("--fps", type=positive_number, default=None,
                        help="your frame rate with a camera or the demo, 1 to 120 (default 30; "
                        "a video file sends at its own rate)" if call
                        else "output frame rate (default: the video's, or 30)")
    parser.add_argument("--retarget", choices=RETARGET_CHOICES, default="relative",
                        help="relative: your motion on your avatar's face shape (default); "
                        "raw: your own landmarks" + ("" if call else " (when the avatar is you)"))
    parser.add_argument("--background", default="#202020",
                        metavar="COLOUR|IMAGE" if call else "COLOUR|blur|IMAGE",
                        help="behind the peer's avatar: a colour '#RRGGBB' or an image file "
                        "(default: #202020)" if call else "behind the avatar: a colour "
                        "'#RRGGBB', 'blur' (your blurred camera image) or an image file")
    parser.add_argument("--mirror", action="store_true",
                        help="flip the peer's picture left-right" if call
                        else "flip the output left-right")
    parser.add_argument("--landmarks", choices=LANDMARK_CHOICES, default="dlib",
                        help="landmark detector (default: dlib)")
    parser.add_argument("--virtualcam-device", metavar="DEVICE",
                        help="virtual camera for --sink virtualcam, e.g. /dev/video4 (default: "
                        "the first)")
    parser.add_argument("--json", action="store_true",
                        help="print the join details and the call report as JSON lines" if call
                        else "print the run summary as JSON")


def add_vgg_option(parser: argparse.ArgumentParser, help: str = "as for `vcam train meta`"
                   ) -> None:
    parser.add_argument("--vgg", default="auto", help=help)


def add_cost_options(parser: argparse.ArgumentParser) -> None:
    """Options that trade a training step's cost for its signal."""
    parser.add_argument("--vgg-size", type=int, default=0,
                        help="compute the VGG content loss on frames shrunk to this many px "
                        "(0: full size; 128 costs a quarter)")
    parser.add_argument("--discriminator-every", type=positive_int, default=1,
                        help="adversarial terms and D's update every N steps (1: the paper)")


def loss_weights(text: str):
    """``--loss-weights TEXT`` -> the losses' weights (a one-line error when malformed)."""
    from vcam.errors import UserError
    from vcam.models.losses import LossWeights

    try:
        return LossWeights.parse(text)
    except ValueError as error:
        raise UserError(f"--loss-weights: {error}") from None
