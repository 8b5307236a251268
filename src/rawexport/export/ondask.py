"""Export jobs on a Dask cluster (`dask_address`): a big hour's range groups as tasks.

The coordinator is the exporter thread that claimed the job; it keeps the job's lease and
commits. It plans the hour's key ranges (`plan_bounds`, from the rows alone), then submits
one split task per slice of the hour's input (lines built and cut into range spill files,
stored as scratch objects under `_work/` in the blob store), then one task per range group
(sorted and written as gzip parts under this attempt's keys, numbered from group × a
stride computed from the groups' sizes), exactly as `run_export` does the same steps in
one process, so the parts are byte-identical. A small hour is one task running `run_export` itself.

Every task is a function of its arguments: a task lost with its worker is run again by
Dask on another worker and writes the same keys with the same bytes, and nothing is linked
before the coordinator's commit, which needs the lease. Workers read the event files by the
paths the coordinator lists (one host, or a file system shared by all) and open the blob
store from `Place` (its URL and the usual AWS variables).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rawexport.blobs import BlobStore
from rawexport.blobs.stores import open_blob_store
from rawexport.catalog import LeaseLost
from rawexport.errors import RawexportError
from rawexport.export.csvsql import fields_query, header_line
from rawexport.export.keys import SCRATCH, export_prefix, manifest_key, part_key
from rawexport.export.parts import PartWriter, feed, group_stride, write_parts
from rawexport.export.rangesort import (
    BATCH_ROWS,
    Keyed,
    RangeFiles,
    RangeStats,
    group_stats,
    line_bytes,
    plan_groups,
    read_spills,
    sorted_group_lines,
)
from rawexport.export.runner import (
    DUCKDB_SHARE,
    SORTED_QUEUE,
    _connect,
    _store_batches,
    parse_size,
    plan_bounds,
    range_bytes_of,
    run_export,
)
from rawexport.settings import Settings
from rawexport.types import ExportResult, PartInfo

log = logging.getLogger("rawexport.dask")

# Rows of input one split task reads (whole row groups; v1 reads whole files).
SLICE_ROWS = 1_000_000
# How often the coordinator looks at its lease while tasks run.
POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Place:
    """What a worker needs to do an export's work: the blob store and the job's budget."""

    blobs_url: str
    exports_dir: str
    s3_endpoint_url: str
    s3_region: str
    tmp_dir: str
    memory_limit: str
    threads: int
    part_bytes: int
    compress_level: int
    events_url: str = ""

    @classmethod
    def of(cls, settings: Settings) -> Place:
        return cls(
            events_url=settings.events_url if settings.events_url.startswith("s3://") else "",
            blobs_url=settings.blobs_url,
            exports_dir=str(settings.exports_dir),
            s3_endpoint_url=settings.s3_endpoint_url,
            s3_region=settings.s3_region,
            tmp_dir=str(settings.tmp_dir),
            memory_limit=settings.duckdb_memory_limit,
            threads=settings.duckdb_threads,
            part_bytes=settings.part_bytes,
            compress_level=settings.compress_level,
        )


_stores: dict[Place, BlobStore] = {}
_stores_lock = threading.Lock()


def blobs_of(place: Place) -> BlobStore:
    """The blob store of place, opened once per worker process."""
    with _stores_lock:
        if place not in _stores:
            _stores[place] = open_blob_store(
                place.blobs_url,
                Path(place.exports_dir),
                endpoint_url=place.s3_endpoint_url,
                region=place.s3_region,
            )
        return _stores[place]


def inputs(place: Place, work: Path, names: Sequence[str]) -> list[Path]:
    """Local paths of a task's input files: the paths themselves, or, with events on an
    object store (names are then keys), copies fetched into work."""
    if not place.events_url:
        return [Path(n) for n in names]
    events = open_blob_store(
        place.events_url,
        Path(place.tmp_dir),
        endpoint_url=place.s3_endpoint_url,
        region=place.s3_region,
    )
    out = []
    for i, key in enumerate(names):
        dest = work / f"event-{i:05d}.parquet"
        events.fetch(key, dest)
        out.append(dest)
    return out


@dataclass(frozen=True)
class Hour:
    """The export one job attempt writes."""

    ai: str
    version: str
    name: str
    hour_ms: int
    revision: int
    attempt: int

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
        return f"{SCRATCH}/{self.prefix}/a{self.attempt}/"


@dataclass(frozen=True)
class Slice:
    """Input of one split task: a file, or some of its row groups (v2)."""

    path: str
    row_groups: tuple[int, ...] | None = None


def plan_slices(version: str, files: Sequence[Path], slice_rows: int = SLICE_ROWS) -> list[Slice]:
    """The hour's input cut into slices of about slice_rows rows (v1: whole files)."""
    out: list[Slice] = []
    for f in files:
        meta = pq.read_metadata(f)
        if version != "v2" or meta.num_rows <= slice_rows:
            out.append(Slice(str(f)))
            continue
        group: list[int] = []
        rows = 0
        for g in range(meta.num_row_groups):
            group.append(g)
            rows += meta.row_group(g).num_rows
            if rows >= slice_rows:
                out.append(Slice(str(f), tuple(group)))
                group, rows = [], 0
        if group:
            out.append(Slice(str(f), tuple(group)))
    return out


