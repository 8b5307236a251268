"""Short-lived caches of catalog reads on the hot API paths (credentials, projects, answers).

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
from collections.abc import Callable, Hashable
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
