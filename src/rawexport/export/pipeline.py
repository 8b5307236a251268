"""One export attempt: Parquet files of an hour -> sorted gzip CSV parts, planned as data and
run as tasks on an executor.

An attempt (`Attempt`: the export, its revision and attempt number, the budget) is written
in steps that are functions of their arguments alone:

- the coordinator (the thread that holds the job's lease) plans the hour's key ranges from
  its rows (`plan_bounds`); an hour that fits in memory is one `whole_task`;
- else one `split_task` per slice of the input builds the slice's lines and cuts them into
  range spill files, kept as scratch of the attempt;
- the coordinator packs the ranges into groups (`plan_groups`) and fixes where each
  group's part numbers start (`group_stride`), so that groups are independent; then
  `group_task`s sort groups and write their gzip parts.

Where tasks run is a `Runner`: `LocalRunner` (a thread of this process, scratch in a local
directory, the whole input one slice and every group one task) or `ondask.DaskRunner` (a
Dask cluster through `Client.get_executor()`, scratch in the blob store, one task per slice
and per group). Either way the parts are the same bytes, and the fence is the same
(docs/design.md, decision 9): parts go under keys of this attempt, the coordinator watches
the lease while tasks run and cancels them once it is lost, and only a commit that holds
the lease names the parts.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Executor, Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from rawexport.blobs import BlobStore
from rawexport.errors import LeaseLost
from rawexport.export.csvsql import header_line, sort_columns
from rawexport.export.keys import SCRATCH, export_prefix, manifest_key, part_key
from rawexport.export.parts import (
    GROUP_STRIDE,
    PartWriter,
    feed,
    group_stride,
    write_lanes,
    write_parts,
)
from rawexport.export.plan import (
    Slice,
    duckdb_bytes_of,
    plan_bounds,
    plan_slices,
    range_bytes_of,
    range_count,
)
from rawexport.export.rangesort import (
    BATCH_ROWS,
    Keyed,
    RangeFiles,
    RangeStats,
    group_stats,
    line_bytes,
    plan_groups,
    rebatch,
    sorted_groups,
)
from rawexport.export.reading import connect, sorted_lines, source
from rawexport.export.runners import LocalRunner, LocalWorkspace, Runner, Where, Workspace
from rawexport.export.spill import ReadBuffers, read_ranges
from rawexport.settings import Settings
from rawexport.types import ExportResult, PartInfo

log = logging.getLogger("rawexport.export")

# Sorted batches queued for the compressor (~20 MB each): deep enough that the next group is
# read and sorted while the compressor drains the last one.
SORTED_QUEUE = 6
# The same, per compressor of a group task (one per thread of the budget; see parts.Lanes):
# 4 ran no faster than 2 and held ~40 MB more per lane at the peak.
LANE_QUEUE = 2
# How often the coordinator looks at its lease while tasks run.
POLL_SECONDS = 1.0

T = TypeVar("T")


@dataclass(frozen=True)
class Attempt:
    """The export one job attempt writes, and the budget it writes it with.

    memory_limit is the budget of each task; DuckDB gets DUCKDB_SHARE of it and spills to
    its temp directory beyond that. range_bytes (default: RANGE_SHARE of the budget) is the
    most CSV sorted in one piece; tests set it small.
    """

    ai: str
    version: str
    name: str
    hour_ms: int
    revision: int
    attempt: int
    part_bytes: int
    compress_level: int
    memory_limit: str = "1GB"
    threads: int = 2
    range_bytes: int | None = None

    @classmethod
    def of(
        cls,
        settings: Settings,
        ai: str,
        version: str,
        name: str,
        hour_ms: int,
        revision: int,
        attempt: int,
    ) -> Attempt:
        return cls(
            ai,
            version,
            name,
            hour_ms,
            revision,
            attempt,
            part_bytes=settings.part_bytes,
            compress_level=settings.compress_level,
            memory_limit=settings.duckdb_memory_limit,
            threads=settings.duckdb_threads,
        )

    @property
    def prefix(self) -> str:
        return export_prefix(self.ai, self.version, self.name, self.hour_ms, self.revision)

    def part_key(self, n: int) -> str:
        return part_key(
            self.prefix,
            self.version,
            self.ai,
            self.name,
            self.hour_ms,
            self.revision,
            n,
            attempt=self.attempt,
        )

    @property
    def scratch(self) -> str:
        """Prefix of this attempt's scratch (range spill files between its tasks)."""
        return f"{SCRATCH}/{self.prefix}/a{self.attempt}/"

    @property
    def sort_bytes(self) -> int:
        return range_bytes_of(self.memory_limit, self.range_bytes)

    def result(self, parts: list[PartInfo]) -> ExportResult:
        rows = sum(p.rows for p in parts)
        size = sum(p.bytes for p in parts)
        return ExportResult(self.prefix, manifest_key(self.prefix), parts, rows, size)


