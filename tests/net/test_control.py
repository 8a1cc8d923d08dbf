"""Control messages, the avatar exchange and the landmark receive path under hostile input."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import crafted
from vcam.avatar import avatar_bytes, load_avatar
from vcam.enroll import Photo, enroll
from vcam.landmarks.shape_basis import fit_shape_basis
from vcam.models.store import default_model_path, load_models
from vcam.net.avatar_exchange import (
    ExchangeSettings,
    IncomingAvatar,
    TransferRefused,
    check_declared_size,
    chunk_messages,
    load_received,
    local_copy,
)
from vcam.net.control import (
    CHUNK_BYTES,
    MAX_CONTROL_BYTES,
    AvatarInfo,
    AvatarOffer,
    AvatarRequest,
    AvatarResult,
    BadMessage,
    Bye,
    Chunk,
    ControlInbox,
    Hello,
    KeyRequest,
    Ping,
    Ready,
    encode_message,
    parse_message,
)
from vcam.net.jitter import JitterSettings
from vcam.net.packing import PackedEncoder, PackingSettings
from vcam.net.playout import LandmarkInbox
from vcam.train.finetune import FineTuneSettings

SHA = "ab" * 32
INFO = AvatarInfo("astro", SHA, 1234, 64)
HELLO = Hello(1, "0.1.0", ("landmarks/1",), 0xA1, "cd" * 32, INFO, True, True, 25.0)
MESSAGES = [HELLO, AvatarRequest(), AvatarOffer(1234, SHA), AvatarResult(False, "too big"),
            Ready(), KeyRequest(), Ping(), Bye("hung up", 10, 9, 500)]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10)


@pytest.mark.parametrize("message", MESSAGES, ids=lambda message: type(message).__name__)
def test_every_message_round_trips(message):
    text = encode_message(message)
    assert len(text.encode()) <= MAX_CONTROL_BYTES
    assert parse_message(text) == message


def test_chunks_round_trip_and_stay_small():
    data = bytes(range(256)) * 200
    messages = list(chunk_messages(data))
    assert all(len(message) <= CHUNK_BYTES for message in messages)
    chunks = [parse_message(message) for message in messages]
    assert all(isinstance(chunk, Chunk) for chunk in chunks)
    assert b"".join(chunk.data for chunk in chunks) == data
    assert [chunk.offset for chunk in chunks] == [sum(len(c.data) for c in chunks[:i])
                                                  for i in range(len(chunks))]


@pytest.mark.parametrize("data, reason", [
    ("x" * (MAX_CONTROL_BYTES + 1), "oversized"),
    ("{not json", "json"),
    ("[1, 2]", "not_object"),
    ('{"type": "launch"}', "unknown_type"),
    ('{"type": "avatar_offer", "size": -1, "sha256": "' + SHA + '"}', "field_size"),
    ('{"type": "avatar_offer", "size": true, "sha256": "' + SHA + '"}', "field_size"),
    ('{"type": "avatar_offer", "size": 5, "sha256": "XYZ"}', "field_sha256"),
    (b"NOPE\0\0\0\0data", "chunk_magic"),
    (b"VC", "truncated"),
    (b"VCAC" + bytes(CHUNK_BYTES), "oversized"),
    (12345, "not_text"),
])
def test_bad_messages_are_refused_with_a_reason(data, reason):
    with pytest.raises(BadMessage) as refused:
        parse_message(data)
    assert refused.value.reason == reason
    inbox = ControlInbox()
    assert inbox.receive(data) is None and inbox.bad[reason] == 1


def test_hello_with_a_hostile_avatar_name_is_refused():
    document = json.loads(encode_message(HELLO))
    for name in ("../../etc/passwd", ".hidden", "", "a" * 65, "x/y"):
        document["avatar"]["name"] = name
        with pytest.raises(BadMessage):
            parse_message(json.dumps(document))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300), json_values.map(json.dumps)))
def test_control_inbox_never_raises_on_arbitrary_input(data):
    inbox = ControlInbox()
    result = inbox.receive(data)
    assert result is None or type(result).__name__ in {
        "Hello", "AvatarRequest", "AvatarOffer", "AvatarResult", "Ready", "KeyRequest", "Ping",
        "Bye", "Chunk"}
    assert inbox.bad.get("internal", 0) == 0


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(MESSAGES), st.data())
def test_mutated_messages_never_raise(message, data):
    document = json.loads(encode_message(message))
    for _ in range(data.draw(st.integers(1, 3))):
        target = document
        if "avatar" in document and data.draw(st.booleans()):
            target = document["avatar"] if isinstance(document["avatar"], dict) else document
        keys = [*target, data.draw(st.text(max_size=8))]
        key = data.draw(st.sampled_from(keys))
        if data.draw(st.booleans()):
            target.pop(key, None)
        else:
            target[key] = data.draw(json_values)
    inbox = ControlInbox()
    inbox.receive(json.dumps(document))
    assert inbox.bad.get("internal", 0) == 0


# -- the avatar exchange -------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle(tiny_model, dlib_detector, astronaut_image, tmp_path_factory) -> Path:
    avatar, _ = enroll([Photo("astronaut", astronaut_image)], "astro", load_models(tiny_model),
                       dlib_detector, FineTuneSettings())
    path = tmp_path_factory.mktemp("exchange") / "astro.avatar.safetensors"
    path.write_bytes(avatar_bytes(avatar))
    return path


def info_of(data: bytes, name: str = "astro", image_size: int = 64) -> AvatarInfo:
    return AvatarInfo(name, hashlib.sha256(data).hexdigest(), len(data), image_size)


def transfer(data: bytes, expected: AvatarInfo, exchange: ExchangeSettings) -> bytes:
    incoming = IncomingAvatar(expected, exchange)
    incoming.offer(AvatarOffer(expected.size, expected.sha256))
    complete = False
    for message in chunk_messages(data):
        complete = incoming.chunk(parse_message(message))
    assert complete
    return incoming.verified_bytes()


def test_a_shared_avatar_arrives_verified_and_loads(bundle, vcam_home):
    data = bundle.read_bytes()
    received = transfer(data, info_of(data), ExchangeSettings())
    avatar = load_received(received, info_of(data), keep=False)
    assert avatar.name == "astro" and avatar.config.image_size == 64
    assert local_copy(info_of(data)) is None  # kept for the call only
    load_received(received, info_of(data), keep=True)
    kept = local_copy(info_of(data))
    assert kept is not None and load_avatar(kept).name == "astro"


def test_a_received_avatar_is_kept_only_once_it_has_rendered_a_frame(bundle, tmp_path,
                                                                      vcam_home):
    def overflowing(tensors) -> None:  # finite weights whose frames are not
        for key, tensor in tensors.items():
            if key.startswith("generator.") and tensor.is_floating_point():
                tensors[key] = tensor * 1e30

    data = crafted(bundle, tmp_path / "astro.avatar.safetensors", tensors=overflowing
                   ).read_bytes()
    received = transfer(data, info_of(data), ExchangeSettings())
    assert load_received(received, info_of(data), keep=False).name == "astro"  # loads
    with pytest.raises(TransferRefused, match=r"not usable.*not finite"):
        load_received(received, info_of(data), keep=True)
    assert local_copy(info_of(data)) is None
    assert not (vcam_home / "avatars").exists() or not any((vcam_home / "avatars").iterdir())


def test_an_oversized_offer_is_refused_before_any_chunk(bundle):
    data = bundle.read_bytes()
    small = ExchangeSettings(max_bytes=len(data) - 1)
    with pytest.raises(TransferRefused, match="limit"):
        check_declared_size(info_of(data), small)
    incoming = IncomingAvatar(info_of(data), small)
    with pytest.raises(TransferRefused, match="limit"):
        incoming.offer(AvatarOffer(len(data), info_of(data).sha256))
    with pytest.raises(TransferRefused, match="without an offer"):
        incoming.chunk(Chunk(0, data[:100]))
    assert incoming.received == 0


def test_an_offer_other_than_the_announced_is_refused(bundle):
    data = bundle.read_bytes()
    incoming = IncomingAvatar(info_of(data), ExchangeSettings())
    with pytest.raises(TransferRefused, match="other than"):
        incoming.offer(AvatarOffer(len(data), "00" * 32))


def test_tampered_chunks_fail_the_checksum(bundle):
    data = bundle.read_bytes()
    tampered = bytearray(data)
    tampered[len(data) // 2] ^= 0xFF
    with pytest.raises(TransferRefused, match="SHA-256"):
        transfer(bytes(tampered), info_of(data), ExchangeSettings())


def test_chunks_out_of_order_or_beyond_the_size_are_refused(bundle):
    data = bundle.read_bytes()
    incoming = IncomingAvatar(info_of(data), ExchangeSettings())
    incoming.offer(AvatarOffer(len(data), info_of(data).sha256))
    with pytest.raises(TransferRefused, match="out of order"):
        incoming.chunk(Chunk(5, b"abc"))
    tiny = IncomingAvatar(info_of(b"abc"), ExchangeSettings())
    tiny.offer(AvatarOffer(3, info_of(b"abc").sha256))
    with pytest.raises(TransferRefused, match="more avatar data"):
        tiny.chunk(Chunk(0, b"abcd"))


def test_a_bundle_with_the_right_checksum_but_no_avatar_inside_is_refused(bundle):
    garbage = b"\x08\x00\x00\x00\x00\x00\x00\x00{}" + bytes(100)
    received = transfer(garbage, info_of(garbage), ExchangeSettings())
    with pytest.raises(TransferRefused, match="not valid"):
        load_received(received, info_of(garbage), keep=False)
    data = bundle.read_bytes()
    with pytest.raises(TransferRefused, match="differs"):
        load_received(data, info_of(data, name="someone-else"), keep=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    st.builds(AvatarOffer, st.integers(1, 5000), st.sampled_from([SHA, "00" * 32])),
    st.builds(Chunk, st.integers(0, 5000), st.binary(max_size=64))), max_size=20))
def test_incoming_avatar_only_ever_refuses(steps):
    incoming = IncomingAvatar(AvatarInfo("x", SHA, 100, 64), ExchangeSettings(max_bytes=1000))
    for step in steps:
        try:
            if isinstance(step, AvatarOffer):
                incoming.offer(step)
            elif incoming.chunk(step):
                incoming.verified_bytes()
        except TransferRefused:
            pass
    assert incoming.received <= 100


# -- the landmark receive path ---------------------------------------------------------------


@pytest.fixture(scope="module")
def basis():
    rng = np.random.default_rng(0)
    shapes = 32 + rng.normal(0, 3, (50, 68, 2)) + rng.uniform(0, 30, (1, 68, 2))
    return fit_shape_basis(shapes, 12, 64)


@pytest.fixture(scope="module")
def packets(basis):
    encoder = PackedEncoder(basis, 64, packing=PackingSettings(30.0, 3))
    rng = np.random.default_rng(1)
    face = rng.uniform(10, 54, (68, 2))
    packets = [packet for index in range(13)
               for packet in encoder.encode(face + rng.normal(0, 0.5, face.shape),
                                            40_000 * index)]
    return [*packets, encoder.flush()]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_the_landmark_inbox_never_raises_on_mutated_packets(basis, packets, data):
    wanted = []
    inbox = LandmarkInbox(basis, 64, JitterSettings(), lambda: wanted.append(1))
    for _ in range(data.draw(st.integers(1, 8))):
        packet = bytearray(data.draw(st.sampled_from(packets)))
        mutation = data.draw(st.sampled_from(["flip", "truncate", "extend", "random", "keep"]))
        if mutation == "flip" and packet:
            packet[data.draw(st.integers(0, len(packet) - 1))] ^= data.draw(st.integers(1, 255))
        elif mutation == "truncate":
            packet = packet[:data.draw(st.integers(0, len(packet)))]
        elif mutation == "extend":
            packet += data.draw(st.binary(max_size=40))
        elif mutation == "random":
            packet = bytearray(data.draw(st.binary(max_size=1300)))
        inbox.receive(bytes(packet))
    inbox.receive("a string")
    inbox.receive(None)
    assert inbox.errors == 0
    assert inbox.decoder.stats.received >= 1


def test_the_shipped_model_and_every_named_configuration_are_known():
    import dataclasses

    from vcam.models.config import get_config
    from vcam.net.avatar_exchange import is_known_config

    assert is_known_config(load_models(default_model_path()).config)
    for name in ("tiny", "cpu", "paper"):
        for generator, mouth_input in (("direct", "warp"), ("warp", "warp"), ("warp", "cavity")):
            config = dataclasses.replace(get_config(name), generator=generator,
                                         mouth_input=mouth_input)
            assert is_known_config(config)
            assert not is_known_config(dataclasses.replace(config, embedding_size=300))
