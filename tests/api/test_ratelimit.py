"""The rate limit's nginx `limit_req` semantics: burst at once, then delay, then refuse."""

import sys
import threading

import pytest

from rawexport.api.ratelimit import RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_burst_at_once_then_one_turn_per_interval() -> None:
    clock = FakeClock()
    rl = RateLimiter(2.0, 2, queue=10, clock=clock)
    turns = [rl.take("a") for _ in range(5)]
    assert [t.delay for t in turns] == [0, 0, 0.5, 1.0, 1.5]
    assert not any(t.refused for t in turns)
    assert rl.take("b").delay == 0  # keys are independent
    clock.t += 1.5  # the queue drains at the rate
    assert rl.take("a").delay == pytest.approx(0.5)
    clock.t += 100
    assert [rl.take("a").delay for _ in range(3)] == [0, 0, 0.5]  # idle again: a new burst


def test_a_sequential_client_is_paced_not_refused() -> None:
    clock = FakeClock()
    rl = RateLimiter(2.0, 2, queue=1, clock=clock)  # only the one request being sent waits
    start = clock.t
    for _ in range(200):
        turn = rl.take("k")
        assert not turn.refused
        clock.t += turn.delay  # the client waits its turn, then sends the next one
    # 200 requests at 2/s: the burst of 2 at once, the other 198 half a second apart.
    assert clock.t - start == pytest.approx(99.0)


def test_refused_past_the_queue_with_whole_seconds_to_wait() -> None:
    clock = FakeClock()
    rl = RateLimiter(0.5, 1, queue=2, clock=clock)
    assert [rl.take("k").delay for _ in range(3)] == [0, 2.0, 4.0]
    refused = rl.take("k")
    assert refused.refused and refused.retry_after == 2 and refused.delay == 0
    assert rl.take("k").refused  # a refusal does not take a place
    clock.t += 2
    assert rl.take("k").delay == pytest.approx(4.0)


def test_refused_when_the_turn_is_past_max_delay() -> None:
    clock = FakeClock()
    rl = RateLimiter(1.0, 1, queue=100, max_delay=3, clock=clock)
    assert [rl.take("k").delay for _ in range(4)] == [0, 1, 2, 3]
    assert rl.take("k").retry_after == 1


def test_rejects_bad_parameters() -> None:
    for args in ((0, 1), (1, 0), (1, 1, -1), (1, 1, 1, -1.0)):
        with pytest.raises(ValueError):
            RateLimiter(*args)


def test_thread_safe_under_contention() -> None:
    """Eight threads released at once by a barrier, switching every microsecond (the
    default 5 ms lets one thread drain its loop alone): without the lock, counts get lost."""
    clock = FakeClock()
    rl = RateLimiter(1.0, 1, queue=100_000, max_delay=1e9, clock=clock)
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()  # all eight take at once
        for _ in range(4000):
            rl.take("shared")

    threads = [threading.Thread(target=worker) for _ in range(8)]
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    # Every take counted once: the next one waits behind all 32000.
    assert rl.take("shared").delay == 32000 - 1 + 1


def test_drained_keys_are_pruned() -> None:
    clock = FakeClock()
    rl = RateLimiter(10.0, 1, clock=clock, max_keys=10)
    for i in range(11):
        rl.take(f"old{i}")
    assert len(rl._excess) == 11  # none has drained yet: nothing to drop
    clock.t += 1
    for i in range(12):
        rl.take(f"new{i}")
    assert sorted(rl._excess) == sorted(f"new{i}" for i in range(12))
    assert rl.take("new0").delay == pytest.approx(0.1)  # pruning kept the live keys