def _work_dir(ws: Workspace) -> Path:
    root = Path(ws.tmp_dir)
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="export-", dir=root))


def _writer(ws: Workspace, at: Attempt, work: Path, stride: int | None = None) -> PartWriter:
    return PartWriter(
        header=header_line(at.version, at.name),
        part_bytes=at.part_bytes,
        level=at.compress_level,
        tmp_dir=work,
        blobs=ws.blobs,
        key_for=at.part_key,
        group_stride=GROUP_STRIDE if stride is None else stride,
    )


def whole_task(where: Where, at: Attempt, names: list[str]) -> list[PartInfo]:
    """An hour small enough to sort at once: its parts, numbered from 0."""
    ws = where.workspace()
    work = _work_dir(ws)
    try:
        files = ws.inputs(work, names)
        con = connect(work, duckdb_bytes_of(at.memory_limit), at.threads)
        try:
            lines = sorted_lines(con, at.version, at.name, files, at.threads)
            return write_parts(rebatch(lines, BATCH_ROWS), _writer(ws, at, work), SORTED_QUEUE)
        finally:
            con.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass(frozen=True)
class Split:
    """What a split task made: the lines' schema, and per range its scratch object and
    what the slice put in it."""

    schema: pa.Schema | None
    ranges: dict[int, tuple[str, RangeStats]]


