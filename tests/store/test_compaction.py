"""Compaction: many small files become one, and a crash at any step reads every row once."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rawexport.demo.generate import generate
from rawexport.export.actions import export_now
from rawexport.node import open_services
from rawexport.settings import Settings
from rawexport.store import LocalEventStore
from rawexport.store.compaction import compact_all, compact_hour, recover
from rawexport.store.local import LocalHour
from rawexport.timeutil import HOUR_MS

AI = "00000000000000aa"
T0 = 1_735_689_600_000  # 2025-01-01 00:00 UTC
STEPS = ["staged", "journaled", "renamed", "deleting", "deleted"]


class Crash(Exception):
    pass


def rows_of(store: LocalEventStore, hour: int = T0) -> list[tuple[str, int]]:
    files = store.hour_files(AI, "page", hour)
    if not files:
        return []
    t = pa.concat_tables([pq.read_table(f) for f in files])
    return sorted(
        zip(t.column("visitUserId").to_pylist(), t.column("sendTime").to_pylist(), strict=True)
    )


def fill(store: LocalEventStore, files: int, rows: int = 10) -> list[tuple[str, int]]:
    for i in range(files):
        table = pa.table(
            {
                "visitUserId": [f"v{i}-{j}" for j in range(rows)],
                "sendTime": [T0 + i * 1000 + j for j in range(rows)],
            }
        )
        store.append(AI, "page", table)
    return rows_of(store)


def test_merges_small_files_into_one(tmp_path: Path) -> None:
    store = LocalEventStore(tmp_path)
    want = fill(store, 6)
    assert len(store.hour_files(AI, "page", T0)) == 6
    assert compact_hour(store, AI, "page", T0, small_bytes=1 << 20) == 6
    [merged] = store.hour_files(AI, "page", T0)
    assert merged.name.startswith("compact-")
    assert rows_of(store) == want
    assert sorted(p.name for p in merged.parent.iterdir()) == [".lock", merged.name]
    # Nothing to merge: a single file, or too few below the size limit.
    assert compact_hour(store, AI, "page", T0, small_bytes=1 << 20) == 0
    fill(store, 2)
    assert compact_hour(store, AI, "page", T0, small_bytes=1 << 20, min_files=4) == 0
    assert compact_hour(store, AI, "page", T0, small_bytes=1) == 0


@pytest.mark.parametrize("crash_at", STEPS)
def test_a_crash_at_any_step_reads_every_row_once(tmp_path: Path, crash_at: str) -> None:
    store = LocalEventStore(tmp_path)
    want = fill(store, 5)

    def step(name: str) -> None:
        if name == crash_at:
            raise Crash(name)

    with pytest.raises(Crash):
        compact_hour(store, AI, "page", T0, small_bytes=1 << 20, step=step)
    assert rows_of(store) == want  # readers right after the crash
    recover(LocalHour(store.hour_dir(AI, "page", T0)))
    assert rows_of(store) == want
    leftovers = [p.name for p in store.hour_dir(AI, "page", T0).iterdir()]
    assert not [n for n in leftovers if n.endswith((".journal", ".tmp"))]
    compact_hour(store, AI, "page", T0, small_bytes=1 << 20)
    assert len(store.hour_files(AI, "page", T0)) == 1
    assert rows_of(store) == want


def test_compact_all_picks_hours_with_many_files_or_a_journal(tmp_path: Path) -> None:
    store = LocalEventStore(tmp_path)
    settings = Settings(home=tmp_path, compact_min_files=3)
    want = fill(store, 3)
    two = pa.table({"visitUserId": ["a"], "sendTime": [T0 + HOUR_MS]})
    store.append(AI, "page", two)
    store.append(AI, "page", two)

    def crash(name: str) -> None:
        if name == "renamed":
            raise Crash(name)

    assert compact_all(store, settings) == 3
    with pytest.raises(Crash):
        compact_hour(store, AI, "page", T0 + HOUR_MS, small_bytes=1 << 20, step=crash)
    compact_all(store, settings)  # finishes the interrupted one
    assert len(store.hour_files(AI, "page", T0 + HOUR_MS)) == 1
    assert rows_of(store, T0 + HOUR_MS) == [("a", T0 + HOUR_MS)] * 2
    assert len(store.hour_files(AI, "page", T0)) == 1 and rows_of(store) == want


def test_export_compacts_the_hour_first(tmp_path: Path) -> None:
    svc = open_services(Settings(home=tmp_path, grace_seconds=0))
    assert isinstance(svc.store, LocalEventStore)
    p = svc.catalog.create_project("a", ai=AI, export_since_ms=T0, v1_enabled=False)
    for seed in range(4):
        generate(svc.store, AI, T0, 1, 50, ["page"], seed=seed)
    assert len(svc.store.hour_files(AI, "page", T0)) == 4
    [row] = export_now(svc.exporter, p, [T0], "page", T0 + 2 * HOUR_MS)
    assert row["status"] == "finished" and row["rows"] == 200
    assert len(svc.store.hour_files(AI, "page", T0)) == 1
    svc.close()


def test_recovery_removes_stale_staged_appends_only(tmp_path: Path) -> None:
    store = LocalEventStore(tmp_path)
    want = fill(store, 2)
    d = store.hour_dir(AI, "page", T0)
    old, fresh = d / ".aaaa.parquet.tmp", d / ".bbbb.parquet.tmp"
    old.write_bytes(b"partial")
    fresh.write_bytes(b"in flight")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    recover(LocalHour(d))
    assert not old.exists() and fresh.exists()
    assert rows_of(store) == want
