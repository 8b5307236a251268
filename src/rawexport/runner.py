"""One export run: Parquet files of an hour -> sorted gzip CSV parts -> manifest, written last."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rawexport.blobs import BlobStore
from rawexport.csvsql import (
    columns,
    first_key_sample_query,
    header_line,
    keyed_lines_query,
    literal,
    order_by,
    sort_columns,
)
from rawexport.keys import export_prefix, manifest_key, part_key
from rawexport.timeutil import beijing_hour_label, now_ms
from rawexport.types import ExportResult, PartInfo
from rawexport.writer import PartWriter, feed, write_parts

# ~15-20 MB of CSV per batch: big enough to keep per-call overhead low, small enough that the
# compressor queue stays a few tens of MB.
BATCH_ROWS = 65536
# DuckDB's limit covers its buffer pool only; Arrow batches, the compressor queue, the
# interpreter and allocator slack come on top (measured ~230 MiB at 5 M rows).
DUCKDB_SHARE = 0.6
# Most CSV bytes sorted at once, as a share of DuckDB's budget: the sort needs its keys and
# working space on top of the rows, so a group must stay well below the limit to not spill.
RANGE_SHARE = 0.25
# Ranges planned per range_bytes of estimated CSV (the estimate is rough; see
# _sorted_ranges), the cap on ranges (one open file each; past it, groups grow and DuckDB
# spills within its limit), and sampled keys per range.
RANGE_SPLIT = 4
MAX_RANGES = 256
# Sorted batches queued for the compressor (~20 MB each): deep enough that DuckDB sorts the
# next group while the compressor drains the last one.
SORTED_QUEUE = 10
SAMPLE_PER_RANGE = 64
# Parquet plain bytes -> CSV bytes: numbers as text, separators, quoting (measured ~1.9).
CSV_PER_PLAIN_BYTE = 2

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?\s*", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS.update({"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40})


def parse_size(text: str) -> int:
    """Bytes of a DuckDB-style size such as `1GB`, `512MiB` or `800000000`."""
    m = _SIZE.fullmatch(text)
    if not m:
        raise ValueError(f"bad memory size {text!r}")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "b").lower()])


def _lines(reader: pa.RecordBatchReader) -> Iterator[pa.Array]:
    for batch in reader:
        yield batch.column(0)


def _rebatch(arrays: Iterable[pa.Array], rows: int) -> Iterator[pa.Array]:
    """The same lines in chunks of exactly rows rows (the last one shorter).

    The compressor sync-flushes per chunk, so chunk boundaries shape the gzip bytes; fixed
    chunks keep a rerun byte-identical whatever the file layout, DuckDB's batching or the
    key ranges (which come from a sample) were.
    """
    pending: list[pa.Array] = []
    have = 0
    for arr in arrays:
        while len(arr):
            take = min(rows - have, len(arr))
            pending.append(arr.slice(0, take))
            have += take
            arr = arr.slice(take)
            if have == rows:
                yield pending[0] if len(pending) == 1 else pa.concat_arrays(pending)
                pending, have = [], 0
    if have:
        yield pending[0] if len(pending) == 1 else pa.concat_arrays(pending)


def _connect(work: Path, duck_bytes: int, threads: int) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    con.execute(f"SET memory_limit = {literal(f'{duck_bytes}B')}")
    con.execute(f"SET threads = {int(threads)}")
    con.execute(f"SET temp_directory = {literal(str(work / 'duckdb'))}")
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET enable_progress_bar = false")
    return con


def _estimated_csv_bytes(files: list[Path]) -> int:
    """CSV size guess from Parquet metadata (plain sizes; quoting and text ints add more)."""
    total = 0
    for f in files:
        meta = pq.ParquetFile(f).metadata
        total += sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    return total * CSV_PER_PLAIN_BYTE


def _bounds(con: duckdb.DuckDBPyConnection, sql: str, ranges: int) -> list[str]:
    """ranges-1 increasing SQL literals splitting the sampled first key into equal counts."""
    sample = [row[0] for row in con.execute(sql).fetchall()]
    out: list[str] = []
    last: Any = None
    for i in range(1, ranges):
        v = sample[len(sample) * i // ranges] if sample else None
        if v is None or v == last:
            continue
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            return []  # only text and integer keys have an exact SQL literal here
        out.append(literal(v) if isinstance(v, str) else str(int(v)))
        last = v
    return out


def _range_of(key: str, bounds: list[str], lo: int, hi: int) -> str:
    """Range number of key among bounds[lo:hi] as a balanced CASE tree (log2 compares)."""
    if hi == lo:
        return str(lo)
    mid = (lo + hi) // 2
    below, above = _range_of(key, bounds, lo, mid), _range_of(key, bounds, mid + 1, hi)
    return f"CASE WHEN {key} < {bounds[mid]} THEN {below} ELSE {above} END"


class _RangeFiles:
    """Appends each batch's rows to the Arrow IPC file of their key range (a feed() sink)."""

    def __init__(self, work: Path, ranges: int) -> None:
        self.paths = [work / f"range-{i:05d}.arrow" for i in range(ranges)]
        self.writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}

    def write(self, batch: pa.RecordBatch) -> None:
        r = batch.column(batch.num_columns - 1).to_numpy()
        grouped = batch.drop_columns(["r"]).take(pa.array(np.argsort(r, kind="stable")))
        counts = np.bincount(r, minlength=len(self.paths))
        start = 0
        for i in map(int, np.flatnonzero(counts)):
            if i not in self.writers:
                self.writers[i] = pa.ipc.new_stream(str(self.paths[i]), grouped.schema)
            self.writers[i].write_batch(grouped.slice(start, int(counts[i])))
            start += int(counts[i])

    def close(self) -> None:
        for w in self.writers.values():
            w.close()

    def abort(self) -> None:
        self.close()  # the files are removed with the work directory

    def files(self) -> list[Path]:
        """The non-empty range files, in export order."""
        return [self.paths[i] for i in sorted(self.writers)]


