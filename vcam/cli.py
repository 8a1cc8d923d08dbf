"""The `vcam` command line. Options are parsed here, once, and passed on explicitly.

Every command is a module of :mod:`vcam.commands` with ``SUMMARY``, ``DESCRIPTION``,
``add_arguments(parser)`` and ``run(args)`` (the exit code); defining the options imports
only the standard library, and ``run`` loads what the command needs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from vcam import __version__
from vcam.commands import COMMANDS
from vcam.errors import UserError


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


def with_default_command(argv: list[str]) -> list[str]:
    """``python run_vcam.py [OPTIONS]`` means ``vcam run [OPTIONS]``: no command, or options
    first (other than --help and --version), select the real-time camera."""
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        return ["run", *argv]
    return argv


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vcam", description="Appear on video calls as a neural avatar of yourself.")
    parser.add_argument("--version", action="version", version=f"vcam {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"vcam.commands.{name}")
        command = commands.add_parser(name, help=module.SUMMARY,
                                      description=module.DESCRIPTION)
        module.add_arguments(command)
        command.set_defaults(handler=module.run)
    return parser
