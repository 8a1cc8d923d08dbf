"""How a call went: the counts of both directions and the report printed at its end."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SendCounts:
    packets: int = 0
    bytes: int = 0
    key_requests: int = 0


@dataclass(frozen=True)
class CallReport:
    """How a call went. ``seconds``: from the moment both sides were ready; ``sent`` and
    ``received``: the landmarks channel (payload bytes); ``playout``: frame slots and what
    the renderer did with them; ``control``: bad control messages by reason; ``wire``:
    payload and on-the-wire kbit/s per stream and each way (``vcam.net.wire.wire_report``);
    ``audio``: the voice's frames, play-out delay and CPU time."""

    ended_by: str
    failed: bool
    seconds: float
    sent: dict
    received: dict
    playout: dict
    control: dict
    wire: dict = field(default_factory=dict)
    audio: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(vars(self))

    def lines(self) -> list[str]:
        sent, received, playout = self.sent, self.received, self.playout
        lines = [f"call ended after {self.seconds:.1f} s: {self.ended_by}"]
        if sent["packets_encoded"]:
            injected = (f" (injected: {sent['injected_drops']} dropped, "
                        f"{sent['injected_reorders']} reordered)"
                        if sent["injected_drops"] or sent["injected_reorders"] else "")
            lines.append(f"sent: {sent['packets']} packets, {sent['kbit_per_s']:.1f} kbit/s on "
                         f"the landmarks channel{injected}")
        if received:
            lines.append(
                f"received: {received['packets']} packets, {received['kbit_per_s']:.1f} "
                f"kbit/s, {received['decoded']} decoded, loss {received['loss']:.1%}, "
                f"{received['bad']} bad; concealed: {received['interpolated']} interpolated, "
                f"{received['held']} held, {received['late']} late; playout "
                f"{received.get('delay_ms', 0):.0f} ms behind the peer")
        if playout:
            lines.append(f"rendered {playout['rendered']} of {playout['slots']} frame slots "
                         f"({playout['rendered_fraction']:.1%}), {playout['skipped']} skipped, "
                         f"{playout['output']} sent to the sinks"
                         + (f", {playout['rejected']} unusable landmark sets dropped"
                            if playout.get("rejected") else ""))
        lines.extend(wire_lines(self.wire))
        lines.extend(audio_lines(self.audio))
        if self.control.get("bad"):
            lines.append(f"bad control messages: {self.control['bad']}")
        return lines


def kbit_per_second(byte_count: int, seconds: float) -> float:
    return byte_count * 8 / 1000 / seconds if seconds > 0 else 0.0


def loss_fraction(received: int, expected: int) -> float:
    return max(0.0, 1 - received / expected) if expected > 0 else 0.0


def wire_lines(wire: dict) -> list[str]:
    """Per stream, each way: payload kbit/s and what it takes on the wire."""
    lines = []
    for stream in ("landmarks", "voice"):
        rates = wire.get(stream)
        if rates and (rates["sent_kbit_per_s"] or rates["received_kbit_per_s"]):
            lines.append(f"{stream}: sent {rates['sent_kbit_per_s']:.1f} kbit/s "
                         f"({rates['sent_wire_kbit_per_s']:.1f} on the wire), received "
                         f"{rates['received_kbit_per_s']:.1f} kbit/s "
                         f"({rates['received_wire_kbit_per_s']:.1f} on the wire)")
    transport = wire.get("transport")
    if transport:
        lines.append(f"whole call on the wire (transport statistics, with acknowledgements and "
                     f"control): sent {transport['sent_wire_kbit_per_s']:.1f} kbit/s, "
                     f"received {transport['received_wire_kbit_per_s']:.1f} kbit/s")
    return lines


def audio_lines(audio: dict) -> list[str]:
    lines = []
    if "sent" in audio:
        sent = audio["sent"]
        lines.append(f"voice sent: {sent['packets']} packets, CPU {sent['cpu_percent']:.1f}% "
                     "of a core" + (f", input failed: {sent['error']}" if sent["error"] else ""))
    if "received" in audio:
        received = audio["received"]
        lines.append(f"voice received: {received['seconds']:.1f} s, play-out delay "
                     f"{received['delay_ms']:.0f} ms, {received['late']} frames late, CPU "
                     f"{received['cpu_percent']:.1f}% of a core")
    return lines
