"""Fair shares: per-owner caps refuse at once, the server-wide cap waits a little, then refuses."""

import threading
import time

import pytest

from gptlab.admission import BusyError, Slots


def test_an_owner_over_its_share_is_refused_at_once_and_others_still_get_in():
    slots = Slots("generations", per_owner=2, total=4, wait_s=0.1)
    with slots.hold("a"), slots.hold("a"):
        with pytest.raises(BusyError, match="You already have 2 generations running"):
            with slots.hold("a"):
                pass
        with slots.hold("b"):
            assert slots.in_use == 3
    assert slots.in_use == 0


def test_the_server_wide_share_waits_for_a_free_slot_then_refuses():
    slots = Slots("generations", per_owner=5, total=1, wait_s=0.3)
    released = threading.Event()

    def hold_briefly():
        with slots.hold("a"):
            released.wait(1)

    worker = threading.Thread(target=hold_briefly)
    worker.start()
    time.sleep(0.05)
    begun = time.monotonic()
    with pytest.raises(BusyError, match="busy with other generations"):
        with slots.hold("b"):
            pass
    assert time.monotonic() - begun >= 0.25
    threading.Timer(0.1, released.set).start()
    with slots.hold("b"):  # waits the 0.1 s until the first one lets go
        assert slots.in_use == 1
    worker.join()


def test_the_total_may_follow_the_server_state_and_a_closed_stream_gives_its_slot_back():
    training = [True]
    slots = Slots("generations", per_owner=3, total=lambda: 1 if training[0] else 2, wait_s=0.0)
    first = slots.streaming("a", iter(range(3)))
    assert next(first) == 0 and slots.in_use == 1
    with pytest.raises(BusyError):
        next(slots.streaming("b", iter(range(3))))
    training[0] = False
    second = slots.streaming("b", iter(range(3)))
    assert next(second) == 0 and slots.in_use == 2
    first.close()  # a closed tab
    second.close()
    assert slots.in_use == 0


def test_a_flood_past_the_few_that_may_wait_is_refused_at_once():
    slots = Slots("generations", per_owner=100, total=1, wait_s=5.0, max_waiting=2)
    release = threading.Event()
    results = []

    def request(i):
        begun = time.monotonic()
        try:
            with slots.hold(f"owner{i}"):
                release.wait(5)
            results.append(("ran", time.monotonic() - begun))
        except BusyError:
            results.append(("refused", time.monotonic() - begun))

    threads = [threading.Thread(target=request, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
        time.sleep(0.01)
    time.sleep(0.2)
    refused = [took for what, took in results if what == "refused"]
    assert len(refused) == 17 and max(refused) < 0.5  # one runs, two wait, the rest are told at once
    release.set()
    for t in threads:
        t.join()
    assert sum(what == "ran" for what, _ in results) == 3