def split_task(
    where: Where, at: Attempt, index: int, part: Slice, bounds: list[str | int]
) -> Split:
    """The lines of one slice, cut into the key ranges of bounds and kept as scratch.

    Threads build lines while this one reads (csvline releases the GIL); the order in which
    batches land in a range does not matter, the group's sort fixes it.
    """
    ws = where.workspace()
    work = _work_dir(ws)
    try:
        ranges = RangeFiles(work, bounds, Keyed(at.version, at.name))
        con = connect(work, duckdb_bytes_of(at.memory_limit), at.threads)
        try:
            files = ws.inputs(work, part.names)
            batches = source(con, at.version, at.name, files, part.row_groups)
            feed(batches, ranges, workers=max(1, at.threads))
        finally:
            con.close()
        out: dict[int, tuple[str, RangeStats]] = {}
        for r, path in ranges.range_files().items():
            key = f"{at.scratch}s{index:05d}-r{r:05d}.spill"
            ws.put_scratch(key, path)
            out[r] = (key, ranges.stats[r])
        return Split(ranges.schema, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def group_task(
    where: Where,
    at: Attempt,
    groups: list[tuple[int, list[list[str]]]],
    schema: pa.Schema,
    stride: int,
) -> list[PartInfo]:
    """Range groups (index, per range its scratch objects) sorted, each into gzip parts
    numbered from index × stride."""
    ws = where.workspace()
    work = _work_dir(ws)
    members = dict(groups)
    buffers = ReadBuffers()

    def read(g: int) -> Iterator[list[pa.RecordBatch]]:
        ranges: list[list[Path]] = []
        for r, keys in enumerate(members[g]):
            ranges.append([])
            for i, key in enumerate(keys):
                dest = work / f"g{g:05d}-{r:05d}-{i:05d}.spill"
                ws.fetch_scratch(key, dest)
                ranges[-1].append(dest)
        return read_ranges(ranges, schema, buffers)

    try:
        keys = sort_columns(at.version, at.name)
        lines = sorted_groups([g for g, _ in groups], read, keys)
        lanes = min(len(groups), max(1, at.threads))
        writers = [_writer(ws, at, work, stride) for _ in range(lanes)]
        return write_lanes(lines, writers, LANE_QUEUE)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def gather(futures: Sequence[Future[T]], lost: threading.Event) -> list[T]:
    """The futures' results, in order, once all are done.

    The first task that fails ends the wait with its error; LeaseLost once the lease is
    known lost. Either way the other tasks are cancelled (those not yet running, on a
    thread pool; on Dask, running ones too).
    """
    try:
        pending = set(futures)
        while pending:
            if lost.is_set():
                raise LeaseLost("lease lost while the export's tasks ran")
            done, pending = wait(pending, timeout=POLL_SECONDS, return_when=FIRST_EXCEPTION)
            for f in done:
                error = f.exception()
                if error is not None:
                    raise error
        return [f.result() for f in futures]
    except BaseException:
        for f in futures:
            f.cancel()
        raise


def _plan(ws: Workspace, at: Attempt, files: Sequence[Path]) -> list[str | int]:
    count = range_count(files, at.sort_bytes)
    if not count:
        return []  # one sort: no sample, so no DuckDB to open
    work = _work_dir(ws)
    try:
        con = connect(work, duckdb_bytes_of(at.memory_limit), at.threads)
        try:
            return plan_bounds(con, at.version, at.name, files, count)
        finally:
            con.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _chunks(items: list[T], size: int | None) -> list[list[T]]:
    if size is None:
        return [items] if items else []
    return [items[i : i + size] for i in range(0, len(items), size)]


def run_attempt(
    at: Attempt,
    files: Sequence[Path],
    runner: Runner,
    lost: threading.Event,
    keys: Sequence[str] | None = None,
) -> ExportResult:
    """Write the attempt's parts, running its tasks on runner; the manifest is the
    committer's (see manifest_bytes). Another run of the same rows writes the same bytes.

    files: the hour's event files, here (the plan reads their metadata); keys: their
    objects in an object event store, which tasks of a runner that fetches its inputs
    open instead. A lease known lost (lost set) ends the run with LeaseLost.
    """
    if not files:
        return at.result([])
    names = list(keys) if keys is not None and runner.fetches_inputs else list(map(str, files))
    name_of = dict(zip(map(str, files), names, strict=True))
    ws = runner.where.workspace()  # the coordinator's own
    bounds = _plan(ws, at, files)
    try:
        with runner.executor() as pool:
            if not bounds:
                whole = pool.submit(whole_task, runner.where, at, names)
                return at.result(gather([whole], lost)[0])
            return at.result(_ranged(at, files, runner, pool, bounds, lost, name_of.__getitem__))
    finally:
        if bounds:
            ws.clear_scratch(at.scratch)


def _ranged(
    at: Attempt,
    files: Sequence[Path],
    runner: Runner,
    pool: Executor,
    bounds: list[str | int],
    lost: threading.Event,
    name_of: Callable[[str], str],
) -> list[PartInfo]:
    rows = sum(pq.read_metadata(f).num_rows for f in files)
    slices = [
        Slice(tuple(map(name_of, s.names)), s.row_groups)
        for s in plan_slices(at.version, files, runner.slice_rows(rows))
    ]
    splits = gather(
        [pool.submit(split_task, runner.where, at, i, s, bounds) for i, s in enumerate(slices)],
        lost,
    )
    schema = next((s.schema for s in splits if s.schema is not None), None)
    if schema is None:
        return []
    stats: dict[int, RangeStats] = {}
    scratch: dict[int, list[str]] = {}
    for split in splits:  # in slice order
        for r, (key, got) in split.ranges.items():
            stats[r] = stats.get(r, RangeStats(0, 0, 0)).add(got)
            scratch.setdefault(r, []).append(key)
    groups = plan_groups(line_bytes(stats), at.sort_bytes)
    totals = group_stats(stats, groups)
    stride = group_stride(
        [(g.rows, g.bytes, g.longest) for g in totals],
        header_line(at.version, at.name),
        at.part_bytes,
        at.compress_level,
    )
    log.info(
        "export %s/%s/%s %s: %d slices, %d ranges, %d groups",
        at.ai,
        at.version,
        at.name,
        at.hour_ms,
        len(slices),
        len(stats),
        len(groups),
    )
    work = [(g, [scratch[r] for r in members]) for g, members in enumerate(groups)]
    # The smallest group first: its read and sort are what the compressors wait for at the
    # start (groups are independent, so the order moves no byte).
    first = min(range(len(work)), key=lambda g: totals[g].bytes)
    work.insert(0, work.pop(first))
    tasks = [
        pool.submit(group_task, runner.where, at, chunk, schema, stride)
        for chunk in _chunks(work, runner.groups_per_task(len(work)))
    ]
    return sorted((p for parts in gather(tasks, lost) for p in parts), key=lambda p: p.part)


def run_here(at: Attempt, files: Sequence[Path], blobs: BlobStore, tmp_dir: Path) -> ExportResult:
    """An attempt run in this process with no lease to watch (tools, tests, benchmarks)."""
    runner = LocalRunner(LocalWorkspace(blobs, Path(tmp_dir)))
    return run_attempt(at, files, runner, threading.Event())
