"""The one-slot hand-off: latest-frame-wins for live inputs, lossless for files."""

from __future__ import annotations

import threading
import time

import pytest

from vcam.runtime.handoff import Handoff, HandoffClosed


def test_latest_item_wins_and_drops_are_counted():
    handoff: Handoff[int] = Handoff("test")
    for item in range(5):
        assert handoff.put(item)
    assert handoff.get(timeout=0) == 4
    assert handoff.dropped == 4
    assert handoff.get(timeout=0.01) is None  # nothing new: no backlog


def test_lossless_put_waits_for_the_consumer_and_drops_nothing():
    handoff: Handoff[int] = Handoff("test", wait_for_consumer=True)
    received: list[int] = []

    def consume():
        while True:
            try:
                item = handoff.get(timeout=1)
            except HandoffClosed:
                return
            if item is not None:
                received.append(item)
                time.sleep(0.002)  # a consumer slower than the producer

    consumer = threading.Thread(target=consume)
    consumer.start()
    for item in range(50):
        assert handoff.put(item)
    handoff.close()
    consumer.join(timeout=5)
    assert received == list(range(50))
    assert handoff.dropped == 0


def test_close_delivers_what_is_left_then_ends_the_stream():
    handoff: Handoff[str] = Handoff("test")
    handoff.put("last")
    handoff.close()
    assert handoff.get(timeout=0) == "last"
    with pytest.raises(HandoffClosed):
        handoff.get(timeout=0)
    assert not handoff.put("late")


def test_close_wakes_a_blocked_producer():
    handoff: Handoff[int] = Handoff("test", wait_for_consumer=True)
    handoff.put(1)
    results: list[bool] = []
    producer = threading.Thread(target=lambda: results.append(handoff.put(2)))
    producer.start()
    time.sleep(0.05)
    assert producer.is_alive()  # waiting for the consumer
    handoff.close()
    producer.join(timeout=2)
    assert results == [False]


def test_a_patient_producer_lets_an_idle_consumer_take_each_of_two_quick_items():
    handoff: Handoff[int] = Handoff("test", patience_s=2.0)
    received: list[int] = []
    consumer = threading.Thread(target=lambda: received.extend(
        handoff.get(timeout=2) for _ in range(2)))
    consumer.start()
    assert handoff.put(1) and handoff.put(2)  # the second waits until the first is taken
    consumer.join(timeout=5)
    assert received == [1, 2] and handoff.dropped == 0


def test_a_patient_producer_still_replaces_an_item_nobody_takes():
    handoff: Handoff[int] = Handoff("test", patience_s=0.05)
    handoff.put(1)
    started = time.perf_counter()
    assert handoff.put(2)
    assert time.perf_counter() - started >= 0.04  # it waited, then the newest item won
    assert handoff.get(timeout=0) == 2 and handoff.dropped == 1
