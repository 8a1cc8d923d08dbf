"""Avatar exchange during a call: finding the peer's avatar locally, or receiving its bundle.

Each side names its avatar in its hello (name, SHA-256 and size of the bundle file, crop
size). The receiver first looks for a bundle of that name among its own avatars with exactly
those bytes; failing that, and only when the peer shares its avatar (``--share-avatar``), it
asks for it. A transfer is an ``avatar_offer`` (size, SHA-256) followed by binary chunks in
order on the reliable control channel. The receiver refuses, before accepting any chunk, an
offer larger than its cap or one that differs from the hello; it refuses chunks out of order
or beyond the declared size, and a bundle whose SHA-256 differs. A complete bundle is written
to a temporary file and loaded with ``load_avatar`` (format, version and its own checksum),
its name, crop size and model configuration must match, and the file is deleted at once:
the avatar lives in memory for the call only, unless ``keep`` saves it among the user's
avatars (never over an existing one), which happens only once it has rendered a frame.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vcam.avatar import (
    BUILTIN_AVATAR_NAME,
    MAX_AVATAR_BYTES,
    SUFFIX,
    Avatar,
    avatar_path,
    builtin_cache_dir,
    load_avatar,
)
from vcam.compiled import render_once
from vcam.errors import UserError
from vcam.files import atomic_write_bytes
from vcam.models.config import ModelConfig, config_names, get_config
from vcam.net.control import CHUNK_PAYLOAD_BYTES, AvatarInfo, AvatarOffer, Chunk, encode_chunk

READ_BLOCK = 1 << 20


@dataclass(frozen=True)
class ExchangeSettings:
    """``max_bytes``: the largest bundle accepted from a peer; ``high_water_bytes``: sending
    pauses while the control channel buffers more than this; ``keep``: save a received
    avatar among the user's avatars."""

    max_bytes: int = MAX_AVATAR_BYTES
    high_water_bytes: int = 1 << 20
    keep: bool = False

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.high_water_bytes < CHUNK_PAYLOAD_BYTES:
            raise ValueError("max_bytes must be positive and high_water_bytes at least a chunk")


class TransferRefused(Exception):
    """An avatar transfer that was refused; the message says why, on one line."""


def file_digest(path: Path) -> tuple[str, int]:
    """SHA-256 (hex) and size of a file, read in blocks."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as stream:
        while block := stream.read(READ_BLOCK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def describe_avatar(path: Path, avatar: Avatar) -> AvatarInfo:
    """What the hello says about one's own avatar."""
    sha256, size = file_digest(path)
    return AvatarInfo(avatar.name, sha256, size, avatar.config.image_size)


def local_copy(info: AvatarInfo) -> Path | None:
    """The user's own bundle of the peer's avatar: same name and exactly the same bytes (the
    built-in avatar, which each side enrolls for itself, is looked for in the cache too)."""
    for path in own_bundles(info.name):
        if path.is_file() and path.stat().st_size == info.size \
                and file_digest(path)[0] == info.sha256:
            return path
    return None


def own_bundles(name: str) -> list[Path]:
    """Where one's own bundle of the avatar ``name`` may be."""
    try:
        paths = [avatar_path(name)]
    except UserError:
        return []
    if name == BUILTIN_AVATAR_NAME:
        paths += sorted(builtin_cache_dir().glob(f"{BUILTIN_AVATAR_NAME}-*{SUFFIX}"))
    return paths


def chunk_messages(data: bytes) -> Iterator[bytes]:
    """The bundle as chunk messages, in order."""
    for offset in range(0, len(data), CHUNK_PAYLOAD_BYTES):
        yield encode_chunk(offset, data[offset:offset + CHUNK_PAYLOAD_BYTES])


def check_declared_size(info: AvatarInfo, settings: ExchangeSettings) -> None:
    """Refuse, before asking for it, a bundle larger than the cap."""
    if info.size > settings.max_bytes:
        raise TransferRefused(f"the peer's avatar is {info.size} bytes, over the "
                              f"{settings.max_bytes} byte limit")


