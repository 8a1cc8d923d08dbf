"""The signaling server: the token gate, body limits, one call at a time, the client's errors."""

import asyncio
import json
import logging
from types import SimpleNamespace

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vcam.errors import UserError
from vcam.net.connection import Answerer, IceSettings
from vcam.net.signaling import (
    CallBusy,
    SignalingServer,
    SignalingSettings,
    is_loopback,
    join_url,
    new_token,
    send_offer,
    token_matches,
    url_host,
)

LOOPBACK = SignalingSettings(host="127.0.0.1", port=0, timeout_s=10.0)


def data_channel_sdp(session: str) -> str:
    """A session description of the shape a vcam call sends (one data-channel section)."""
    return "\r\n".join([
        "v=0", f"o=- {session} {session} IN IP4 0.0.0.0", "s=-", "t=0 0",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "c=IN IP4 127.0.0.1",
        "a=mid:0", "a=sctp-port:5000", "a=ice-ufrag:abcd", "a=ice-pwd:" + "p" * 22,
        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32), "a=setup:actpass", ""])


OFFER, ANSWER = data_channel_sdp("1"), data_channel_sdp("2")


class CountingHandler:
    """Stands in for the peer-connection factory: counts the offers that reach it."""

    def __init__(self, busy: bool = False) -> None:
        self.offers: list[str] = []
        self.busy = busy

    async def __call__(self, sdp: str) -> str:
        if self.busy:
            raise CallBusy
        self.offers.append(sdp)
        return ANSWER


async def post(url: str, headers: dict, body: bytes) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session, \
            session.post(url, data=body, headers=headers) as response:
        text = await response.text()
        return response.status, json.loads(text) if response.content_type == "application/json" \
            else {"error": text}


def offer_body(sdp: str = OFFER) -> bytes:
    return json.dumps({"type": "offer", "sdp": sdp}).encode()


async def with_server(handler, job, settings: SignalingSettings = LOOPBACK):
    token = new_token()
    server = SignalingServer(settings, token, handler)
    url = await server.start()
    try:
        return await job(server, url, token)
    finally:
        await server.close()


def test_the_token_is_random_and_compared_exactly():
    first, second = new_token(), new_token()
    assert first != second and len(first) >= 32
    assert token_matches(first, first)
    assert not token_matches(second, first)
    assert not token_matches(None, first)
    assert not token_matches(first[:-1], first)
    assert not token_matches("é" * 10, first)


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"},
    {"Authorization": "Bearer"},
], ids=["missing", "wrong", "other-scheme", "empty"])
def test_a_missing_or_wrong_token_is_refused_before_any_peer_connection(headers):
    handler = CountingHandler()

    async def job(server, url, token):
        status, body = await post(url, headers, offer_body())
        return status, body, server.refused

    status, body, refused = asyncio.run(with_server(handler, job))
    assert status == 403 and "token" in body["error"]
    assert refused == 1 and handler.offers == []


def test_a_wrong_token_never_creates_an_rtc_peer_connection():
    answerer = Answerer(IceSettings(host_addresses=("127.0.0.1",)))

    async def job(server, url, token):
        status, _ = await post(url, {"Authorization": "Bearer nope"}, offer_body())
        return status

    assert asyncio.run(with_server(answerer, job)) == 403
    assert answerer.pc is None and not answerer.answered.is_set()


def test_the_right_token_gets_the_answer():
    handler = CountingHandler()

    async def job(server, url, token):
        return await send_offer(url, token, OFFER, LOOPBACK)

    assert asyncio.run(with_server(handler, job)) == ANSWER
    assert handler.offers == [OFFER]


@pytest.mark.parametrize("body", [b"{not json", b'{"type": "answer", "sdp": "x"}', b"[1]",
                                  b'{"type": "offer"}', b"[" * 5000 + b"]" * 5000],
                         ids=["garbage", "wrong-type", "array", "no-sdp", "deep"])
def test_malformed_offers_are_answered_400(body):
    handler = CountingHandler()

    async def job(server, url, token):
        return await post(url, {"Authorization": f"Bearer {token}"}, body)

    status, _ = asyncio.run(with_server(handler, job))
    assert status == 400 and handler.offers == []


