"""One export run: Parquet files of an hour -> sorted gzip CSV parts; the manifest they make."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from rawexport.blobs import BlobStore
from rawexport.export.csvsql import (
    columns,
    fields_query,
    header_line,
    key_sample_query,
    literal,
    sort_keys,
    source_type,
)
from rawexport.export.keys import export_prefix, manifest_key, part_key
from rawexport.export.parts import PartWriter, feed, group_stride, write_parts
from rawexport.export.rangesort import (
    BATCH_ROWS,
    Collect,
    Keyed,
    RangeFiles,
    group_stats,
    line_bytes,
    plan_groups,
    rebatch,
    sort_group,
    sorted_groups,
)
from rawexport.store.events import arrow_schema
from rawexport.timeutil import beijing_hour_label
from rawexport.types import ExportResult, PartInfo

# DuckDB's limit covers its buffer pool only (Parquet reads and the sort of keys); the lines
# of a group (held twice while they are put in order), the compressor queue, the interpreter
# and allocator slack come on top.
DUCKDB_SHARE = 0.4
# Most CSV bytes sorted at once, as a share of the budget: a group is held while the next
# one is read, and its lines are gathered into order.
RANGE_SHARE = 0.15
# Ranges planned per range_bytes of estimated CSV (the estimate is rough; see
# plan_groups), the cap on ranges (one open file each; past it, groups grow), and sampled
# keys per range.
RANGE_SPLIT = 4
MAX_RANGES = 256
# Sorted batches queued for the compressor (~20 MB each): deep enough that the next group is
# read and sorted while the compressor drains the last one.
SORTED_QUEUE = 6
SAMPLE_PER_RANGE = 64
# Largest (compressed) dictionary page of a column read as an Arrow dictionary.
DICTIONARY_PAGE_BYTES = 128 << 10
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


def range_bytes_of(memory_limit: str, range_bytes: int | None) -> int:
    """The most CSV sorted in one piece: RANGE_SHARE of the job's budget unless given."""
    return int(parse_size(memory_limit) * RANGE_SHARE) if range_bytes is None else range_bytes


