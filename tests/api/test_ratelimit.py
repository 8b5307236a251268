import threading

import pytest

from rawexport.api.ratelimit import RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_burst_then_wait_then_refill() -> None:
    clock = FakeClock()
    rl = RateLimiter(2.0, 2, clock=clock)
    assert [rl.hit("a"), rl.hit("a")] == [0, 0]
    assert rl.hit("a") == 1  # half a second rounds up to a whole second
    clock.t += 0.5
    assert rl.hit("a") == 0
    assert rl.hit("a") >= 1
    assert rl.hit("b") == 0  # keys are independent
    clock.t += 100
    assert [rl.hit("a"), rl.hit("a"), rl.hit("a")] == [0, 0, 1]  # refill caps at the burst


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    clock = FakeClock()
    rl = RateLimiter(0.1, 1, clock=clock)
    assert rl.hit("k") == 0
    assert rl.hit("k") == 10
    clock.t += 9.5
    assert rl.hit("k") == 1
    clock.t += 0.5
    assert rl.hit("k") == 0


def test_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0, 1)
    with pytest.raises(ValueError):
        RateLimiter(1, 0)


def test_thread_safe_under_contention() -> None:
    rl = RateLimiter(1.0, 50, clock=FakeClock())
    allowed: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        mine = sum(1 for _ in range(100) if rl.hit("shared") == 0)
        with lock:
            allowed.append(mine)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == 50


def test_refilled_buckets_are_pruned() -> None:
    clock = FakeClock()
    rl = RateLimiter(10.0, 1, clock=clock, max_keys=10)
    for i in range(11):
        rl.hit(f"old{i}")
    assert len(rl._buckets) == 11  # none has refilled yet: nothing to drop
    clock.t += 1
    for i in range(12):
        rl.hit(f"new{i}")
    assert sorted(rl._buckets) == sorted(f"new{i}" for i in range(12))
    assert rl.hit("new0") == 1  # pruning kept the live buckets