def _split(
    con: duckdb.DuckDBPyConnection, sql: str, key: str, bounds: list[str], work: Path
) -> list[Path]:
    """Stream the unsorted keyed lines once into one Arrow IPC file per key range.

    Range i holds bounds[i-1] <= key < bounds[i]; null keys get the last range because
    the export order is NULLS LAST. Files are returned in export order, empty ones left out.
    """
    n = len(bounds) + 1
    rng = f"CASE WHEN {key} IS NULL THEN {n} ELSE {_range_of(key, bounds, 0, n - 1)} END"
    reader = con.sql(f"SELECT *, CAST({rng} AS USMALLINT) AS r FROM ({sql})").to_arrow_reader(
        BATCH_ROWS
    )
    files = _RangeFiles(work, n + 1)
    feed(reader, files)
    return files.files()


def _read(paths: list[Path]) -> Iterator[pa.RecordBatch]:
    """The batches of Arrow IPC stream files, each file deleted once read."""
    for p in paths:
        with pa.ipc.open_stream(str(p)) as stream:
            yield from stream
        p.unlink()


def _sorted_ranges(
    con: duckdb.DuckDBPyConnection, paths: list[Path], order: str, group_bytes: int
) -> Iterator[pa.Array]:
    """Sorted lines of consecutive range files, read and sorted group_bytes at a time.

    Ranges are disjoint and in key order, so sorting each group alone gives the same bytes
    as one global sort; a group small enough never spills.
    """
    i = 0
    while i < len(paths):
        group = [paths[i]]
        size = paths[i].stat().st_size
        i += 1
        while i < len(paths) and size + paths[i].stat().st_size <= group_bytes:
            size += paths[i].stat().st_size
            group.append(paths[i])
            i += 1
        with pa.ipc.open_stream(str(group[0])) as first:
            schema = first.schema
        # A stream, not a table: DuckDB copies the rows into its sort anyway, so holding
        # them in Arrow too would double the memory (and a skewed range can be large).
        con.register("range_rows", pa.RecordBatchReader.from_batches(schema, _read(group)))
        try:
            reader = con.sql(f"SELECT line FROM range_rows ORDER BY {order}").to_arrow_reader(
                BATCH_ROWS
            )
            yield from _lines(reader)
        finally:
            con.unregister("range_rows")


