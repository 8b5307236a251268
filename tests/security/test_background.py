"""Background threads survive what happens under them (issue 13, point 5): the compactor
died for good on the first OSError; now every thread logs, counts, backs off, goes on."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from rawexport.demo.generate import generate
from rawexport.metrics import Metrics
from rawexport.settings import Settings
from rawexport.store import LocalEventStore, compaction
from rawexport.store.compaction import Compactor
from rawexport.timeutil import HOUR_MS, hour_floor, now_ms

HOUR = hour_floor(now_ms()) - 2 * HOUR_MS


def failures(metrics: Metrics, thread: str) -> float:
    value = metrics.registry.get_sample_value(
        "rawexport_background_failures_total", {"thread": thread}
    )
    return value or 0.0


def test_compactor_survives_errors_and_vanishing_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(home=tmp_path, compact_interval=0.05, compact_min_files=2)
    store = LocalEventStore(settings.events_dir)
    metrics = Metrics()
    real = compaction.compact_all
    calls = {"n": 0}

    def flaky(store_: LocalEventStore, settings_: Settings) -> int:
        calls["n"] += 1
        if calls["n"] <= 2:  # what running out of descriptors looks like
            raise OSError(24, "Too many open files")
        return real(store_, settings_)

    monkeypatch.setattr(compaction, "compact_all", flaky)
    compactor = Compactor(store, settings, metrics)
    compactor.start()
    try:
        deadline = time.monotonic() + 10
        while calls["n"] < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        [thread] = compactor.loop.threads
        assert thread.is_alive()
        assert failures(metrics, "compactor") == 2
        # Files and directories vanish under it: the events directory removed whole.
        for seed in range(3):
            generate(store, "0123456789abcdef", HOUR, 1, 50, ["page"], seed=seed)
        shutil.rmtree(settings.events_dir)
        seen = calls["n"]
        while calls["n"] < seen + 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert thread.is_alive() and calls["n"] >= seen + 3
        # and it still does its work once there is work again
        for seed in range(3):
            generate(store, "0123456789abcdef", HOUR, 1, 50, ["page"], seed=seed)
        while time.monotonic() < deadline:
            files = store.hour_files("0123456789abcdef", "page", HOUR)
            if len(files) == 1:
                break
            time.sleep(0.05)
        assert len(store.hour_files("0123456789abcdef", "page", HOUR)) == 1
    finally:
        compactor.stop()
