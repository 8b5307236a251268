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
        ids = {id(x) for x in survivors}

        def collected_still() -> int:
            """How many survivors the collector still walks (a frozen object it does not;
            the freeze count alone moves as frozen objects of other threads die)."""
            return sum(1 for o in gc.get_objects() if id(o) in ids)

        assert collected_still() == len(survivors)
        deadline = time.monotonic() + 10
        while collected_still() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert collected_still() == 0
    finally:
        gc.unfreeze()
