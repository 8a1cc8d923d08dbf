"""Calls without --avatar: both sides show the built-in avatar, and neither has to send it."""

from vcam.net.avatar_exchange import file_digest, local_copy
from vcam.net.control import AvatarInfo
from vcam.runtime.session import builtin_avatar


def test_two_installs_enroll_the_same_builtin_bytes_and_a_call_finds_its_own(
        tiny_model, dlib_detector, tmp_path, monkeypatch):
    monkeypatch.setenv("VCAM_HOME", str(tmp_path / "peer"))
    theirs = builtin_avatar(tiny_model, lambda: dlib_detector)
    monkeypatch.setenv("VCAM_HOME", str(tmp_path / "mine"))
    mine = builtin_avatar(tiny_model, lambda: dlib_detector)
    assert theirs.path != mine.path
    assert theirs.path.read_bytes() == mine.path.read_bytes()
    sha256, size = file_digest(theirs.path)
    crop = mine.avatar.config.image_size
    assert local_copy(AvatarInfo("astronaut", sha256, size, crop)) == mine.path
    # Same name, other bytes: not a copy (and any other name never looks in the cache).
    assert local_copy(AvatarInfo("astronaut", "0" * 64, size, crop)) is None
    assert local_copy(AvatarInfo("someone", sha256, size, crop)) is None
