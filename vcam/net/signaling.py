"""Signaling for a call: a small aiohttp server that trades one SDP offer for an answer.

The serving side runs ``SignalingServer`` on loopback unless told otherwise and prints a join
URL and a token (``secrets.token_urlsafe``). The joining side POSTs its offer to the URL as
JSON (``{"type": "offer", "sdp": ...}``) with ``Authorization: Bearer TOKEN`` and gets
``{"type": "answer", "sdp": ...}`` back. The token is checked first, in constant time
(``hmac.compare_digest``): a missing or wrong one is answered 403 before the body is read
and before any peer connection exists. Bodies are capped (``max_body_bytes``); one call at a
time (409 while busy). The client side is ``send_offer``; its failures are one-line
``UserError``s.

The token travels in clear over plain HTTP: fine on loopback, and on a trusted network only.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import ClientError, ClientSession, ClientTimeout, web

from vcam.errors import UserError
from vcam.net.defaults import DEFAULT_PORT

DEFAULT_PATH = "/call"
TOKEN_BYTES = 24
MAX_SDP_CHARS = 32 * 1024
OfferHandler = Callable[[str], Awaitable[str]]


@dataclass(frozen=True)
class SignalingSettings:
    """Where to listen (``port`` 0 picks a free one), the join path, the largest request or
    answer body accepted, and how long a client waits for the answer."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    path: str = DEFAULT_PATH
    max_body_bytes: int = 64 * 1024
    timeout_s: float = 20.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be in 0..65535")
        if not self.path.startswith("/") or self.max_body_bytes < 1024 or self.timeout_s <= 0:
            raise ValueError("path must start with '/', max_body_bytes be at least 1024 and "
                             "timeout_s positive")


class CallBusy(Exception):
    """The server already has a call (answered 409)."""


class OfferRefused(Exception):
    """The offer could not be answered (answered 400 with the message)."""


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented token with the expected one."""
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode("utf-8", "replace"), expected.encode("utf-8"))


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def is_loopback(host: str) -> bool:
    """Whether a host name or address is the local machine's loopback."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def join_url(host: str, port: int, path: str = DEFAULT_PATH) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}{path}"


def url_host(url: str) -> str:
    """The host of a join URL; a one-line error for anything that is not one."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"{url!r} is not a join URL (expected http://HOST:PORT/call)")
    return parts.hostname


def session_description(document: object, kind: str) -> str:
    """The SDP of ``{"type": kind, "sdp": ...}``; ``OfferRefused`` otherwise."""
    if not isinstance(document, dict) or document.get("type") != kind:
        raise OfferRefused(f"expected a JSON object with type {kind!r}")
    sdp = document.get("sdp")
    if not isinstance(sdp, str) or not 0 < len(sdp) <= MAX_SDP_CHARS:
        raise OfferRefused("missing or oversized sdp")
    return sdp


class SignalingServer:
    """Answers offers that carry the token; ``refused`` counts the ones that did not."""

    def __init__(self, settings: SignalingSettings, token: str, on_offer: OfferHandler) -> None:
        self.settings = settings
        self.token = token
        self.on_offer = on_offer
        self.refused = 0
        self.answered = 0
        self.runner: web.AppRunner | None = None

    async def start(self) -> str:
        """Listen; returns the join URL (with the port actually bound)."""
        app = web.Application(client_max_size=self.settings.max_body_bytes)
        app.router.add_post(self.settings.path, self.handle_offer)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.settings.host, self.settings.port)
        try:
            await site.start()
        except OSError as error:
            await self.close()
            raise UserError(f"cannot listen on {self.settings.host}:{self.settings.port}: "
                            f"{error.strerror or error}") from None
        port = self.runner.addresses[0][1]
        return join_url(self.settings.host, port, self.settings.path)

    async def close(self) -> None:
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()

    async def handle_offer(self, request: web.Request) -> web.Response:
        if not token_matches(bearer_token(request), self.token):
            self.refused += 1
            return web.json_response({"error": "missing or wrong token"}, status=403)
        try:
            sdp = session_description(json.loads(await request.read()), "offer")
            answer = await self.on_offer(sdp)
        except web.HTTPException:
            raise
        except (ValueError, RecursionError, OfferRefused) as error:
            return web.json_response({"error": f"bad offer: {error}"[:200]}, status=400)
        except CallBusy:
            return web.json_response({"error": "already in a call"}, status=409)
        self.answered += 1
        return web.json_response({"type": "answer", "sdp": answer})


async def send_offer(url: str, token: str, sdp: str, settings: SignalingSettings) -> str:
    """POST the offer to the join URL; the answer's SDP, or a one-line ``UserError``."""
    url_host(url)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with ClientSession(timeout=ClientTimeout(total=settings.timeout_s)) as session, \
                session.post(url, json={"type": "offer", "sdp": sdp},
                             headers=headers) as response:
            check_status(response.status, url)
            body = await response.content.read(settings.max_body_bytes + 1)
    except (ClientError, asyncio.TimeoutError) as error:
        raise UserError(f"cannot reach the call at {url}: {error or type(error).__name__}"
                        ) from None
    if len(body) > settings.max_body_bytes:
        raise UserError("the call server's answer is too large")
    try:
        return session_description(json.loads(body), "answer")
    except (ValueError, RecursionError, OfferRefused) as error:
        raise UserError(f"the call server sent a malformed answer ({error})") from None


def check_status(status: int, url: str) -> None:
    if status == 403:
        raise UserError("the call refused the token: check --token (it is printed by "
                        "`vcam call serve`)")
    if status == 409:
        raise UserError(f"the call at {url} already has a peer")
    if status != 200:
        raise UserError(f"the call at {url} answered HTTP {status}")
