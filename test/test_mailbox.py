"""LatestFrameMailbox: latest wins, drops counted, blocking get with timeout, close wakes waiters."""

from __future__ import annotations

import threading

from trt_perception.mailbox import LatestFrameMailbox


def test_put_replaces_waiting_frame_and_counts_drop():
    box = LatestFrameMailbox()
    assert box.put(1) is False
    assert box.put(2) is True
    assert box.put(3) is True
    assert box.dropped == 2 and box.put_count == 3
    assert len(box) == 1
    assert box.get(timeout=0) == 3
    assert len(box) == 0
    assert box.get(timeout=0) is None


def test_get_times_out_empty():
    assert LatestFrameMailbox().get(timeout=0.01) is None


def test_get_blocks_until_a_frame_arrives():
    box = LatestFrameMailbox()
    got = []
    started = threading.Event()

    def consumer():
        started.set()
        got.append(box.get(timeout=10))

    thread = threading.Thread(target=consumer)
    thread.start()
    started.wait()
    box.put("frame")
    thread.join(10)
    assert got == ["frame"]


def test_close_wakes_a_waiting_get_and_refuses_frames():
    box = LatestFrameMailbox()
    got = []
    thread = threading.Thread(target=lambda: got.append(box.get()))  # no timeout: only close ends it
    thread.start()
    box.close()
    thread.join(10)
    assert not thread.is_alive() and got == [None]
    assert box.closed
    assert box.put(1) is False
    assert box.get(timeout=0) is None


def test_frame_waiting_at_close_can_still_be_taken():
    box = LatestFrameMailbox()
    box.put("last")
    box.close()
    assert box.get() == "last"
    assert box.get() is None


def test_none_is_a_valid_item_distinguished_by_len():
    box = LatestFrameMailbox()
    box.put(None)
    assert len(box) == 1


def test_producer_consumer_threads_lose_nothing_but_drops():
    box = LatestFrameMailbox()
    taken = []
    done = threading.Event()

    def consumer():
        while True:
            item = box.get(timeout=0.05)
            if item is not None:
                taken.append(item)
            elif done.is_set() and len(box) == 0:
                return

    thread = threading.Thread(target=consumer)
    thread.start()
    for i in range(5000):
        box.put(i)
    done.set()
    thread.join(10)
    assert taken == sorted(taken)  # newest-first never reorders
    assert taken[-1] == 4999
    assert len(taken) + box.dropped == 5000