def _work_dir(place: Place) -> Path:
    root = Path(place.tmp_dir)
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="dask-", dir=root))


def whole_task(
    place: Place, hour: Hour, files: list[str], range_bytes: int | None = None
) -> ExportResult:
    """An hour small enough to sort at once: the whole export, as in one process."""
    work = _work_dir(place)
    try:
        return run_export(
            files=inputs(place, work, files),
            blobs=blobs_of(place),
            ai=hour.ai,
            version=hour.version,
            name=hour.name,
            hour_ms=hour.hour_ms,
            revision=hour.revision,
            attempt=hour.attempt,
            part_bytes=place.part_bytes,
            compress_level=place.compress_level,
            tmp_dir=Path(place.tmp_dir),
            memory_limit=place.memory_limit,
            threads=place.threads,
            range_bytes=range_bytes,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def split_task(
    place: Place, hour: Hour, index: int, part: Slice, bounds: list[str | int]
) -> tuple[pa.Schema | None, dict[int, tuple[str, RangeStats]]]:
    """Lines of one slice cut into key ranges and stored as scratch objects.

    Returns the lines' schema and {range: (scratch key, what the slice put in it)}.
    """
    blobs = blobs_of(place)
    work = _work_dir(place)
    try:
        keyed = Keyed(hour.version, hour.name)
        ranges = RangeFiles(work, bounds, keyed)
        budget = parse_size(place.memory_limit)
        con = _connect(work, int(budget * DUCKDB_SHARE), place.threads)
        try:
            source: Any
            (path,) = inputs(place, work, [part.path])
            if hour.version == "v2":
                rgs = list(part.row_groups) if part.row_groups is not None else None
                source = _store_batches(hour.version, hour.name, [path], rgs)
            else:
                query = fields_query(hour.version, hour.name, [path])
                source = con.sql(query).to_arrow_reader(BATCH_ROWS)
            feed(source, ranges, workers=max(1, place.threads))
        finally:
            con.close()
        out: dict[int, tuple[str, RangeStats]] = {}
        for r, path in ranges.range_files().items():
            key = f"{hour.scratch}s{index:05d}-r{r:05d}.spill"
            blobs.put(key, path)
            out[r] = (key, ranges.stats[r])
        return ranges.schema, out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def group_task(
    place: Place, hour: Hour, group: int, keys: list[str], schema: pa.Schema, stride: int
) -> list[PartInfo]:
    """One range group: its scratch objects sorted into gzip parts of its own."""
    blobs = blobs_of(place)
    work = _work_dir(place)
    try:
        paths = []
        for i, key in enumerate(keys):
            dest = work / f"in-{i:05d}.spill"
            blobs.fetch(key, dest)
            paths.append(dest)
        batches = read_spills(paths, schema)
        budget = parse_size(place.memory_limit)
        con = _connect(work, int(budget * DUCKDB_SHARE), place.threads)
        try:
            writer = PartWriter(
                header=header_line(hour.version, hour.name),
                part_bytes=place.part_bytes,
                level=place.compress_level,
                tmp_dir=work,
                blobs=blobs,
                key_for=hour.part_key,
                group_stride=stride,
            )
            keyed = Keyed(hour.version, hour.name)
            lines = sorted_group_lines(con, batches, keyed.keys, group)
            return write_parts(lines, writer, SORTED_QUEUE)
        finally:
            con.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


class DaskExecutor:
    """Runs export attempts on the Dask cluster at `address` (one client per process)."""

    def __init__(self, settings: Settings, address: str | None = None) -> None:
        self.settings = settings
        self.address = address or settings.dask_address
        self._client: Any = None
        self._lock = threading.Lock()

    def client(self) -> Any:
        from distributed import Client

        with self._lock:
            if self._client is None:
                self._client = Client(  # type: ignore[no-untyped-call]
                    self.address, timeout=self.settings.dask_timeout, set_as_default=False
                )
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _wait(self, futures: list[Any], lost: threading.Event) -> list[Any]:
        """The futures' results; LeaseLost (tasks cancelled) once the lease is gone.

        A failed task ends the wait at once (its error is raised); the others are cancelled.
        """
        client = self.client()
        try:
            while not all(f.done() for f in futures):
                if any(f.status == "error" for f in futures):
                    break
                if lost.wait(POLL_SECONDS):
                    raise LeaseLost("lease lost while the export ran on Dask")
            return list(client.gather(futures))
        except BaseException:
            client.cancel(futures)
            raise

    def run(
        self,
        *,
        files: list[Path],
        hour: Hour,
        lost: threading.Event,
        range_bytes: int | None = None,
        keys: list[str] | None = None,
    ) -> ExportResult:
        """Export the hour's files on the cluster; the same parts as run_export. keys: the
        files' objects in an object event store (workers fetch them; files are local copies
        for planning)."""
        settings = self.settings
        place = Place.of(settings)
        client = self.client()
        range_bytes = range_bytes_of(settings.duckdb_memory_limit, range_bytes)
        bounds: list[str | int] = []
        if files:
            work = _work_dir(place)
            budget = parse_size(settings.duckdb_memory_limit)
            con = _connect(work, int(budget * DUCKDB_SHARE), settings.duckdb_threads)
            try:
                bounds = plan_bounds(con, hour.version, hour.name, files, range_bytes)
            finally:
                con.close()
                shutil.rmtree(work, ignore_errors=True)
        if not bounds:
            names = keys if keys is not None else [str(f) for f in files]
            whole = client.submit(whole_task, place, hour, names, range_bytes, pure=False)
            result: ExportResult = self._wait([whole], lost)[0]
            return result
        blobs = blobs_of(place)
        try:
            slices = plan_slices(hour.version, files)
            if keys is not None:  # the same slices, named by their objects
                by_path = dict(zip(map(str, files), keys, strict=True))
                slices = [Slice(by_path[s.path], s.row_groups) for s in slices]
            split = [
                client.submit(split_task, place, hour, i, s, bounds, pure=False)
                for i, s in enumerate(slices)
            ]
            outs: list[tuple[pa.Schema | None, dict[int, tuple[str, RangeStats]]]]
            outs = self._wait(split, lost)
            schema = next((s for s, _ in outs if s is not None), None)
            if schema is None:
                return ExportResult(hour.prefix, manifest_key(hour.prefix), [], 0, 0)
            stats: dict[int, RangeStats] = {}
            range_keys: dict[int, list[str]] = {}
            for _, ranges in outs:  # in slice order, like one process's spill files
                for r, (key, got) in ranges.items():
                    stats[r] = stats.get(r, RangeStats(0, 0, 0)).add(got)
                    range_keys.setdefault(r, []).append(key)
            groups = plan_groups(line_bytes(stats), range_bytes)
            stride = group_stride(
                [(g.rows, g.bytes, g.longest) for g in group_stats(stats, groups)],
                header_line(hour.version, hour.name),
                settings.part_bytes,
                settings.compress_level,
            )
            log.info(
                "job %s/%s %s on dask: %d slices, %d ranges, %d groups",
                hour.ai,
                hour.name,
                hour.hour_ms,
                len(slices),
                len(stats),
                len(groups),
            )
            tasks = [
                client.submit(
                    group_task,
                    place,
                    hour,
                    g,
                    [k for r in members for k in range_keys[r]],
                    schema,
                    stride,
                    pure=False,
                )
                for g, members in enumerate(groups)
            ]
            parts = [p for group_parts in self._wait(tasks, lost) for p in group_parts]
        finally:
            for info in blobs.list(hour.scratch):
                blobs.delete(info.key)
        rows = sum(p.rows for p in parts)
        size = sum(p.bytes for p in parts)
        return ExportResult(hour.prefix, manifest_key(hour.prefix), parts, rows, size)


class DaskUnusable(RawexportError):
    """The Dask cluster of dask_address cannot run exports; the message says what to fix."""


def worker_probe(place: Place, events_dir: str) -> str:
    """Run on a worker: can it import this rawexport, open the blob store, see the events?"""
    import rawexport

    blobs_of(place).list(f"{SCRATCH}/probe/")
    if not place.events_url and not Path(events_dir).is_dir():
        raise DaskUnusable(
            f"a Dask worker cannot see the event directory {events_dir}; run workers on "
            "the same host or a shared file system"
        )
    return str(getattr(rawexport, "__version__", "?"))


def probe(settings: Settings, timeout: float = 10.0) -> str:
    """What `rawexport check` says of the Dask cluster; DaskUnusable when it cannot work."""
    from distributed import Client

    address = settings.dask_address
    try:
        client = Client(  # type: ignore[no-untyped-call]
            address, timeout=min(timeout, settings.dask_timeout), set_as_default=False
        )
    except (OSError, TimeoutError, ValueError) as e:
        raise DaskUnusable(
            f"cannot reach the Dask scheduler at {address} ({type(e).__name__}: {e}); "
            f"start `dask scheduler` there or fix dask_address"
        ) from None
    try:
        workers = client.scheduler_info().get("workers", {})
        if not workers:
            raise DaskUnusable(
                f"no Dask workers are connected to {address}; start `dask worker {address}`"
            )
        run = client.submit(worker_probe, Place.of(settings), str(settings.events_dir), pure=False)
        try:
            version = run.result(timeout=timeout * 3)
        except DaskUnusable:
            raise
        except Exception as e:
            raise DaskUnusable(
                f"a probe task failed on a Dask worker ({type(e).__name__}: {e}); the "
                "workers need this rawexport installed and the storage settings' access"
            ) from None
        return f"scheduler {address}, {len(workers)} workers, probe task ran (rawexport {version})"
    finally:
        client.close()  # type: ignore[no-untyped-call]
