"""LatestFrameMailbox: latest wins, drops counted, blocking get with timeout, close wakes waiters."""

from __future__ import annotations

import threading

from trt_perception.mailbox import Handover, LatestFrameMailbox


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


# ---------------------------------------------------------------------------------- several cameras


def test_round_robin_serves_every_camera_in_turn_and_none_starves() -> None:
    from trt_perception.mailbox import RoundRobinMailboxes

    slots: RoundRobinMailboxes = RoundRobinMailboxes(3)
    served = []
    for frame in range(30):  # camera 0 floods (a frame every step), 1 and 2 are slower
        slots.put(0, ("a", frame))
        if frame % 2 == 0:
            slots.put(1, ("b", frame))
        if frame % 3 == 0:
            slots.put(2, ("c", frame))
        item = slots.next(timeout=0)
        assert item is not None
        served.append(item[0])
    counts = [served.count(i) for i in range(3)]
    assert min(counts) >= 7, counts  # each camera gets its turn although camera 0 always has a frame


def test_round_robin_latest_frame_per_camera_and_drops_counted() -> None:
    from trt_perception.mailbox import RoundRobinMailboxes

    slots: RoundRobinMailboxes = RoundRobinMailboxes(2)
    assert slots.put(0, "old") is False
    assert slots.put(0, "new") is True  # replaced: dropped
    assert slots.put(1, "only") is False
    assert slots.next(timeout=0) == (0, "new")
    assert slots.next(timeout=0) == (1, "only")
    assert slots.next(timeout=0) is None
    assert slots.mailboxes[0].dropped == 1


def test_round_robin_wakes_the_worker_and_closes() -> None:
    import threading
    import time

    from trt_perception.mailbox import RoundRobinMailboxes

    slots: RoundRobinMailboxes = RoundRobinMailboxes(2)
    got = []
    worker = threading.Thread(target=lambda: got.append(slots.next(timeout=5.0)))
    worker.start()
    time.sleep(0.05)
    slots.put(1, "frame")
    worker.join(timeout=2.0)
    assert got == [(1, "frame")]
    slots.close()
    assert slots.next(timeout=5.0) is None and slots.closed  # returns at once once closed


def test_handover_producer_waits_for_the_slot_to_empty_before_taking_more() -> None:
    slot: Handover = Handover()
    assert slot.wait_empty(timeout=0)
    assert slot.put("a")
    assert not slot.wait_empty(timeout=0.01)  # full: the producer must not decode another frame yet
    events = []

    def producer() -> None:
        if slot.wait_empty():
            events.append("emptied")
            slot.put("b")

    thread = threading.Thread(target=producer)
    thread.start()
    assert slot.get(timeout=1.0) == "a"
    assert slot.get(timeout=1.0) == "b"
    thread.join(timeout=1.0)
    assert events == ["emptied"]
    assert slot.get(timeout=0.01) is None


def test_handover_close_wakes_both_sides_and_keeps_a_waiting_item() -> None:
    slot: Handover = Handover()
    slot.put(1)
    results = []
    waiter = threading.Thread(target=lambda: results.append(slot.wait_empty()))
    waiter.start()
    slot.close()
    waiter.join(timeout=1.0)
    assert results == [False] and slot.closed
    assert not slot.put(2)  # refused after close
    assert slot.get(timeout=0) == 1  # the waiting item can still be taken
    assert slot.get() is None  # closed and empty: no wait


def test_take_ready_gives_every_waiting_camera_once_in_turn() -> None:
    from trt_perception.mailbox import RoundRobinMailboxes

    slots: RoundRobinMailboxes = RoundRobinMailboxes(3)
    assert slots.take_ready(timeout=0) == []
    slots.put(2, "c1")
    slots.put(0, "a1")
    slots.put(0, "a2")  # replaces a1: one newest frame per camera
    assert slots.take_ready(timeout=0) == [(0, "a2"), (2, "c1")]
    slots.put(0, "a3")
    slots.put(1, "b1")
    assert slots.take_ready(timeout=0) == [(1, "b1"), (0, "a3")]  # starts after the camera served first last
    served = {0: 0, 1: 0, 2: 0}
    for _ in range(30):  # a busy camera 0 never crowds out the others
        slots.put(0, "a")
        if _ % 3 == 0:
            slots.put(1, "b")
            slots.put(2, "c")
        for index, _item in slots.take_ready(timeout=0):
            served[index] += 1
    assert served[0] == 30 and served[1] == served[2] == 10
    slots.close()
    assert slots.take_ready(timeout=0) == []
