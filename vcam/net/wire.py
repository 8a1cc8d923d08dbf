"""What a call costs on the wire, from the transport's own statistics.

Everything of a call (both data channels and the voice) shares one DTLS transport (BUNDLE),
whose statistics in aiortc count the UDP payloads it sent and received: DTLS records (SCTP
packets inside: landmarks, control messages and their acknowledgements) and SRTP/SRTCP
packets. Adding the UDP and IP headers of each datagram gives the bytes on the wire.

Per-packet overheads, as measured here on loopback (aiortc 1.16, DTLS 1.2 with
ECDHE-ECDSA-AES128-GCM-SHA256, SRTP AES_CM_128_HMAC_SHA1_80) and as the standards size them:

- data channel message: SCTP common header 12 B + DATA chunk header 16 B (RFC 4960 3.1,
  3.3.1; the user data padded to 4 B) + DTLS 1.2 record 37 B (header 13 B, RFC 6347 4.1; AES-
  GCM explicit nonce 8 B and tag 16 B, RFC 5288 3) = 65 B over the payload in the transport's
  count, 93 B with UDP (8 B) and IPv4 (20 B); aiortc acknowledges every received DATA
  packet at once with a SACK packet of the same 93 B; with ``vcam.net.acknowledgements``
  most SACKs are a 16 B chunk in the next data packet the other way;
- voice packet: RTP header 12 B (RFC 3550 5.1) + header extensions 12 B (RFC 8285 one-byte
  form: 4 B, abs-send-time 4 B, the mid 2 B, padded) + SRTP authentication tag 10 B (RFC 3711
  4.2, HMAC-SHA1-80) = 34 B, 62 B with UDP and IPv4.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

UDP_IPV4_BYTES = 8 + 20
UDP_IPV6_BYTES = 8 + 40
SCTP_COMMON_HEADER = 12
SCTP_DATA_CHUNK_HEADER = 16
DTLS12_AES_GCM_RECORD = 13 + 8 + 16
DATA_CHANNEL_BYTES = SCTP_COMMON_HEADER + SCTP_DATA_CHUNK_HEADER + DTLS12_AES_GCM_RECORD
SACK_CHUNK = 16  # RFC 4960 3.3.4, without gap or duplicate reports
SACK_BYTES = SCTP_COMMON_HEADER + SACK_CHUNK + DTLS12_AES_GCM_RECORD
RTP_HEADER = 12
RTP_EXTENSIONS = 12
SRTP_TAG = 10
VOICE_PACKET_BYTES = RTP_HEADER + RTP_EXTENSIONS + SRTP_TAG
# H.264 over RTP: the same RTP and SRTP bytes (a video call sends one extension more, the
# transport-wide sequence number, 4 B), with FU-A fragmentation headers (2 B) in packets of
# at most VIDEO_RTP_PAYLOAD bytes.
VIDEO_RTP_PAYLOAD = 1200
VIDEO_PACKET_BYTES = RTP_HEADER + RTP_EXTENSIONS + 4 + SRTP_TAG + 2


def padded(size: int) -> int:
    """An SCTP chunk's user data, padded to a multiple of 4 bytes."""
    return (size + 3) // 4 * 4


def data_channel_wire_bytes(payload: int, packets: int, header: int = UDP_IPV4_BYTES) -> int:
    """On the wire, for ``packets`` data channel messages of ``payload`` bytes in all (the
    padding taken at its mean, 1.5 B)."""
    return round(payload + packets * (DATA_CHANNEL_BYTES + header + 1.5))


def voice_wire_bytes(payload: int, packets: int, header: int = UDP_IPV4_BYTES) -> int:
    return payload + packets * (VOICE_PACKET_BYTES + header)


