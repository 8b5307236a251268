"""Background loops: a task run in threads every interval until stopped, never dying.

Every loop of a node (the scheduler, the export workers, the compactor, the retention
sweeper) is one `Periodic`. A pass that fails is logged as JSON (`background_error`),
handed to `on_error` (the node counts it in `rawexport_background_failures_total`), and
the next pass comes after a backoff that doubles up to `max_backoff` intervals; a pass
that did work and says so (returns True) is followed by the next one at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("rawexport.background")


class Periodic:
    """Runs `task` in `threads` threads named `name` (`name-0`, ... when several)."""

    def __init__(
        self,
        name: str,
        task: Callable[[], object],
        interval: float,
        *,
        first_wait: bool = False,
        threads: int = 1,
        max_backoff: float = 10.0,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.task = task
        self.interval = interval
        self.first_wait = first_wait  # wait an interval before the first pass
        self.size = threads
        self.max_backoff = max_backoff
        self.on_error = on_error
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self.size):
            name = self.name if self.size == 1 else f"{self.name}-{i}"
            t = threading.Thread(target=self._loop, name=name, daemon=True)
            t.start()
            self.threads.append(t)

    def _loop(self) -> None:
        interval = max(self.interval, 0.0)
        wait = interval
        if self.first_wait and self.stop_event.wait(interval):
            return
        while not self.stop_event.is_set():
            try:
                again = self.task() is True
                wait = interval
            except Exception:
                log.exception("%s pass failed", self.name, extra={"event": "background_error"})
                if self.on_error is not None:
                    self.on_error()
                again = False
                wait = min(max(wait, 0.1) * 2, self.max_backoff * max(interval, 0.1))
            if not again:
                self.stop_event.wait(wait)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the loops and wait up to `timeout` seconds for their passes to end."""
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
