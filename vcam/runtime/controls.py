"""Commands from the user (preview keys) to the running pipeline.

Commands are queued, never dropped: the landmarks stage takes neutral-face resets and
avatar switches before its next frame; the overlay switch and the stop request are flags.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from enum import Enum


class Command(Enum):
    RESET_NEUTRAL = "reset neutral"


@dataclass(frozen=True)
class SelectAvatar:
    index: int


LandmarkCommand = Command | SelectAvatar


class Controls:
    """Shared between the main thread (keys, Ctrl-C) and the stages."""

    def __init__(self, avatar_count: int) -> None:
        self.avatar_count = avatar_count
        self.stop = threading.Event()
        self.overlay = threading.Event()
        self.overlay.set()
        self.quit_requested = False
        self._landmark_commands: queue.SimpleQueue[LandmarkCommand] = queue.SimpleQueue()

    def request_quit(self) -> None:
        self.quit_requested = True
        self.stop.set()

    def reset_neutral(self) -> None:
        self._landmark_commands.put(Command.RESET_NEUTRAL)

    def select_avatar(self, index: int) -> bool:
        """Switch to avatar ``index`` (0-based); False when there is no such avatar."""
        if not 0 <= index < self.avatar_count:
            return False
        self._landmark_commands.put(SelectAvatar(index))
        return True

    def toggle_overlay(self) -> None:
        if self.overlay.is_set():
            self.overlay.clear()
        else:
            self.overlay.set()

    def landmark_commands(self) -> list[LandmarkCommand]:
        """Every command queued for the landmarks stage, oldest first."""
        commands = []
        while True:
            try:
                commands.append(self._landmark_commands.get_nowait())
            except queue.Empty:
                return commands


QUIT_KEYS = frozenset({ord("q"), ord("Q"), 27})  # 27: Esc
HELP = "keys: q/Esc quit, n reset neutral face, o overlay, 1-9 switch avatar"


def handle_key(key: int, controls: Controls) -> None:
    """Act on a key from the preview window (-1: none)."""
    if key < 0:
        return
    key &= 0xFF
    if key in QUIT_KEYS:
        controls.request_quit()
    elif key in (ord("n"), ord("N")):
        controls.reset_neutral()
    elif key in (ord("o"), ord("O")):
        controls.toggle_overlay()
    elif ord("1") <= key <= ord("9"):
        controls.select_avatar(key - ord("1"))
