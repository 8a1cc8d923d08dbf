"""Delayed and bundled SCTP acknowledgements, between two real aiortc peers on loopback."""

from __future__ import annotations

import asyncio

from vcam.net.acknowledgements import SACK_DELAY_S, reduce_acknowledgements
from vcam.net.wire import DATA_CHANNEL_BYTES, SACK_CHUNK, sctp_transport_stats

MESSAGES = 12
PAYLOAD = 100


async def connected_pair():
    from aiortc import RTCConfiguration, RTCPeerConnection

    offerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    answerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    ours = offerer.createDataChannel("landmarks", ordered=False, maxRetransmits=0)
    theirs: asyncio.Future = asyncio.get_running_loop().create_future()
    answerer.on("datachannel", theirs.set_result)
    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)
    channel = await asyncio.wait_for(theirs, 20)
    while ours.readyState != "open":
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)
    return offerer, answerer, ours, channel


async def exchange(reduce: bool, both_ways: bool) -> dict:
    """``MESSAGES`` messages one way (and the other, half an interval later) every 100 ms;
    the datagrams and bytes each side's transport sent meanwhile."""
    offerer, answerer, ours, theirs = await connected_pair()
    received = {"offerer": 0, "answerer": 0}
    ours.on("message", lambda _: received.__setitem__("offerer", received["offerer"] + 1))
    theirs.on("message", lambda _: received.__setitem__("answerer", received["answerer"] + 1))
    reducers = [reduce_acknowledgements(pc) for pc in (offerer, answerer)] if reduce else []
    before = [sctp_transport_stats(pc) for pc in (offerer, answerer)]
    for _ in range(MESSAGES):
        ours.send(b"o" * PAYLOAD)
        await asyncio.sleep(0.05)
        if both_ways:
            theirs.send(b"a" * PAYLOAD)
        await asyncio.sleep(0.05)
    await asyncio.sleep(SACK_DELAY_S + 0.3)
    after = [sctp_transport_stats(pc) for pc in (offerer, answerer)]
    await offerer.close()
    await answerer.close()
    return {"received": received, "reducers": reducers,
            "datagrams": [a.packetsSent - b.packetsSent for a, b in zip(after, before)],
            "bytes": [a.bytesSent - b.bytesSent for a, b in zip(after, before)]}


def test_acknowledgements_ride_with_the_other_sides_data():
    plain = asyncio.run(exchange(reduce=False, both_ways=True))
    reduced = asyncio.run(exchange(reduce=True, both_ways=True))
    for result in (plain, reduced):
        assert result["received"] == {"offerer": MESSAGES, "answerer": MESSAGES}
    # aiortc: a data packet and a SACK packet for each message each way.
    assert plain["datagrams"] == [2 * MESSAGES, 2 * MESSAGES]
    # Bundled: about one datagram a message, each SACK 16 B inside a data packet.
    assert all(count <= MESSAGES + 2 for count in reduced["datagrams"]), reduced
    data_bytes = MESSAGES * (PAYLOAD + DATA_CHANNEL_BYTES)
    assert all(count <= data_bytes + MESSAGES * SACK_CHUNK + 2 * 65
               for count in reduced["bytes"]), reduced
    assert sum(reducer.counts["bundled"] for reducer in reduced["reducers"]) >= MESSAGES


def test_a_side_that_only_listens_acknowledges_every_second_packet_or_after_a_delay():
    result = asyncio.run(exchange(reduce=True, both_ways=False))
    assert result["received"]["answerer"] == MESSAGES
    listener = result["reducers"][1].counts
    assert listener["bundled"] == 0
    sacks = result["datagrams"][1]
    assert sacks == listener["at_once"] + listener["after_delay"]
    assert MESSAGES / 2 <= sacks <= MESSAGES / 2 + 2, (sacks, listener)


def test_only_the_aiortc_it_was_checked_against_is_changed():
    class Association:
        _send_sack = _send_chunk = None

    class Connection:
        sctp = Association()

    assert reduce_acknowledgements(Connection()) is None
    assert reduce_acknowledgements(object()) is None