def test_an_oversized_body_is_refused():
    handler = CountingHandler()
    small = SignalingSettings(port=0, max_body_bytes=2048)

    async def job(server, url, token):
        return await post(url, {"Authorization": f"Bearer {token}"},
                          offer_body("v" * 5000))

    status, _ = asyncio.run(with_server(handler, job, small))
    assert status == 413 and handler.offers == []


def test_client_errors_are_one_line_user_errors():
    async def wrong_token(server, url, token):
        return await send_offer(url, "not-the-token", OFFER, LOOPBACK)

    async def busy(server, url, token):
        return await send_offer(url, token, OFFER, LOOPBACK)

    with pytest.raises(UserError, match="refused the token"):
        asyncio.run(with_server(CountingHandler(), wrong_token))
    with pytest.raises(UserError, match="already has a peer"):
        asyncio.run(with_server(CountingHandler(busy=True), busy))
    with pytest.raises(UserError, match="cannot reach"):
        asyncio.run(send_offer("http://127.0.0.1:9/call", "t", OFFER,
                               SignalingSettings(timeout_s=3.0)))
    with pytest.raises(UserError, match="not a join URL"):
        url_host("ftp://example")


def test_urls_and_loopback_detection():
    assert join_url("127.0.0.1", 8765) == "http://127.0.0.1:8765/call"
    assert join_url("::1", 80) == "http://[::1]:80/call"
    assert url_host("http://[::1]:80/call") == "::1"
    assert all(is_loopback(host) for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"))
    assert not any(is_loopback(host) for host in ("0.0.0.0", "192.0.2.2", "example.org"))


# -- hostile input at the front door ---------------------------------------------------------


def test_tokens_never_look_like_an_option_and_the_join_command_survives_argparse(capsys):
    from vcam.cli import build_parser
    from vcam.net.call_runner import print_listening

    assert not any(new_token().startswith("-") for _ in range(3000))  # 1 in 64 did before
    print_listening("http://127.0.0.1:8765/call", "-starts-with-a-dash", as_json=False)
    command = next(line.split() for line in capsys.readouterr().out.splitlines()
                   if "vcam call join" in line)
    args = build_parser().parse_args([*command[1:-2], "--avatar", "me"])
    assert args.token == "-starts-with-a-dash"


@pytest.fixture(scope="module")
def real_offer() -> str:
    """An offer made by aiortc the way `vcam call join` makes it."""
    from aiortc import RTCPeerConnection

    async def offer() -> str:
        pc = RTCPeerConnection()
        pc.createDataChannel("landmarks", ordered=False, maxRetransmits=0)
        pc.createDataChannel("control")
        await pc.setLocalDescription(await pc.createOffer())
        await pc.close()
        return pc.localDescription.sdp

    return asyncio.run(offer())


def test_the_voice_section_beside_the_data_channels_is_a_call():
    from vcam.net.signaling import check_call_sections

    check_call_sections(OFFER + "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n")


def audio_only(sdp: str) -> str:
    return sdp.replace("m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
                       "m=audio 9 UDP/TLS/RTP/SAVPF 0")


@pytest.mark.parametrize("junk", [
    "v=0 offer", "v=0\r\ns=-\r\n", audio_only(OFFER), OFFER.replace("a=ice-pwd", "a=x"),
    OFFER + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n",
    OFFER + "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n" * 2,
], ids=["not-sdp", "no-media", "audio", "no-ice-password", "extra-video", "two-voices"])
def test_a_junk_offer_is_answered_400_and_leaves_the_call_free(junk):
    answerer = Answerer(IceSettings(host_addresses=("127.0.0.1",)))

    async def job(server, url, token):
        return await post(url, {"Authorization": f"Bearer {token}"}, offer_body(junk))

    status, body = asyncio.run(with_server(answerer, job))
    assert status == 400 and "bad offer" in body["error"]
    assert answerer.pc is None and not answerer.answered.is_set()


def test_a_freed_attempt_forgets_its_voice_track():
    from vcam.net.voice import AudioLink

    link = AudioLink(None)
    answerer = Answerer(IceSettings(host_addresses=("127.0.0.1",)), link)
    link.on_track(SimpleNamespace(kind="audio"))
    assert link.remote_track is not None
    asyncio.run(answerer.free())
    replacement = SimpleNamespace(kind="audio")
    link.on_track(replacement)  # the next, successful attempt's voice is the one played
    assert link.remote_track is replacement and answerer.abandoned == 1


def test_an_abandoned_offer_frees_the_call_for_the_real_peer(real_offer):
    from vcam.net.call import CallSettings
    from vcam.net.connection import join_connection, serve_connection

    ice = IceSettings(host_addresses=("127.0.0.1",))
    settings = CallSettings(connect_timeout_s=1.5)
    urls: asyncio.Queue = asyncio.Queue()

    async def scenario():
        stop = asyncio.Event()
        serving = asyncio.ensure_future(serve_connection(
            "token", LOOPBACK, ice, settings.connect_timeout_s, urls.put_nowait, stop,
            wait_s=30))
        url = await urls.get()
        # Someone holding the token answers nothing after its offer: the slot is busy a while,
        assert await send_offer(url, "token", real_offer, LOOPBACK)
        with pytest.raises(UserError, match="already has a peer"):
            await send_offer(url, "token", real_offer, LOOPBACK)
        # then free again for the real peer, who connects.
        await asyncio.sleep(settings.connect_timeout_s + 0.5)
        joined = await join_connection(url, "token", LOOPBACK, ice, settings.connect_timeout_s)
        served = await serving
        await joined.pc.close()
        if served is not None:
            await served.pc.close()
        return served

    served = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert served is not None and served.control.channel.label == "control"


def test_oversized_headers_and_aborted_bodies_are_one_counted_line(caplog):
    async def job(server, url, token):
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /call HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        status_line = await reader.readline()
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"POST /call HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                     "Content-Length: 5000\r\n\r\n{{{{".encode())
        await writer.drain()
        writer.close()
        for _ in range(100):
            if server.errors.count >= 2:
                break
            await asyncio.sleep(0.05)
        return status_line, server.errors.count

    with caplog.at_level(logging.DEBUG):
        status_line, errors = asyncio.run(with_server(CountingHandler(), job))
    assert status_line.startswith(b"HTTP/1.") and b" 400 " in status_line
    assert errors == 2
    assert not any(record.exc_info for record in caplog.records)
    lines = [record.getMessage() for record in caplog.records if record.levelno >= 30]
    assert len(lines) == 2 and all("\n" not in line and "refused" in line for line in lines)


def json_documents():
    values = st.none() | st.booleans() | st.integers() | st.text(max_size=30)
    return st.one_of(
        st.dictionaries(st.sampled_from(["type", "sdp", "x"]), values, max_size=3),
        st.fixed_dictionaries({"type": st.just("offer"), "sdp": st.text(max_size=200)}),
        st.lists(values, max_size=3), values)


def sdp_mutations(sdp: str):
    lines = sdp.split("\r\n")
    return st.one_of(
        st.lists(st.sampled_from(lines), max_size=len(lines)).map("\r\n".join),
        st.tuples(st.integers(0, len(sdp)), st.text(max_size=20)).map(
            lambda cut: sdp[:cut[0]] + cut[1] + sdp[cut[0]:]),
        st.integers(0, len(sdp)).map(lambda cut: sdp[:cut]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_the_offer_endpoint_answers_any_json_and_sdp_with_a_status(real_offer, data):
    answerer = Answerer(IceSettings(host_addresses=("127.0.0.1",)))
    if data.draw(st.booleans()):
        body = json.dumps(data.draw(json_documents())).encode()
    else:
        body = offer_body(data.draw(sdp_mutations(real_offer)))

    async def job(server, url, token):
        status, _ = await post(url, {"Authorization": f"Bearer {token}"}, body)
        if answerer.pc is not None:
            await answerer.pc.close()
        return status, server.errors.count

    status, errors = asyncio.run(with_server(answerer, job))
    assert status in (200, 400) and errors == 0
    assert status == 200 or answerer.pc is None