def video_rtp_wire_bytes(frame_bytes: int, header: int = UDP_IPV4_BYTES) -> int:
    """One encoded video frame of ``frame_bytes`` sent as H.264 over SRTP."""
    packets = max(1, -(-frame_bytes // VIDEO_RTP_PAYLOAD))
    return frame_bytes + packets * (VIDEO_PACKET_BYTES + header)


@dataclass(frozen=True)
class WireCounts:
    """The transport's counts (UDP payload bytes and datagrams, each way) and the voice's
    (RTP payload bytes and packets sent; received packets, and the peer's payload bytes as
    its last sender report said)."""

    transport_sent: int = 0
    transport_sent_packets: int = 0
    transport_received: int = 0
    transport_received_packets: int = 0
    voice_sent: int = 0
    voice_sent_packets: int = 0
    voice_received: int = 0
    voice_received_packets: int = 0

    def __sub__(self, other: WireCounts) -> WireCounts:
        return WireCounts(*(getattr(self, name) - getattr(other, name)
                            for name in self.__dataclass_fields__))

    def wire_sent(self, header: int = UDP_IPV4_BYTES) -> int:
        return self.transport_sent + self.transport_sent_packets * header

    def wire_received(self, header: int = UDP_IPV4_BYTES) -> int:
        return self.transport_received + self.transport_received_packets * header


async def wire_counts(pc: Any) -> WireCounts:
    """The counts of ``pc`` now (zeros where aiortc has none yet)."""
    fields: dict[str, int] = {}
    transports = []
    try:
        report = await pc.getStats()
    except Exception:
        report = {}
    for stats in report.values():
        kind = getattr(stats, "type", "")
        if kind == "transport":
            transports.append(stats)
        elif kind == "outbound-rtp":
            fields["voice_sent"] = fields.get("voice_sent", 0) + stats.bytesSent
            fields["voice_sent_packets"] = (fields.get("voice_sent_packets", 0)
                                            + stats.packetsSent)
        elif kind == "inbound-rtp":
            fields["voice_received_packets"] = (fields.get("voice_received_packets", 0)
                                                + stats.packetsReceived)
        elif kind == "remote-outbound-rtp":
            fields["voice_received"] = fields.get("voice_received", 0) + stats.bytesSent
    transport = transports[0] if transports else sctp_transport_stats(pc)
    if transport is not None:
        fields.update(transport_sent=transport.bytesSent,
                      transport_sent_packets=transport.packetsSent,
                      transport_received=transport.bytesReceived,
                      transport_received_packets=transport.packetsReceived)
    return WireCounts(**fields)


def sctp_transport_stats(pc: Any) -> Any:
    """The DTLS transport's statistics when no media track reports them (data channels only:
    aiortc's getStats asks the senders and receivers alone)."""
    sctp = getattr(pc, "sctp", None)
    if sctp is None:
        return None
    try:
        stats = sctp.transport._get_stats()
    except Exception:
        return None
    return next((item for item in stats.values() if item.type == "transport"), None)


def kbit(byte_count: float, seconds: float) -> float:
    return byte_count * 8 / 1000 / seconds if seconds > 0 else 0.0


def wire_report(counts: WireCounts, seconds: float, landmarks_sent: tuple[int, int],
                landmarks_received: tuple[int, int]) -> dict:
    """Payload and wire kbit/s each way: the voice (RTP payload; on the wire with its RTP,
    SRTP, UDP and IP headers), the landmarks (codec packets; with SCTP, DTLS, UDP and IP),
    and the whole transport as counted (everything: both streams, control messages, SCTP
    acknowledgements, RTCP). ``landmarks_*``: (payload bytes, packets)."""
    voice_sent_wire = voice_wire_bytes(counts.voice_sent, counts.voice_sent_packets)
    voice_received_wire = voice_wire_bytes(counts.voice_received,
                                           counts.voice_received_packets)
    return {
        "voice": {
            "sent_kbit_per_s": kbit(counts.voice_sent, seconds),
            "sent_wire_kbit_per_s": kbit(voice_sent_wire, seconds),
            "received_kbit_per_s": kbit(counts.voice_received, seconds),
            "received_wire_kbit_per_s": kbit(voice_received_wire, seconds)},
        "landmarks": {
            "sent_kbit_per_s": kbit(landmarks_sent[0], seconds),
            "sent_wire_kbit_per_s": kbit(data_channel_wire_bytes(*landmarks_sent), seconds),
            "received_kbit_per_s": kbit(landmarks_received[0], seconds),
            "received_wire_kbit_per_s": kbit(data_channel_wire_bytes(*landmarks_received),
                                             seconds)},
        "transport": {
            "sent_wire_kbit_per_s": kbit(counts.wire_sent(), seconds),
            "received_wire_kbit_per_s": kbit(counts.wire_received(), seconds),
            "sent_datagrams": counts.transport_sent_packets,
            "received_datagrams": counts.transport_received_packets},
    }
