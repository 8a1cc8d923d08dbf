"""Signaling for a call: a small aiohttp server that trades one SDP offer for an answer.

The serving side runs ``SignalingServer`` on loopback unless told otherwise and prints a join
URL and a token (``secrets.token_urlsafe``, never starting with '-'). The joining side POSTs
its offer to the URL as JSON (``{"type": "offer", "sdp": ...}``) with ``Authorization: Bearer
TOKEN`` and gets ``{"type": "answer", "sdp": ...}`` back. The token is checked first, in
constant time (``hmac.compare_digest``): a missing or wrong one is answered 403 before the
body is read and before any peer connection exists. Bodies are capped (``max_body_bytes``);
an offer that is not a data-channel-only session description is answered 400; one call at a
time (409 while busy). The client side is ``send_offer``; its failures are one-line
``UserError``s.

The token travels in clear over plain HTTP: fine on loopback, and on a trusted network only.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import secrets
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import ClientError, ClientSession, ClientTimeout, web

from vcam.errors import UserError
from vcam.net.defaults import DEFAULT_PORT

DEFAULT_PATH = "/call"
TOKEN_BYTES = 24
MAX_SDP_CHARS = 32 * 1024
SDP_REQUIRED_ATTRIBUTES = ("a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:")
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
    """A fresh random token that cannot be taken for an option (never starts with '-')."""
    while (token := secrets.token_urlsafe(TOKEN_BYTES)).startswith("-"):
        pass
    return token


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
    check_call_sections(sdp)
    return sdp


def check_call_sections(sdp: str) -> None:
    """A call's SDP has exactly one data-channel section (SCTP over DTLS) and at most one
    audio section (the voice, RTP over DTLS-SRTP), with ICE credentials and a DTLS
    fingerprint; ``OfferRefused`` for anything else (video, several audio sections, no data
    channels, or text that is not SDP)."""
    lines = sdp.splitlines()
    media = [line.split() for line in lines if line.startswith("m=")]
    channels = [fields for fields in media if len(fields) == 4 and fields[0] == "m=application"
                and fields[2:] == ["UDP/DTLS/SCTP", "webrtc-datachannel"]]
    voices = [fields for fields in media if fields[0] == "m=audio"
              and len(fields) >= 4 and fields[2] == "UDP/TLS/RTP/SAVPF"]
    if not lines or lines[0] != "v=0" or len(channels) != 1 or len(voices) > 1 \
            or len(media) != len(channels) + len(voices):
        raise OfferRefused("the session description is not a vcam call's (exactly one "
                           "data-channel section, at most one audio section, no video)")
    for attribute in SDP_REQUIRED_ATTRIBUTES:
        if not any(line.startswith(attribute) for line in lines):
            raise OfferRefused(f"the session description lacks {attribute.rstrip(':')}")


class RequestErrorLog(logging.LoggerAdapter):
    """The HTTP server's log: a malformed request (oversized header, bad HTTP) or a body
    the client aborted is one counted line, never a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.getLogger("vcam.net.signaling"), {})
        self.count = 0

    def log(self, level: int, msg: object, *args: object, exc_info: object = None,
            **kwargs: object) -> None:
        if not exc_info and level < logging.WARNING:
            return
        error = (exc_info if isinstance(exc_info, BaseException) else
                 exc_info[1] if isinstance(exc_info, tuple) else
                 sys.exc_info()[1] if exc_info else None)
        detail = " ".join(str(error if error is not None else msg).split())
        self.refused(f"{type(error).__name__}: {detail}"[:120] if error is not None
                     else detail[:120])

    def refused(self, reason: str) -> None:
        self.count += 1
        self.logger.warning("vcam call: refused a malformed request (%s)", reason)


class SignalingServer:
    """Answers offers that carry the token; ``refused`` counts the ones that did not,
    ``errors`` the malformed or aborted requests."""

    def __init__(self, settings: SignalingSettings, token: str, on_offer: OfferHandler) -> None:
        self.settings = settings
        self.token = token
        self.on_offer = on_offer
        self.refused = 0
        self.answered = 0
        self.errors = RequestErrorLog()
        self.runner: web.AppRunner | None = None

    async def start(self) -> str:
        """Listen; returns the join URL (with the port actually bound)."""
        app = web.Application(client_max_size=self.settings.max_body_bytes)
        app.router.add_post(self.settings.path, self.handle_offer)
        self.runner = web.AppRunner(app, access_log=None, logger=self.errors)
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
            body = await request.read()
        except ConnectionError:  # the client went away mid-body
            self.errors.refused("the body was cut short")
            return web.json_response({"error": "incomplete body"}, status=400)
        try:
            sdp = session_description(json.loads(body), "offer")
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