def _query_into(
    writer: PartWriter,
    version: str,
    name: str,
    files: list[Path],
    work: Path,
    memory_limit: str,
    threads: int,
    range_bytes: int | None = None,
) -> list[PartInfo]:
    """Sorted lines into writer: one DuckDB sort when it fits, else range-partitioned.

    DuckDB's spilling sort of the whole hour runs mostly on one core; instead the lines are
    built once (in parallel), split by ranges of the first sort key into files, and each
    range is sorted in memory and streamed to the compressor.
    """
    duck_bytes = int(parse_size(memory_limit) * DUCKDB_SHARE)
    if range_bytes is None:
        range_bytes = int(duck_bytes * RANGE_SHARE)
    con = _connect(work, duck_bytes, threads)
    try:
        order = order_by(version, name)
        keyed = keyed_lines_query(version, name, files)
        est = _estimated_csv_bytes(files)
        bounds: list[str] = []
        if est > range_bytes:
            # Over-split: the estimate is rough, and small neighbours are sorted together.
            ranges = min(MAX_RANGES, -(-est * RANGE_SPLIT // range_bytes))
            sample = first_key_sample_query(version, name, files, ranges * SAMPLE_PER_RANGE)
            bounds = _bounds(con, sample, ranges)
        if not bounds:
            reader = con.sql(f"SELECT line FROM ({keyed}) ORDER BY {order}").to_arrow_reader(
                BATCH_ROWS
            )
            return write_parts(_rebatch(_lines(reader), BATCH_ROWS), writer)
        split = work / "ranges"
        split.mkdir()
        paths = _split(con, keyed, sort_columns(version, name)[0], bounds, split)
        lines = _sorted_ranges(con, paths, order, range_bytes)
        return write_parts(_rebatch(lines, BATCH_ROWS), writer, SORTED_QUEUE)
    finally:
        con.close()


def run_export(
    *,
    files: list[Path],
    blobs: BlobStore,
    ai: str,
    version: str,
    name: str,
    hour_ms: int,
    revision: int,
    part_bytes: int,
    compress_level: int,
    tmp_dir: Path,
    memory_limit: str = "1GB",
    threads: int = 2,
    range_bytes: int | None = None,
) -> ExportResult:
    """Export one (project, version, type, hour, revision); a rerun rewrites the same keys.

    memory_limit is the budget of the whole run; DuckDB gets DUCKDB_SHARE of it and spills
    the sort to a temp directory under tmp_dir beyond that. range_bytes (default: a share
    of DuckDB's budget) is the most CSV sorted in one piece; tests set it small.
    """
    cols = columns(version, name)
    prefix = export_prefix(ai, version, name, hour_ms, revision)
    tmp_dir = Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="export-", dir=tmp_dir))
    try:
        writer = PartWriter(
            header=header_line(version, name),
            part_bytes=part_bytes,
            level=compress_level,
            tmp_dir=work,
            blobs=blobs,
            key_for=lambda n: part_key(prefix, version, ai, name, hour_ms, revision, n),
        )
        parts: list[PartInfo] = []
        if files:
            parts = _query_into(
                writer, version, name, files, work, memory_limit, threads, range_bytes
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = sum(p.rows for p in parts)
    size = sum(p.bytes for p in parts)
    manifest: dict[str, Any] = {
        "ai": ai,
        "version": version,
        "dataType": name,
        "exportHour": beijing_hour_label(hour_ms),
        "hourStartMs": hour_ms,
        "revision": revision,
        "columns": list(cols),
        "parts": [
            {
                "key": p.key,
                "part": p.part,
                "rows": p.rows,
                "bytes": p.bytes,
                "sha256": p.sha256,
                "md5": p.md5,
            }
            for p in parts
        ],
        "rows": rows,
        "bytes": size,
        "createdMs": now_ms(),
    }
    mkey = manifest_key(prefix)
    data = json.dumps(manifest, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    blobs.put_bytes(mkey, data)
    return ExportResult(prefix, mkey, parts, rows, size)
