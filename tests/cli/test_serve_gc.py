"""serve keeps what it built at start out of the garbage collector's full passes."""

from __future__ import annotations

import gc
import time

from rawexport.cli.serve import quiet_collector


def test_quiet_collector_freezes_now_and_again_later() -> None:
    gc.unfreeze()
    try:
        assert gc.get_freeze_count() == 0
        quiet_collector(refreeze_after=(0.2,))
        frozen = gc.get_freeze_count()
        assert frozen > 1000  # this process's modules, classes and the like
        survivors = [[i] for i in range(5000)]  # built "by the first requests" (tracked)
        deadline = time.monotonic() + 10
        while gc.get_freeze_count() < frozen + len(survivors) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gc.get_freeze_count() >= frozen + len(survivors)
    finally:
        gc.unfreeze()
