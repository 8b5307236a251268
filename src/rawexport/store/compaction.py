"""Merging an hour's many small event files into one, crash-safely, and doing it periodically.

Steps, each made durable before the next: write the merged file under a staging name;
write a journal naming it and its inputs; rename the merged file into place; delete the
inputs; delete the journal. `EventStore.hour_files` leaves out the inputs of a journal whose
merged file exists, so a crash at any point reads every row exactly once, and
`recover_hour` later finishes (merged file in place) or rolls back (not in place).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from rawexport.catalog.leader import Leadership
from rawexport.metrics import Metrics
from rawexport.schema import DATA_TYPES
from rawexport.settings import Settings
from rawexport.store.events import (
    JOURNAL_SUFFIX,
    EventStore,
    arrow_schema,
    conform,
    fsync_dir,
    read_journal,
)
from rawexport.store.objects import Events, ObjectEventStore

log = logging.getLogger("rawexport.compaction")

ROW_GROUP_ROWS = 262_144
STALE_APPEND_SECONDS = 3600  # no append stays staged this long unless its process died
Step = Callable[[str], None]


def _no_step(name: str) -> None:
    return None


def recover_hour(d: Path) -> None:
    """Finish or roll back an interrupted compaction in hour directory d (lock held)."""
    if not d.is_dir():
        return
    names = {p.name for p in d.iterdir()}
    for name in sorted(n for n in names if n.endswith(JOURNAL_SUFFIX)):
        journal = read_journal(d / name)
        if journal is not None and journal[0] in names:
            for n in journal[1]:
                (d / n).unlink(missing_ok=True)
            fsync_dir(d)
        (d / name).unlink()
        fsync_dir(d)
    stale = time.time() - STALE_APPEND_SECONDS
    for name in names:
        # A compaction's staged file never got in place; an append crashed before its rename.
        if name.endswith(".tmp") and (name.startswith(".compact-") or _mtime(d / name) < stale):
            (d / name).unlink(missing_ok=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def _write_merged(data_type: str, inputs: list[Path], target: Path) -> int:
    schema = arrow_schema(data_type)
    stats = [f.name for f in schema if f.type != pa.string()]
    rows = 0
    with open(target, "wb") as f:
        with pq.ParquetWriter(
            f, schema, compression="zstd", compression_level=1, write_statistics=stats
        ) as writer:
            pending: list[pa.Table] = []
            count = 0
            for path in inputs:
                table = conform(data_type, pq.read_table(path))
                pending.append(table)
                count += table.num_rows
                if count >= ROW_GROUP_ROWS:
                    writer.write_table(pa.concat_tables(pending), ROW_GROUP_ROWS)
                    rows, pending, count = rows + count, [], 0
            if pending:
                writer.write_table(pa.concat_tables(pending), ROW_GROUP_ROWS)
                rows += count
        f.flush()
        os.fsync(f.fileno())
    return rows


def compact_hour(
    store: EventStore,
    ai: str,
    data_type: str,
    hour_ms: int,
    *,
    small_bytes: int,
    min_files: int = 2,
    step: Step = _no_step,
) -> int:
    """Merge the hour's files smaller than small_bytes when there are min_files of them.

    Returns how many files were merged (0: nothing to do). `step` is called after each
    durable step; tests raise in it to stand for a crash there.
    """
    d = store.hour_dir(ai, data_type, hour_ms)
    with store.hour_lock(ai, data_type, hour_ms, exclusive=True):
        if not d.is_dir():
            return 0
        recover_hour(d)
        small = [
            p for p in store.hour_files(ai, data_type, hour_ms) if p.stat().st_size < small_bytes
        ]
        if len(small) < max(2, min_files):
            return 0
        u = uuid.uuid4().hex
        merged = d / f"compact-{u}.parquet"
        staged = d / f".{merged.name}.tmp"
        _write_merged(data_type, small, staged)
        step("staged")
        journal = d / f".compact-{u}{JOURNAL_SUFFIX}"
        journal_tmp = d / f".compact-{u}.journal.tmp"
        with open(journal_tmp, "w", encoding="utf-8") as f:
            json.dump({"merged": merged.name, "inputs": [p.name for p in small]}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(journal_tmp, journal)
        fsync_dir(d)
        step("journaled")
        os.replace(staged, merged)
        fsync_dir(d)
        step("renamed")
        for i, p in enumerate(small):
            p.unlink()
            if i == 0:
                step("deleting")
        fsync_dir(d)
        step("deleted")
        journal.unlink()
        fsync_dir(d)
        return len(small)


def _hours_to_compact(store: EventStore, settings: Settings) -> list[tuple[str, str, int]]:
    """(ai, type, hour) with enough small files, or with a journal left by a crash."""
    found: list[tuple[str, str, int]] = []
    if not store.root.is_dir():
        return found
    for project_dir in sorted(store.root.iterdir()):
        for data_type in DATA_TYPES:
            type_dir = project_dir / data_type
            if not type_dir.is_dir():
                continue
            for hour in store.hours(project_dir.name, data_type):
                d = store.hour_dir(project_dir.name, data_type, hour)
                small, journal = 0, False
                for p in d.iterdir():
                    journal = journal or p.name.endswith(JOURNAL_SUFFIX)
                    if p.suffix == ".parquet" and not p.name.startswith("."):
                        small += p.stat().st_size < settings.compact_small_bytes
                if journal or small >= settings.compact_min_files:
                    found.append((project_dir.name, data_type, hour))
    return found


def compact_all(store: Events, settings: Settings) -> int:
    """One pass over the store; returns how many files (objects) were merged."""
    if isinstance(store, ObjectEventStore):
        hours = [
            (ai, t, h) for ai in store.projects() for t in DATA_TYPES for h in store.hours(ai, t)
        ]
    else:
        hours = _hours_to_compact(store, settings)
    small, least = settings.compact_small_bytes, settings.compact_min_files
    merged = 0
    for ai, data_type, hour in hours:
        try:
            if isinstance(store, ObjectEventStore):
                merged += store.compact_hour(
                    ai, data_type, hour, small_bytes=small, min_files=least
                )
            else:
                merged += compact_hour(
                    store, ai, data_type, hour, small_bytes=small, min_files=least
                )
        except Exception:  # one bad hour must not stop the others
            log.exception("compaction of %s/%s/%s failed", ai, data_type, hour)
    return merged


class Compactor:
    """Runs compact_all every compact_interval seconds in a thread, starting at once.

    A failed pass (descriptors exhausted, a directory that vanished under it, anything)
    is logged as JSON, counted in `rawexport_background_failures_total{thread}`, and the
    next pass comes after a backoff that doubles up to 10 intervals: the thread never dies.
    """

    def __init__(
        self,
        store: Events,
        settings: Settings,
        metrics: Metrics | None = None,
        leadership: Leadership | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        # Objects have no locks: then only the holder of this (advisory) lock compacts.
        self.leadership = leadership
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, name="compactor", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        interval = self.settings.compact_interval
        wait = interval
        while not self.stop_event.is_set():
            try:
                leads = self.leadership is None or self.leadership.lead()
                merged = compact_all(self.store, self.settings) if leads else 0
                if merged:
                    log.info("compacted %d small event files", merged)
                wait = interval
            except Exception:
                log.exception("compaction pass failed", extra={"event": "background_error"})
                if self.metrics is not None:
                    self.metrics.background_failures.labels("compactor").inc()
                wait = min(max(wait, 0.1) * 2, 10 * max(interval, 0.1))
            self.stop_event.wait(wait)

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(60)
