"""The per-credential rate limit, with nginx `limit_req` semantics: delay first, refuse last.

Real GrowingIO clients never retry: a 429 ends their run. So a request over the rate is
not refused but given a turn: it waits (an async sleep, no thread held) until the average
rate allows it. Only a credential whose queue of waiting requests is longer than `queue`
(or whose turn is further than `max_delay` seconds away) is refused, with the seconds
until a place frees up.

State per key is nginx's: `excess`, the requests counted beyond the rate, drained at
`rate` per second. The first `burst` requests of an idle key pass at once.

Limits are per process: behind a load balancer each node allows its share of them
(`rate_nodes`: node_limiter, node_auth_limiter).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from rawexport.settings import Settings

AUTH_QUEUE = 20  # /auth/token attempts of one address (or codes of one key) that may wait
AUTH_MAX_DELAY = 30.0


@dataclass(frozen=True)
class Turn:
    """A request's place: wait `delay` seconds, or, when refused, come back in `retry_after`."""

    delay: float = 0.0
    retry_after: int = 0

    @property
    def refused(self) -> bool:
        return self.retry_after > 0


NOW = Turn()


class RateLimiter:
    """`rate` requests per second per key on average; `burst` at once without delay;
    up to `queue` requests waiting their turn, none longer than `max_delay` seconds."""

    def __init__(
        self,
        rate: float,
        burst: int,
        queue: int = 200,
        max_delay: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        if rate <= 0 or burst < 1 or queue < 0 or max_delay < 0:
            raise ValueError("rate must be > 0, burst >= 1, queue >= 0 and max_delay >= 0")
        self.rate = rate
        self.burst = burst
        self.queue = queue
        self.max_delay = max_delay
        self.clock = clock
        self.max_keys = max_keys
        self._excess: dict[str, tuple[float, float]] = {}  # key -> (excess, at)
        self._prune_at = max_keys
        self._lock = threading.Lock()

    def take(self, key: str) -> Turn:
        """Count one request of key; returns when it may run, or that it is refused."""
        with self._lock:
            now = self.clock()
            excess, at = self._excess.get(key, (0.0, now))
            excess = max(0.0, excess - (now - at) * self.rate)
            # nginx counts the request itself only once it is admitted; the first request
            # of an idle key has excess 0, so `burst` requests (excess 0..burst-1) pass now.
            waiting = excess - (self.burst - 1)  # requests ahead of the rate, this one included
            if waiting > self.queue or waiting / self.rate > self.max_delay:
                self._excess[key] = (excess, now)
                over = max(waiting - self.queue, waiting - self.max_delay * self.rate)
                return Turn(retry_after=max(1, math.ceil(over / self.rate)))
            self._excess[key] = (excess + 1.0, now)
            if len(self._excess) > self._prune_at:
                self._prune(now)
                self._prune_at = max(self.max_keys, 2 * len(self._excess))
            return NOW if waiting <= 0 else Turn(delay=waiting / self.rate)

    def _prune(self, now: float) -> None:
        # A drained key is the same as no key, so it can go.
        drained = [k for k, (e, at) in self._excess.items() if e - (now - at) * self.rate <= 0]
        for k in drained:
            del self._excess[k]


def _node_share(rate: float, burst: int, queue: int, max_delay: float, nodes: int) -> RateLimiter:
    """This node's share of a limit: with `nodes` nodes behind a load balancer that spreads
    requests evenly, each allows 1/N of the rate, the burst and the queue, so a credential
    (or an address) gets about the limit in all."""
    return RateLimiter(
        rate / nodes,
        max(1, burst // nodes),
        max(1, queue // nodes) if queue else 0,
        max_delay,
    )


def node_limiter(settings: Settings) -> RateLimiter:
    """This node's share of the per-credential limit of the export API (`rate_nodes`)."""
    s = settings
    return _node_share(s.rate_limit, s.rate_burst, s.rate_queue, s.rate_max_delay, s.rate_nodes)


def node_auth_limiter(settings: Settings) -> RateLimiter:
    """This node's share of the /auth/token limits (per address, per key)."""
    s = settings
    return _node_share(
        s.auth_rate_limit, s.auth_rate_burst, AUTH_QUEUE, AUTH_MAX_DELAY, s.rate_nodes
    )
