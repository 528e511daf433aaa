"""JobContext.cancelled: a cheap threading.Event that behaves like one."""

from __future__ import annotations

import threading
import time

from haosq.handlers.registry import CancelEvent


def test_it_is_an_event_that_starts_down_and_times_out() -> None:
    event = CancelEvent()
    assert isinstance(event, threading.Event)
    assert not event.is_set() and not event.isSet()
    started = time.monotonic()
    assert event.wait(0.05) is False
    assert time.monotonic() - started >= 0.04
    assert event.wait(0) is False and event.wait(-1) is False


def test_set_releases_every_waiter_and_stays_set() -> None:
    event = CancelEvent()
    waiting = threading.Barrier(6)
    results: list[bool] = []

    def waiter() -> None:
        waiting.wait()
        results.append(event.wait(10))

    threads = [threading.Thread(target=waiter) for _ in range(5)]
    for thread in threads:
        thread.start()
    waiting.wait()  # every waiter is about to block
    event.set()
    event.set()  # setting twice is harmless
    for thread in threads:
        thread.join(5)
    assert results == [True] * 5
    assert event.is_set() and event.wait() and event.wait(0)


def test_clear_lowers_it_again() -> None:
    event = CancelEvent()
    event.set()
    event.clear()
    event.clear()
    assert not event.is_set() and event.wait(0.01) is False
    timer = threading.Timer(0.01, event.set)
    timer.start()
    assert event.wait(5)
    timer.join()
