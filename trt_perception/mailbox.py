"""A one-slot, latest-wins mailbox between a frame producer and the thread that runs the models.

When the camera outruns the model, queueing frames only adds latency: each frame would wait for all older
ones. With one slot a new frame replaces the waiting one, so the model always works on the newest frame and
latency stays bounded by about one inference time. Replaced frames are counted as dropped.
"""

from __future__ import annotations

import threading
from typing import Generic, List, Optional, Tuple, TypeVar

T = TypeVar("T")


class LatestFrameMailbox(Generic[T]):
    """Thread-safe single slot: ``put`` never blocks (it replaces), ``get`` blocks up to a timeout."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._item: Optional[T] = None
        self._full = False
        self._closed = False
        self.put_count = 0  # frames offered
        self.dropped = 0  # frames replaced before anyone took them

    def put(self, item: T) -> bool:
        """Offer a frame; returns True when it replaced a waiting one (that one counts as dropped).

        After ``close`` frames are refused silently (returns False and nothing is stored).
        """
        with self._cond:
            if self._closed:
                return False
            replaced = self._full
            if replaced:
                self.dropped += 1
            self._item = item
            self._full = True
            self.put_count += 1
            self._cond.notify()
            return replaced

    def get(self, timeout: Optional[float] = None) -> Optional[T]:
        """Take the waiting frame, waiting up to ``timeout`` seconds (None = forever, 0 = just look).

        Returns None on timeout or once the mailbox is closed and empty.
        """
        with self._cond:
            if not self._full and not self._closed:
                if timeout is None:
                    while not self._full and not self._closed:
                        self._cond.wait()
                elif timeout > 0:
                    self._cond.wait_for(lambda: self._full or self._closed, timeout)
            if not self._full:
                return None
            item = self._item
            self._item = None
            self._full = False
            return item

    def close(self) -> None:
        """Wake every waiting ``get`` and refuse new frames; a frame already waiting can still be taken."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return 1 if self._full else 0


class RoundRobinMailboxes(Generic[T]):
    """One latest-frame mailbox per camera, served in turn by one worker.

    ``next`` takes a waiting frame from the camera after the one served last, so a fast camera cannot starve a
    slow one: with every camera busy each gets one frame in N. One event wakes the worker for any camera.
    """

    def __init__(self, count: int) -> None:
        self.mailboxes: List[LatestFrameMailbox[T]] = [LatestFrameMailbox() for _ in range(count)]
        self._wake = threading.Event()
        self._start = 0
        self._closed = False

    def put(self, index: int, item: T) -> bool:
        """Offer camera ``index``'s frame; True when it replaced a waiting one of that camera (dropped)."""
        replaced = self.mailboxes[index].put(item)
        self._wake.set()
        return replaced

    def next(self, timeout: Optional[float] = None) -> Optional[Tuple[int, T]]:
        """(camera index, frame) of the next camera in turn with a frame waiting, waiting up to ``timeout``;
        None on timeout or when closed."""
        while True:
            self._wake.clear()  # before looking: a frame put after this sets it again
            count = len(self.mailboxes)
            for offset in range(count):
                index = (self._start + offset) % count
                item = self.mailboxes[index].get(timeout=0)
                if item is not None:
                    self._start = (index + 1) % count
                    return index, item
            if self._closed or not self._wake.wait(timeout):
                return None

    def take_ready(self, timeout: Optional[float] = None) -> List[Tuple[int, T]]:
        """Every camera's waiting frame at once (cameras whose frames can run as one batch), in turn from the
        camera after the one served last, waiting up to ``timeout`` for the first; [] on timeout or close.
        Each camera gives at most its one newest frame, so none starves."""
        first = self.next(timeout)
        if first is None:
            return []
        ready = [first]
        count = len(self.mailboxes)
        for offset in range(1, count):
            index = (first[0] + offset) % count
            item = self.mailboxes[index].get(timeout=0)
            if item is not None:
                ready.append((index, item))
        return ready

    def close(self) -> None:
        self._closed = True
        for mailbox in self.mailboxes:
            mailbox.close()
        self._wake.set()

    @property
    def closed(self) -> bool:
        return self._closed


class Handover(Generic[T]):
    """One slot between two pipeline stages (decode -> infer), for overlap without queueing.

    The producer calls ``wait_empty`` BEFORE it takes a new frame to decode, then ``put``: so it decodes only
    while the consumer works on the previous frame, the frame it takes is the newest one (latest-frame
    mailboxes upstream keep replacing while it waits), at most two decoded frames exist at once (the one the
    consumer holds, the one in the slot or being decoded: decoders reuse two buffers), and latency stays about
    one inference. ``close`` wakes both sides; after it ``put`` refuses and ``get`` returns None once empty.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._item: Optional[T] = None
        self._full = False
        self._closed = False

    def wait_empty(self, timeout: Optional[float] = None) -> bool:
        """Wait until the slot is empty; False when closed (or on timeout)."""
        with self._cond:
            self._cond.wait_for(lambda: not self._full or self._closed, timeout)
            return not self._full and not self._closed

    def put(self, item: T) -> bool:
        """Fill the empty slot (waits while it is full); False when closed (the item is dropped)."""
        with self._cond:
            self._cond.wait_for(lambda: not self._full or self._closed)
            if self._closed:
                return False
            self._item, self._full = item, True
            self._cond.notify_all()
            return True

    def get(self, timeout: Optional[float] = None) -> Optional[T]:
        """Take the item, waiting up to ``timeout`` (None = until one comes or the slot is closed)."""
        with self._cond:
            self._cond.wait_for(lambda: self._full or self._closed, timeout)
            if not self._full:
                return None
            item, self._item, self._full = self._item, None, False
            self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
