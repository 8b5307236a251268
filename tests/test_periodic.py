"""The one background-loop helper: passes on time, failures counted and backed off, work
that says so run again at once, several threads, a stop that ends them."""

from __future__ import annotations

import threading
import time

from rawexport.periodic import Periodic


def wait_for(check: threading.Event, seconds: float = 5.0) -> None:
    assert check.wait(seconds), "the loop did not get there"


def test_failed_passes_are_counted_and_backed_off_and_the_loop_goes_on() -> None:
    times: list[float] = []
    errors: list[int] = []
    enough = threading.Event()

    def task() -> None:
        times.append(time.monotonic())
        if len(times) >= 6:
            enough.set()
        if len(times) <= 4:
            raise OSError(24, "Too many open files")

    loop = Periodic("t", task, 0.02, on_error=lambda: errors.append(1))
    loop.start()
    try:
        wait_for(enough)
    finally:
        loop.stop(5)
    assert len(errors) == 4 and not any(t.is_alive() for t in loop.threads)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    # doubling from 0.1 s: 0.2, 0.4, 0.8, then 1.0 (10 intervals, at least 1 s), then the
    # interval again once a pass succeeds
    assert gaps[0] >= 0.19 and gaps[1] >= 0.39 and gaps[2] >= 0.79 and gaps[3] >= 0.99
    assert gaps[4] < 0.5


def test_work_done_is_followed_at_once_and_threads_share_the_task() -> None:
    seen: set[str] = set()
    calls = {"n": 0}
    lock = threading.Lock()
    enough = threading.Event()

    def task() -> bool:
        with lock:
            calls["n"] += 1
            seen.add(threading.current_thread().name)
            if calls["n"] >= 200:
                enough.set()
        return True  # did work: no wait (an hour-long interval would stall this test)

    loop = Periodic("w", task, 3600, threads=2)
    loop.start()
    try:
        wait_for(enough)
    finally:
        loop.stop(5)
    assert seen == {"w-0", "w-1"}


def test_first_wait_and_stop_during_it() -> None:
    calls: list[int] = []
    loop = Periodic("s", lambda: calls.append(1), 3600, first_wait=True)
    loop.start()
    time.sleep(0.05)
    started = time.monotonic()
    loop.stop(5)
    assert calls == [] and time.monotonic() - started < 1
