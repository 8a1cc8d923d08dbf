"""The fault injector the call tests and `vcam call --inject-drop/--inject-reorder` use to lose and
reorder landmark packets on purpose."""

import itertools

from vcam.net.send import FaultInjector, FaultSettings


def test_fault_injector_drops_and_reorders_as_asked_and_loses_nothing_else():
    injector = FaultInjector(FaultSettings(drop=0.1, reorder=0.1, seed=3))
    sent = [bytes([index % 256, index // 256]) for index in range(5000)]
    out = [packet for data in sent for packet in injector.process(data)] + injector.flush()
    assert 400 < injector.dropped < 600 and 350 < injector.reordered < 550
    assert len(out) == len(sent) - injector.dropped and len(set(out)) == len(out)
    order = [sent.index(packet) for packet in out]
    swaps = sum(later < earlier for earlier, later in itertools.pairwise(order))
    assert swaps == injector.reordered
    again = FaultInjector(FaultSettings(drop=0.1, reorder=0.1, seed=3))
    assert [packet for data in sent for packet in again.process(data)] + again.flush() == out
    clean = FaultInjector(FaultSettings())
    assert [packet for data in sent[:50] for packet in clean.process(data)] == sent[:50]
