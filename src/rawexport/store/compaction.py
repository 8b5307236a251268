"""Merging an hour's many small event files into one, crash-safely, and doing it periodically.

The same steps for both stores (through `HourFiles`), each made durable before the next:
write the merged file staged; write a journal naming it and its inputs; publish the merged
file (a rename on a directory, the PUT on objects); delete the inputs; delete the journal.
Readers leave out the inputs of a journal whose merged file exists (`base.live_names`), so
a crash at any point reads every row exactly once, and `recover` later finishes (merged
file in place) or rolls back (not in place).
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from rawexport.catalog.leader import Leadership
from rawexport.metrics import Metrics
from rawexport.periodic import Periodic
from rawexport.schema import DATA_TYPES
from rawexport.settings import Settings
from rawexport.store.base import JOURNAL_SUFFIX, EventStore, HourFiles, is_event_name, live_names
from rawexport.store.events import arrow_schema, conform

log = logging.getLogger("rawexport.compaction")

ROW_GROUP_ROWS = 262_144
Step = Callable[[str], None]


def _no_step(name: str) -> None:
    return None


def recover(files: HourFiles) -> None:
    """Finish or roll back an interrupted compaction of the hour (its lock held)."""
    names = files.sizes()
    for name in sorted(n for n in names if n.endswith(JOURNAL_SUFFIX)):
        journal = files.journal(name)
        if journal is not None and journal[0] in names:
            files.delete(journal[1])  # finish: the merged file holds the inputs' rows
        files.delete([name])
    files.drop_staged(names)


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
    """Merge the hour's files smaller than small_bytes when there are min_files of them,
    finishing first what an interrupted compaction left.

    Returns how many files were merged (0: nothing to do). `step` is called after each
    durable step; tests raise in it to stand for a crash there. On an object store the
    caller makes sure no other process compacts it at the same time (single_compactor).
    """
    with (
        store.hour_lock(ai, data_type, hour_ms, exclusive=True),
        store.hour(ai, data_type, hour_ms) as files,
    ):
        recover(files)
        sizes = files.sizes()
        small = [n for n in live_names(files, sizes) if sizes[n] < small_bytes]
        if len(small) < max(2, min_files):
            return 0
        u = uuid.uuid4().hex
        merged = f"compact-{u}.parquet"
        staged = files.stage(merged)
        with files.fetch(small) as inputs:
            _write_merged(data_type, [f.path for f in inputs], staged)
        step("staged")
        journal = f".compact-{u}{JOURNAL_SUFFIX}"
        journal_staged = files.stage(journal)
        journal_staged.write_text(json.dumps({"merged": merged, "inputs": small}), "utf-8")
        files.publish(journal, journal_staged)
        step("journaled")
        files.publish(merged, staged)
        step("renamed")
        files.delete(small[:1])
        step("deleting")
        files.delete(small[1:])
        step("deleted")
        files.delete([journal])
        return len(small)


def _needs_compaction(store: EventStore, ai: str, data_type: str, hour: int, s: Settings) -> bool:
    """Enough small files, or a journal left by a crash."""
    with store.hour(ai, data_type, hour) as files:
        sizes = files.sizes()
    small = sum(1 for n, size in sizes.items() if is_event_name(n) and size < s.compact_small_bytes)
    return small >= s.compact_min_files or any(n.endswith(JOURNAL_SUFFIX) for n in sizes)


def compact_all(store: EventStore, settings: Settings) -> int:
    """One pass over the store; returns how many files (objects) were merged."""
    small, least = settings.compact_small_bytes, settings.compact_min_files
    merged = 0
    for ai in store.projects():
        for data_type in DATA_TYPES:
            for hour in store.hours(ai, data_type):
                try:
                    if _needs_compaction(store, ai, data_type, hour, settings):
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
        store: EventStore,
        settings: Settings,
        metrics: Metrics | None = None,
        leadership: Leadership | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        # Objects have no locks: then only the holder of this (advisory) lock compacts.
        self.leadership = leadership
        self.loop = Periodic(
            "compactor",
            self.tick,
            settings.compact_interval,
            on_error=None if metrics is None else metrics.failed("compactor"),
        )

    def tick(self) -> None:
        if self.leadership is None or self.leadership.lead():
            merged = compact_all(self.store, self.settings)
            if merged:
                log.info("compacted %d small event files", merged)

    def start(self) -> None:
        self.loop.start()

    def stop(self) -> None:
        self.loop.stop(60)
