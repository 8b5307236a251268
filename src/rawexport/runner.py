"""One export run: Parquet files of an hour -> sorted gzip CSV parts -> manifest, written last."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from rawexport.blobs import BlobStore
from rawexport.csvsql import columns, export_query, header_line, literal
from rawexport.keys import export_prefix, manifest_key, part_key
from rawexport.timeutil import beijing_hour_label, now_ms
from rawexport.types import ExportResult, PartInfo
from rawexport.writer import PartWriter, write_parts

# ~15-20 MB of CSV per batch: big enough to keep per-call overhead low, small enough that the
# compressor queue stays a few tens of MB.
BATCH_ROWS = 65536
# DuckDB's limit covers its buffer pool only; Arrow batches, the compressor queue, the
# interpreter and allocator slack come on top (measured ~230 MiB at 5 M rows).
DUCKDB_SHARE = 0.6

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


def _query_into(
    writer: PartWriter, sql: str, work: Path, memory_limit: str, threads: int
) -> list[PartInfo]:
    con = duckdb.connect(":memory:")
    try:
        duck_bytes = int(parse_size(memory_limit) * DUCKDB_SHARE)
        con.execute(f"SET memory_limit = {literal(f'{duck_bytes}B')}")
        con.execute(f"SET threads = {int(threads)}")
        con.execute(f"SET temp_directory = {literal(str(work / 'duckdb'))}")
        con.execute("SET preserve_insertion_order = false")
        con.execute("SET enable_progress_bar = false")
        reader = con.sql(sql).to_arrow_reader(BATCH_ROWS)
        return write_parts(_lines(reader), writer)
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
) -> ExportResult:
    """Export one (project, version, type, hour, revision); a rerun rewrites the same keys.

    memory_limit is the budget of the whole run; DuckDB gets DUCKDB_SHARE of it and spills
    the sort to a temp directory under tmp_dir beyond that.
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
            sql = export_query(version, name, files)
            parts = _query_into(writer, sql, work, memory_limit, threads)
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
