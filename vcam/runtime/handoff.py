"""A one-slot hand-off between two real-time stages.

Live (the default): the newest item wins. ``put`` does not wait for the consumer; an item
the consumer has not taken yet is replaced and counted in ``dropped``, so a slow consumer
sees fresh frames and never a backlog. With ``patience_s`` the producer first waits up to
that long for the consumer to take the previous item (so two frames that leave a stage
together, after a slow one, both arrive when the consumer is quick enough). Lossless
(``wait_for_consumer=True``, for file inputs): ``put`` waits until the consumer has taken
the previous item, so every item arrives and nothing is dropped.

``close`` ends the stream: items already put are still delivered, then ``get`` raises
:class:`HandoffClosed`; a producer blocked in ``put`` wakes up and its item is refused.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

Item = TypeVar("Item")


class HandoffClosed(Exception):
    """The producer has finished (or the pipeline is stopping) and nothing is left."""


class Handoff(Generic[Item]):
    """A single slot: latest-item-wins (after up to ``patience_s`` of waiting for the
    consumer), or lossless when ``wait_for_consumer`` is set."""

    def __init__(self, name: str, wait_for_consumer: bool = False,
                 patience_s: float = 0.0) -> None:
        self.name = name
        self.wait_for_consumer = wait_for_consumer
        self.patience_s = patience_s
        self._condition = threading.Condition()
        self._item: Item | None = None
        self._closed = False
        self.delivered = 0
        self.dropped = 0

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: Item) -> bool:
        """Offer ``item``; False when the hand-off is closed (the item is discarded)."""
        with self._condition:
            if self.wait_for_consumer or self.patience_s:
                self._condition.wait_for(lambda: self._item is None or self._closed,
                                         None if self.wait_for_consumer else self.patience_s)
            if self._closed:
                return False
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._condition.notify_all()
            return True

    def get(self, timeout: float | None = None) -> Item | None:
        """The waiting item, or None after ``timeout`` seconds without one.

        Raises:
            HandoffClosed: the hand-off is closed and empty.
        """
        with self._condition:
            self._condition.wait_for(lambda: self._item is not None or self._closed, timeout)
            item = self._item
            if item is None:
                if self._closed:
                    raise HandoffClosed(self.name)
                return None
            self._item = None
            self.delivered += 1
            self._condition.notify_all()
            return item

    def close(self) -> None:
        """No more items: wake every waiting producer and consumer."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
