"""Keeping a lease while its work runs: renewed in a thread, `lost` once a renewal fails."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType

log = logging.getLogger("rawexport.lease")


class LeaseKeeper:
    """Renews a lease every third of its length while the work under it runs.

    `renew()` returns False once the lease is no longer this holder's: `lost` is then set
    (the pipeline's coordinator watches it) and renewing stops. A renewal that raises (the
    catalog briefly unreachable) is tried again on the next tick.
    """

    def __init__(self, renew: Callable[[], bool], lease_ms: int, what: str) -> None:
        self.renew = renew
        self.period = max(0.5, lease_ms / 3000)
        self.what = what
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rawexport-lease", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                if not self.renew():
                    self.lost.set()
                    return
            except Exception:
                log.exception("lease renewal of %s failed", self.what)

    def stop(self) -> None:
        """Stop renewing (before the commit, whose own fence decides)."""
        self._stop.set()

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
