"""Short-lived caches of catalog reads on the hot API paths (credentials, projects, answers),
and of the encoded answers made of them (`Replies`).

An entry is used only while both hold:

- the catalog has not been written through this process since the entry was read
  (`Catalog.generation`): a revocation, a disabled export or a new revision made by this
  node is seen by its next request;
- it is younger than `cache_seconds`: what another node or a CLI command writes to a
  shared catalog is seen within that bound.

`cache_seconds = 0` turns the caches off (every request reads the catalog).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

from starlette.concurrency import run_in_threadpool

log = logging.getLogger("rawexport.api")

T = TypeVar("T")
V = TypeVar("V")


class Fresh(Generic[V]):
    """A dict of values read from the catalog at some generation, each valid for `seconds`."""

    def __init__(
        self,
        generation: Callable[[], int],
        seconds: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.generation = generation
        self.seconds = seconds
        self.max_entries = max_entries
        self.clock = clock
        self._entries: dict[Hashable, tuple[V, int, float]] = {}

    def get(self, key: Hashable) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, generation, born = entry
        if generation != self.generation() or self.clock() - born >= self.seconds:
            self._entries.pop(key, None)
            return None
        return value

    def put(self, key: Hashable, value: V, generation: int) -> None:
        """Keep value, read from the catalog at `generation` (taken before the read)."""
        if self.seconds <= 0 or generation != self.generation():
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # a burst of distinct keys: start over, cheaply
        self._entries[key] = (value, generation, self.clock())

    def aging(self, key: Hashable) -> bool:
        """True when key's entry is past half its life: time to read it again."""
        entry = self._entries.get(key)
        return entry is not None and self.clock() - entry[2] >= self.seconds / 2

    def times(self, key: Hashable) -> tuple[float, float] | None:
        """When (on `clock`) key's entry starts aging and when it goes stale; None when it
        is missing or stale already."""
        entry = self._entries.get(key)
        if entry is None or entry[1] != self.generation():
            return None
        stale = entry[2] + self.seconds
        return (entry[2] + self.seconds / 2, stale) if self.clock() < stale else None


# How often, at most, a kept reply whose parts are aging lets a request take the steps.
REFRESH_GAP = 0.05


class _Reply(Generic[V]):
    __slots__ = ("value", "size", "generation", "refresh_at", "until", "holds")

    def __init__(
        self,
        value: V,
        size: int,
        generation: int,
        refresh_at: float,
        until: float,
        holds: Callable[[int], bool],
    ) -> None:
        self.value, self.size, self.generation = value, size, generation
        self.refresh_at, self.until, self.holds = refresh_at, until, holds


class Replies(Generic[V]):
    """Whole answers (encoded), kept while every cached read they were made of is.

    A reply is made of entries of the caches above, and is kept with the generation they
    were read at, when the first of them goes stale (`until`) and `holds(now_ms)` (what
    the answer's own rules say about the request clock). While all three hold, the steps
    would give the same entries, so the same reply: it is given again without them.

    From when the first of its entries ages (`refresh_at`), one request per REFRESH_GAP
    is let through to take the steps: they read the aging entries again ahead (Loads),
    and the reply made of the new entries replaces this one.
    """

    def __init__(
        self,
        generation: Callable[[], int],
        max_bytes: int = 64 << 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.generation = generation
        self.max_bytes = max_bytes
        self.clock = clock
        self._bytes = 0
        self._entries: dict[Hashable, _Reply[V]] = {}

    def get(self, key: Hashable, now_ms: int) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = self.clock()
        if entry.generation != self.generation() or now >= entry.until or not entry.holds(now_ms):
            del self._entries[key]
            self._bytes -= entry.size
            return None
        if now >= entry.refresh_at:
            entry.refresh_at = now + REFRESH_GAP
            return None
        return entry.value

    def put(
        self,
        key: Hashable,
        value: V,
        size: int,
        generation: int,
        times: Sequence[tuple[float, float]],
        holds: Callable[[int], bool],
    ) -> None:
        """Keep value, made at `generation` of cache entries with these (aging, stale)
        times (Fresh.times)."""
        if generation != self.generation() or size > self.max_bytes // 16:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.size
        if self._bytes + size > self.max_bytes or len(self._entries) >= 100_000:
            self._entries.clear()  # start over, cheaply
            self._bytes = 0
        refresh_at = max(min(t[0] for t in times), self.clock() + REFRESH_GAP)
        until = min(t[1] for t in times)
        self._entries[key] = _Reply(value, size, generation, refresh_at, until, holds)
        self._bytes += size


class Loads:
    """Catalog reads of cache misses, off the event loop: one at a time per key (requests
    that miss the same key meanwhile wait for it instead of reading too), and reads ahead
    in the background for entries past half their life, so a steady load never misses."""

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Event] = {}
        self._background: set[asyncio.Task[None]] = set()

    async def wait(self, key: Hashable) -> bool:
        """Wait for the running load of key, if any; True when there was one."""
        running = self._running.get(key)
        if running is None:
            return False
        await running.wait()
        return True

    async def run(self, key: Hashable, load: Callable[..., T], *args: Any) -> T:
        done = self._begin(key)
        try:
            return await run_in_threadpool(load, *args)
        finally:
            self._end(key, done)

    def ahead(self, key: Hashable, load: Callable[..., Any], *args: Any) -> None:
        """Start load in the background unless one of key runs already."""
        if key in self._running:
            return
        done = self._begin(key)  # now, not when the task starts: one load, not one a hit
        task = asyncio.get_running_loop().create_task(self._quietly(key, done, load, *args))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _begin(self, key: Hashable) -> asyncio.Event:
        done = self._running[key] = asyncio.Event()
        return done

    def _end(self, key: Hashable, done: asyncio.Event) -> None:
        if self._running.get(key) is done:
            del self._running[key]
        done.set()

    async def _quietly(
        self, key: Hashable, done: asyncio.Event, load: Callable[..., Any], *args: Any
    ) -> None:
        try:
            await run_in_threadpool(load, *args)
        except Exception:  # the next request that misses reads (and fails) on its own
            log.debug("background read of %r failed", key, exc_info=True)
        finally:
            self._end(key, done)
