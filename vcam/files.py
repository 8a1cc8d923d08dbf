"""Writing files so that nothing half-written is ever left behind (the one atomic write lives
in ``calibration.files``, the layer every package may import), and where a path lies."""

from __future__ import annotations

from pathlib import Path

from calibration.files import atomic_write_bytes

__all__ = ["atomic_write_bytes", "atomic_write_text", "is_within"]


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def is_within(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it (both resolved)."""
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents
