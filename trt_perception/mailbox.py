"""A one-slot, latest-wins mailbox between a frame producer and the thread that runs the models.

When the camera outruns the model, queueing frames only adds latency: each frame would wait for all older
ones. With one slot a new frame replaces the waiting one, so the model always works on the newest frame and
latency stays bounded by about one inference time. Replaced frames are counted as dropped.
"""

from __future__ import annotations

import threading
from typing import Generic, Optional, TypeVar

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
