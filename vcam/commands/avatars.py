"""`vcam avatars`: the enrolled avatars."""

from __future__ import annotations

import argparse
import json

SUMMARY = "List the enrolled avatars."
DESCRIPTION = SUMMARY


def add_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    from vcam.avatar import avatars_dir, list_avatars

    entries = list_avatars()
    if args.json:
        print(json.dumps(entries, indent=1))
        return 0
    if not entries:
        print(f"no avatars in {avatars_dir()}: create one with `vcam enroll PHOTO --name NAME`")
    for entry in entries:
        if "error" in entry:
            print(f"{entry['name']:<20} unreadable  {entry['path']}")
            continue
        mode = f"FT {entry['finetune_steps']}" if entry["finetune_steps"] else "FF"
        print(f"{entry['name']:<20} {entry['config']:<6} {entry['shots']} shot(s) {mode:<7} "
              f"{entry['megabytes']:>6} MB  {entry['created']}  {entry['path']}")
    return 0
