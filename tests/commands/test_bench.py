"""`vcam bench pipeline --clip`: a file that gives no frames is a one-line error (exit 2),
found before any model is loaded."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from vcam.cli import main


def no_frames_video(path: Path) -> Path:
    """An .mp4 with a header and not one frame (a recording stopped at once)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (64, 64))
    writer.release()
    return path


@pytest.mark.parametrize("make, problem", [
    (lambda folder: folder / "absent.mp4", "does not exist"),
    (lambda folder: folder / "notes.mp4", "no frame"),
    (lambda folder: no_frames_video(folder / "empty.mp4"), "no frame"),
], ids=["missing", "not-a-video", "no-frames"])
def test_a_clip_without_frames_is_a_one_line_error(make, problem, tmp_path, capsys):
    (tmp_path / "notes.mp4").write_text("not a video\n")
    clip = make(tmp_path)
    assert main(["bench", "pipeline", "--clip", str(clip), "--frames", "4"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"--clip {clip}" in err and problem in err