def plan_bounds(
    con: duckdb.DuckDBPyConnection,
    version: str,
    name: str,
    files: list[Path],
    range_bytes: int,
) -> list[str | int]:
    """Bounds of the first sort key splitting an hour too big to sort at once ([] if not).

    A pure function of the hour's rows (not of how they lie in files): the size estimate
    and row count come from Parquet metadata and the sample takes the rows whose key hash
    falls in a fixed residue class, so a cluster and one machine plan the same ranges.
    """
    est = _estimated_csv_bytes(files)
    if est <= range_bytes:
        return []
    # Over-split: the estimate is rough, and small neighbours are sorted together.
    count = min(MAX_RANGES, -(-est * RANGE_SPLIT // range_bytes))
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    every = max(1, rows // (count * SAMPLE_PER_RANGE))
    sample = [
        row[0] for row in con.execute(key_sample_query(version, name, files, every)).fetchall()
    ]
    out: list[str | int] = []
    last: Any = None
    for i in range(1, count):
        v = sample[len(sample) * i // count] if sample else None
        if v is None or v == last:
            continue
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            return []  # only text and integer keys are split into ranges
        out.append(v)
        last = v
    return out


def _dictionary_columns(pf: pq.ParquetFile, names: list[str]) -> list[str]:
    """Text columns whose every row group is dictionary-encoded with a small dictionary.

    Read as Arrow dictionaries, their values are decoded and quoted once per entry instead
    of once per row; a column whose dictionary overflowed (the writer then falls back to
    plain pages) is read as plain text.
    """
    meta = pf.metadata
    index = {meta.schema.column(i).path: i for i in range(meta.num_columns)}
    out = []
    for name in names:
        i = index.get(name)
        if i is None or meta.num_row_groups == 0:
            continue
        chunks = [meta.row_group(g).column(i) for g in range(meta.num_row_groups)]
        if all(
            c.has_dictionary_page
            and c.dictionary_page_offset is not None
            and c.data_page_offset - c.dictionary_page_offset <= DICTIONARY_PAGE_BYTES
            for c in chunks
        ):
            out.append(name)
    return out


def _store_batches(
    version: str, name: str, files: list[Path], row_groups: list[int] | None = None
) -> Iterator[pa.RecordBatch]:
    """Batches of (f0..., k0...) read from the store's Parquet files with pyarrow (v2).

    A v2 export writes the stored columns as they are, so no SQL is needed: small-dictionary
    columns stay dictionary-encoded and numbers are formatted by csvline. Columns a file
    lacks are nulls (as DuckDB's union_by_name). row_groups (one file only): read just those.
    """
    fields = list(columns(version, name))
    keys = sort_keys(version, name)
    types = {f.name: f.type for f in arrow_schema(source_type(version, name))}
    wanted = list(dict.fromkeys([*fields, *keys]))
    out_names = [f"f{i}" for i in range(len(fields))] + [f"k{i}" for i in range(len(keys))]
    for path in files:
        pf = pq.ParquetFile(path)
        present = [c for c in wanted if c in pf.schema_arrow.names]
        strings = [c for c in present if pa.types.is_string(types[c])]
        pf = pq.ParquetFile(path, read_dictionary=_dictionary_columns(pf, strings))
        batches = pf.iter_batches(
            batch_size=BATCH_ROWS, row_groups=row_groups, columns=present, use_threads=False
        )
        for batch in batches:
            n = batch.num_rows
            by_name = {c: batch.column(i) for i, c in enumerate(batch.schema.names)}
            arrays = [by_name.get(c, pa.nulls(n, types[c])) for c in [*fields, *keys]]
            yield pa.RecordBatch.from_arrays(arrays, out_names)


def _source(
    con: duckdb.DuckDBPyConnection, version: str, name: str, files: list[Path]
) -> Iterable[pa.RecordBatch]:
    """Unsorted (f0..., k0...) batches of an export: v2 straight from Parquet, v1 by SQL."""
    if version == "v2":
        return _store_batches(version, name, files)
    reader: Iterable[pa.RecordBatch] = con.sql(fields_query(version, name, files)).to_arrow_reader(
        BATCH_ROWS
    )
    return reader


def sorted_lines(
    con: duckdb.DuckDBPyConnection,
    version: str,
    name: str,
    files: list[Path],
    threads: int = 2,
) -> Iterator[pa.Array]:
    """Every line of files in export order, all held in memory (for hours that fit)."""
    keyed = Keyed(version, name)
    sink = Collect(keyed)
    feed(_source(con, version, name, files), sink, workers=max(1, threads))
    yield from sort_group(con, sink.batches, keyed.keys)


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
    """Sorted lines into writer: sorted in memory when they fit, else range-partitioned.

    DuckDB reads the rows (in parallel) while a second thread builds their lines; a big
    hour's lines are split by ranges of the first sort key into files, and each group of
    ranges is sorted in memory and streamed to the compressor.
    """
    range_bytes = range_bytes_of(memory_limit, range_bytes)
    con = _connect(work, int(parse_size(memory_limit) * DUCKDB_SHARE), threads)
    try:
        keyed = Keyed(version, name)
        bounds = plan_bounds(con, version, name, files, range_bytes)
        if not bounds:
            lines = sorted_lines(con, version, name, files, threads)
            return write_parts(rebatch(lines, BATCH_ROWS), writer, SORTED_QUEUE)
        split = work / "ranges"
        split.mkdir()
        ranges = RangeFiles(split, bounds, keyed)
        # threads build lines while this one reads (csvline releases the GIL); the order
        # of built batches does not matter, the sort after them fixes it.
        feed(_source(con, version, name, files), ranges, workers=max(1, threads))
        if ranges.schema is None:
            return []
        groups = plan_groups(line_bytes(ranges.stats), range_bytes)
        stats = group_stats(ranges.stats, groups)
        writer.group_stride = group_stride(
            [(g.rows, g.bytes, g.longest) for g in stats],
            writer.header,
            writer.part_bytes,
            writer.level,
        )
        lines = sorted_groups(con, ranges.range_files(), groups, ranges.schema, keyed.keys)
        return write_parts(lines, writer, SORTED_QUEUE)
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
    attempt: int,
    part_bytes: int,
    compress_level: int,
    tmp_dir: Path,
    memory_limit: str = "1GB",
    threads: int = 2,
    range_bytes: int | None = None,
) -> ExportResult:
    """Write the parts of one (project, version, type, hour, revision) under this attempt's
    keys; the manifest is the committer's (see manifest_bytes). A rerun writes the same bytes.

    memory_limit is the budget of the whole run; DuckDB gets DUCKDB_SHARE of it and spills
    to a temp directory under tmp_dir beyond that. range_bytes (default: RANGE_SHARE of the
    budget) is the most CSV sorted in one piece; tests set it small.
    """
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
            key_for=lambda n: part_key(
                prefix, version, ai, name, hour_ms, revision, n, attempt=attempt
            ),
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
    return ExportResult(prefix, manifest_key(prefix), parts, rows, size)


def manifest_bytes(
    result: ExportResult,
    *,
    ai: str,
    version: str,
    name: str,
    hour_ms: int,
    revision: int,
    created_ms: int,
) -> bytes:
    """The `_manifest.json` of a committed revision: a pure function of what the catalog
    commits (created_ms is the commit time), so writing it again writes the same bytes."""
    manifest: dict[str, Any] = {
        "ai": ai,
        "version": version,
        "dataType": name,
        "exportHour": beijing_hour_label(hour_ms),
        "hourStartMs": hour_ms,
        "revision": revision,
        "columns": list(columns(version, name)),
        "parts": [
            {
                "key": p.key,
                "part": p.part,
                "rows": p.rows,
                "bytes": p.bytes,
                "sha256": p.sha256,
                "md5": p.md5,
            }
            for p in result.files
        ],
        "rows": result.rows,
        "bytes": result.bytes,
        "createdMs": created_ms,
    }
    return json.dumps(manifest, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
