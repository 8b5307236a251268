"""Group commit: one writer thread makes queued batches durable together, then acks them."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from rawexport.catalog import WAITING, Catalog
from rawexport.ingest.validate import RowChunk, Tables, build_table
from rawexport.schema import V1_TYPES
from rawexport.settings import Settings
from rawexport.store import EventStore, open_event_store
from rawexport.timeutil import HOUR_MS, hour_floor, now_ms

log = logging.getLogger("rawexport.ingest")


def export_names(data_type: str) -> list[tuple[str, str]]:
    """The (version, name) exports whose rows come from a store data type."""
    return [("v2", data_type)] + [("v1", n) for n, t in V1_TYPES.items() if t.source == data_type]


def requeue_exported(
    catalog: Catalog, project_id: int, data_type: str, hours: list[int], now: int
) -> int:
    """Queue a new revision of every export of these hours that may miss new rows.

    An export that finished, or is running and may have listed the hour's files before
    the new ones, gets a new revision unless one that will read the files later (queued
    or retrying) exists already. An hour without jobs is left to the planner, and so is the
    open hour: only closed hours are planned (a preview does not count).
    """
    hours = [h for h in hours if h + HOUR_MS <= now]
    queued = 0
    for version, name in export_names(data_type):
        for hour in hours:
            jobs = catalog.hour_jobs(project_id, version, hour, hour + 1).get((name, hour), [])
            if jobs and not any(j.status in WAITING for j in jobs):
                catalog.new_revision(project_id, version, name, hour, preview=False, now=now)
                queued += 1
    return queued


def closed_hours(table: pa.Table, now: int) -> list[int]:
    """The closed hours a table's sendTime values fall in (only imports reach those)."""
    send = pc.drop_null(table.column("sendTime"))
    if len(send) == 0 or pc.min(send).as_py() + HOUR_MS > hour_floor(now):
        return []
    hours = pc.unique(pc.subtract(send, pc.modulo(send, HOUR_MS)))
    return sorted(h for h in hours.to_pylist() if h + HOUR_MS <= now)


def commit(
    store: EventStore,
    catalog: Catalog,
    project_id: int,
    ai: str,
    tables: dict[str, pa.Table],
    now: int,
    pool: ThreadPoolExecutor | None = None,
) -> int:
    """Store tables durably and re-export touched hours already exported; returns rows.

    Re-exports of closed hours are queued before the append too, so a crash between the
    append and the check after it still leaves one queued. The rows are durable once the
    append returns, so a failure of that later check is logged rather than raised: raising
    would make the client resend rows that are stored.
    """
    for data_type, table in tables.items():
        early = closed_hours(table, now)
        if early and requeue_exported(catalog, project_id, data_type, early, now):
            log.info("rows for exported hours of %s/%s: re-export queued", ai, data_type)
    touched: dict[str, list[int]] = {}
    if pool is not None and len(tables) > 1:
        # each type's files are written and fsynced at once: an SDK request's rows span up
        # to five types, and their fsyncs one after another were most of its wait
        appended = pool.map(lambda item: store.append(ai, *item), tables.items())
        for data_type, rows_per_hour in zip(tables, appended, strict=True):
            touched[data_type] = sorted(rows_per_hour)
    else:
        for data_type, table in tables.items():
            touched[data_type] = sorted(store.append(ai, data_type, table))
    for data_type, hours in touched.items():
        try:
            requeue_exported(catalog, project_id, data_type, hours, now)
        except Exception:
            log.exception("could not queue the re-export of %s/%s %s", ai, data_type, hours)
    return sum(t.num_rows for t in tables.values())


@dataclass
class _Pending:
    project_id: int
    ai: str
    tables: Tables
    done: Future[None]


class Ingestor:
    """Collects batches for up to `window_ms` (or `max_rows`) and commits them at once.

    A batch's future resolves only after its rows are in fsynced, renamed files, so a
    caller that awaits it may acknowledge. Batches of one (project, type) in a window
    become one file per hour.
    """

    def __init__(
        self,
        store: EventStore,
        catalog: Catalog,
        *,
        window_ms: float = 2.0,
        max_rows: int = 100_000,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.window_ms = window_ms
        self.max_rows = max_rows
        self.clock = clock
        self.commits = 0
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ingest-append")

    def start(self) -> None:
        """Start the writer thread (submit starts it too when needed)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="ingest-writer", daemon=True
                )
                self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Commit what is queued, then stop the writer."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is not None:
                self._queue.put(None)
        if thread is not None:
            thread.join(timeout)

    async def __aenter__(self) -> Ingestor:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    def submit(self, project_id: int, ai: str, tables: Tables) -> Future[None]:
        done: Future[None] = Future()
        if not tables:
            done.set_result(None)
            return done
        self.start()
        self._queue.put(_Pending(project_id, ai, tables, done))
        return done

    async def write(self, project_id: int, ai: str, tables: Tables) -> None:
        """Return once the rows are durable; raises what the store raised."""
        await asyncio.wrap_future(self.submit(project_id, ai, tables))

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            group = [first]
            rows = _rows(first)
            deadline = time.monotonic() + self.window_ms / 1000
            while rows < self.max_rows:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                group.append(item)
                rows += _rows(item)
            self._commit(group)
        while True:  # a stop() racing submit(): commit what is left
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self._commit([item])

    def _commit(self, group: list[_Pending]) -> None:
        self.commits += 1
        by_project: dict[tuple[int, str], list[_Pending]] = {}
        for p in group:
            by_project.setdefault((p.project_id, p.ai), []).append(p)
        for (project_id, ai), pending in by_project.items():
            per_type: dict[str, list[pa.Table | RowChunk]] = {}
            for p in pending:
                for data_type, table in p.tables.items():
                    per_type.setdefault(data_type, []).append(table)
            try:
                tables = {t: _one_table(t, ts) for t, ts in per_type.items()}
                commit(self.store, self.catalog, project_id, ai, tables, self.clock(), self._pool)
            except Exception as e:  # every waiter hears of it; none is acknowledged
                log.exception("group commit of %d batches of %s failed", len(pending), ai)
                for p in pending:
                    p.done.set_exception(e)
                continue
            for p in pending:
                p.done.set_result(None)


def _one_table(data_type: str, parts: list[pa.Table | RowChunk]) -> pa.Table:
    """The tables and row chunks (the SDK collectors') of a type as one table: the chunks'
    rows are built into a table at once."""
    chunks = [p for p in parts if isinstance(p, RowChunk)]
    tables = [p for p in parts if not isinstance(p, RowChunk)]
    if chunks:
        tables.append(build_table(data_type, chunks))
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


def _rows(p: _Pending) -> int:
    return sum(t.num_rows for t in p.tables.values())


def make_ingestor(settings: Settings, catalog: Catalog) -> Ingestor:
    """The Ingestor `serve` uses: the settings' event store and group-commit limits."""
    return Ingestor(
        open_event_store(settings),
        catalog,
        window_ms=settings.group_commit_ms,
        max_rows=settings.group_commit_rows,
    )