class IncomingAvatar:
    """One transfer from the peer, checked against what its hello declared."""

    def __init__(self, expected: AvatarInfo, settings: ExchangeSettings) -> None:
        self.expected = expected
        self.settings = settings
        self.buffer: bytearray | None = None
        self.digest = hashlib.sha256()

    @property
    def received(self) -> int:
        return 0 if self.buffer is None else len(self.buffer)

    def offer(self, offer: AvatarOffer) -> None:
        """Accept the offer or raise ``TransferRefused``; no chunk is taken before this."""
        if self.buffer is not None:
            raise TransferRefused("the peer offered its avatar twice")
        if offer.size > self.settings.max_bytes:
            raise TransferRefused(f"the peer offered {offer.size} bytes, over the "
                                  f"{self.settings.max_bytes} byte limit")
        if offer.size != self.expected.size or offer.sha256 != self.expected.sha256:
            raise TransferRefused("the peer offered an avatar other than the one it announced")
        self.buffer = bytearray()

    def chunk(self, chunk: Chunk) -> bool:
        """Take the next chunk; True once the bundle is complete."""
        if self.buffer is None:
            raise TransferRefused("the peer sent avatar data without an offer")
        if chunk.offset != len(self.buffer) or not chunk.data:
            raise TransferRefused("the peer sent avatar data out of order")
        if len(self.buffer) + len(chunk.data) > self.expected.size:
            raise TransferRefused("the peer sent more avatar data than it declared")
        self.buffer += chunk.data
        self.digest.update(chunk.data)
        return len(self.buffer) == self.expected.size

    def verified_bytes(self) -> bytes:
        """The complete bundle, its SHA-256 checked."""
        if self.buffer is None or len(self.buffer) != self.expected.size:
            raise TransferRefused("the avatar transfer is incomplete")
        if self.digest.hexdigest() != self.expected.sha256:
            raise TransferRefused("the received avatar failed its SHA-256 check")
        return bytes(self.buffer)


def load_received(data: bytes, expected: AvatarInfo, keep: bool) -> Avatar:
    """Load a verified bundle through a temporary file (blocking: run it in a thread)."""
    with tempfile.TemporaryDirectory(prefix="vcam-call-") as folder:
        path = Path(folder) / f"peer{SUFFIX}"
        path.write_bytes(data)
        try:
            avatar = load_avatar(path)
        except UserError as error:
            raise TransferRefused(f"the received avatar is not valid: {error}") from None
    check_loaded(avatar, expected)
    if keep:
        try:
            render_once(avatar)
        except UserError as error:
            raise TransferRefused(f"the received avatar is not usable: {error}") from None
        keep_copy(data, expected)
    return avatar


def check_loaded(avatar: Avatar, expected: AvatarInfo) -> None:
    """The bundle must be the avatar announced, with a model vcam knows (so its size is
    bounded before any network is built)."""
    if avatar.name != expected.name or avatar.config.image_size != expected.image_size:
        raise TransferRefused("the received avatar's name or size differs from the announced")
    if not is_known_config(avatar.config):
        raise TransferRefused("the received avatar uses a model configuration vcam does not "
                              "know")


def is_known_config(config: ModelConfig) -> bool:
    """Equal to one of the named configurations (up to the generator kind and what it is
    given inside an opening mouth, neither of which changes a network's size)."""
    for name in config_names():
        named = get_config(name)
        if dataclasses.replace(config, generator=named.generator,
                               mouth_input=named.mouth_input) == named:
            return True
    return False


def keep_copy(data: bytes, expected: AvatarInfo) -> Path | None:
    """Save the bundle as the user's avatar of that name, unless one already exists."""
    path = avatar_path(expected.name)
    if path.exists():
        return None
    atomic_write_bytes(path, data)
    return path


def read_with_digest(path: Path) -> tuple[bytes, str]:
    """A file's bytes and their SHA-256 (blocking: run it in a thread)."""
    data = path.read_bytes()
    return data, hashlib.sha256(data).hexdigest()
