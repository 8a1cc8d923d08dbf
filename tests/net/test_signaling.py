"""The signaling server: the token gate, body limits, one call at a time, the client's errors."""

import asyncio
import json

import aiohttp
import pytest

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


class CountingHandler:
    """Stands in for the peer-connection factory: counts the offers that reach it."""

    def __init__(self, busy: bool = False) -> None:
        self.offers: list[str] = []
        self.busy = busy

    async def __call__(self, sdp: str) -> str:
        if self.busy:
            raise CallBusy
        self.offers.append(sdp)
        return "v=0 answer"


async def post(url: str, headers: dict, body: bytes) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session, \
            session.post(url, data=body, headers=headers) as response:
        text = await response.text()
        return response.status, json.loads(text) if response.content_type == "application/json" \
            else {"error": text}


def offer_body(sdp: str = "v=0 offer") -> bytes:
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
        return await send_offer(url, token, "v=0 offer", LOOPBACK)

    assert asyncio.run(with_server(handler, job)) == "v=0 answer"
    assert handler.offers == ["v=0 offer"]


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
        return await send_offer(url, "not-the-token", "v=0", LOOPBACK)

    async def busy(server, url, token):
        return await send_offer(url, token, "v=0", LOOPBACK)

    with pytest.raises(UserError, match="refused the token"):
        asyncio.run(with_server(CountingHandler(), wrong_token))
    with pytest.raises(UserError, match="already has a peer"):
        asyncio.run(with_server(CountingHandler(busy=True), busy))
    with pytest.raises(UserError, match="cannot reach"):
        asyncio.run(send_offer("http://127.0.0.1:9/call", "t", "v=0",
                               SignalingSettings(timeout_s=3.0)))
    with pytest.raises(UserError, match="not a join URL"):
        url_host("ftp://example")


def test_urls_and_loopback_detection():
    assert join_url("127.0.0.1", 8765) == "http://127.0.0.1:8765/call"
    assert join_url("::1", 80) == "http://[::1]:80/call"
    assert url_host("http://[::1]:80/call") == "::1"
    assert all(is_loopback(host) for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"))
    assert not any(is_loopback(host) for host in ("0.0.0.0", "192.0.2.2", "example.org"))
