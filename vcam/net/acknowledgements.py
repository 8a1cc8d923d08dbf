"""Fewer SCTP acknowledgements on a call's peer connection: delayed and bundled SACKs.

aiortc (1.16) acknowledges every SCTP packet that carries data at once, with a SACK in a
packet of its own: 93 B on the wire (SCTP 12 + SACK chunk 16 + DTLS record 37 + UDP/IPv4
28), as much header as a landmark packet, so the peer's landmarks cost as many bytes again
coming back. SCTP does not ask for that (RFC 4960):

- 6.2: a receiver may delay its SACK, acknowledging at least every second packet with
  data and within 200 ms of the first unacknowledged one, but at once when it sees a gap
  (a lost or reordered packet) or a duplicate, so loss is still reported without delay;
- 6.10: chunks may share a packet: a pending SACK rides in the next packet of data this
  side sends, 16 B instead of a 93 B packet. In a call both sides send landmarks at the
  same rate, so most SACKs go this way.

What it costs: nothing on delivery (data reach the application on arrival, whatever the
acknowledgements do); the sender frees its buffers and measures its round trips up to
200 ms later, which aiortc's retransmission timer (at least 1 s) does not notice. Loss
recovery of the control channel is unchanged (a gap is acknowledged at once).

This reaches into aiortc's private API (``RTCSctpTransport._send_sack``, ``_send_chunk``
and the receive state behind them), so ``reduce_acknowledgements`` installs it only on an
aiortc version it was checked against, and only where those attributes are present;
anywhere else the association keeps aiortc's own behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import Counter
from importlib.metadata import PackageNotFoundError, version
from typing import Any

CHECKED_AIORTC = ("1.16.",)
# RFC 4960 6.2: acknowledge within 200 ms, and at least every second packet.
SACK_DELAY_S = 0.2
SACK_EVERY_PACKETS = 2
# A SACK rides along only with data chunks this small, so the packet stays far below the
# path MTU (aiortc fills packets to 1200 B of user data).
BUNDLE_MAX_USER_DATA = 1000
SCTP_COMMON_HEADER = struct.Struct("!HHL")
SCTP_CHECKSUM = struct.Struct("<L")
NEEDED_ATTRIBUTES = ("_send_sack", "_send_chunk", "_sack_misordered", "_sack_duplicates",
                     "_sack_needed", "_last_received_tsn", "_local_port", "_remote_port",
                     "_remote_verification_tag", "_association_state", "transport")


def supported(sctp: Any) -> bool:
    """Whether ``sctp`` is an aiortc association this module was checked against."""
    try:
        installed = version("aiortc")
    except PackageNotFoundError:
        return False
    return (installed.startswith(CHECKED_AIORTC)
            and all(hasattr(sctp, name) for name in NEEDED_ATTRIBUTES))


def reduce_acknowledgements(pc: Any) -> DelayedAcknowledgements | None:
    """Delay and bundle the SACKs of ``pc``'s SCTP association (None where unsupported)."""
    sctp = getattr(pc, "sctp", None)
    if sctp is None or not supported(sctp):
        return None
    return DelayedAcknowledgements(sctp)


class DelayedAcknowledgements:
    """Replaces the association's ``_send_sack`` and ``_send_chunk`` with delaying and
    bundling ones. ``counts``: SACKs sent ``at_once`` (a gap, a duplicate or a second
    packet), ``bundled`` with data and ``after_delay``."""

    def __init__(self, sctp: Any) -> None:
        from aiortc.rtcsctptransport import DataChunk, SackChunk

        self.sctp = sctp
        self.data_chunk, self.sack_chunk = DataChunk, SackChunk
        self.send_sack_now = sctp._send_sack
        self.send_chunk_alone = sctp._send_chunk
        self.unacknowledged = 0
        self.last_tsn = sctp._last_received_tsn
        self.timer: asyncio.TimerHandle | None = None
        self.captured: list[Any] | None = None
        self.delayed: asyncio.Future | None = None
        self.counts: Counter[str] = Counter()
        sctp._send_sack = self.sack_wanted
        sctp._send_chunk = self.send_chunk

    async def sack_wanted(self) -> None:
        """Called by aiortc after each packet that needs acknowledging."""
        sctp = self.sctp
        if sctp._last_received_tsn != self.last_tsn or sctp._sack_misordered:
            self.unacknowledged += 1
            self.last_tsn = sctp._last_received_tsn
        if (sctp._sack_misordered or sctp._sack_duplicates
                or self.unacknowledged >= SACK_EVERY_PACKETS):
            self.counts["at_once"] += 1
            await self.acknowledge()
        elif self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(SACK_DELAY_S, self.expire)

    def expire(self) -> None:
        self.timer = None
        if self.sctp._sack_needed:
            self.counts["after_delay"] += 1
            self.delayed = asyncio.ensure_future(self.acknowledge())

    async def acknowledge(self) -> None:
        self.cancel_timer()
        self.unacknowledged = 0
        with contextlib.suppress(ConnectionError):  # the association went away meanwhile
            await self.send_sack_now()

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    async def send_chunk(self, chunk: Any) -> None:
        """aiortc's sending of one chunk, with a pending SACK put in front of small data."""
        if self.captured is not None and isinstance(chunk, self.sack_chunk):
            self.captured.append(chunk)
            return
        if (isinstance(chunk, self.data_chunk) and self.sctp._sack_needed
                and len(chunk.user_data) <= BUNDLE_MAX_USER_DATA):
            sack = await self.pending_sack()
            if sack is not None:
                self.counts["bundled"] += 1
                await self.sctp.transport._send_data(self.packet(sack, chunk))
                return
        await self.send_chunk_alone(chunk)

    async def pending_sack(self) -> Any:
        """The SACK aiortc would send now, built by aiortc (and its state updated) but
        kept here instead of sent."""
        self.cancel_timer()
        self.unacknowledged = 0
        self.captured = []
        try:
            await self.send_sack_now()
        finally:
            captured, self.captured = self.captured, None
        return captured[0] if captured else None

    def packet(self, *chunks: Any) -> bytes:
        """One SCTP packet of several chunks (RFC 4960 3, 6.10: control chunks first)."""
        from aiortc.rtcsctptransport import crc32c

        sctp = self.sctp
        header = SCTP_COMMON_HEADER.pack(sctp._local_port, sctp._remote_port,
                                         sctp._remote_verification_tag)
        body = b"".join(bytes(chunk) for chunk in chunks)
        checksum = crc32c(header + b"\x00" * SCTP_CHECKSUM.size + body)
        return header + SCTP_CHECKSUM.pack(checksum) + body
