"""How a call went: the counts of both directions and the report printed at its end."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SendCounts:
    packets: int = 0
    bytes: int = 0
    key_requests: int = 0


@dataclass(frozen=True)
class CallReport:
    """How a call went. ``seconds``: from the moment both sides were ready; ``sent`` and
    ``received``: the landmarks channel (payload bytes); ``playout``: frame slots and what
    the renderer did with them; ``control``: bad control messages by reason."""

    ended_by: str
    failed: bool
    seconds: float
    sent: dict
    received: dict
    playout: dict
    control: dict

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
                f"{received['held']} held, {received['late']} late")
        if playout:
            lines.append(f"rendered {playout['rendered']} of {playout['slots']} frame slots "
                         f"({playout['rendered_fraction']:.1%}), {playout['skipped']} skipped, "
                         f"{playout['output']} sent to the sinks"
                         + (f", {playout['rejected']} unusable landmark sets dropped"
                            if playout.get("rejected") else ""))
        if self.control.get("bad"):
            lines.append(f"bad control messages: {self.control['bad']}")
        return lines


def kbit_per_second(byte_count: int, seconds: float) -> float:
    return byte_count * 8 / 1000 / seconds if seconds > 0 else 0.0


def loss_fraction(received: int, expected: int) -> float:
    return max(0.0, 1 - received / expected) if expected > 0 else 0.0
