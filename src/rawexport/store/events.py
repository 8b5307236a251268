"""What an event file is: its Arrow schema per data type, maps as text, rows conformed to
the schema and split by sendTime hour, and the Parquet it is written as (durably)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rawexport.fsutil import fsync_path
from rawexport.schema import DATA_TYPES, ColumnType
from rawexport.timeutil import HOUR_MS

_ARROW_TYPES: dict[ColumnType, pa.DataType] = {
    "string": pa.string(),
    "bigint": pa.int64(),
    "double": pa.float64(),
    "map": pa.string(),
}
_PARTITION = re.compile(r"\d{10}")
SAFE_NAME = re.compile(r"[A-Za-z0-9_-]+")


def arrow_schema(data_type: str) -> pa.Schema:
    """The store schema of a data type; map columns hold compact JSON object text."""
    try:
        columns = DATA_TYPES[data_type].store_columns
    except KeyError:
        raise ValueError(f"unknown data type {data_type!r}") from None
    return pa.schema([pa.field(c.name, _ARROW_TYPES[c.type], nullable=True) for c in columns])


def encode_map(value: Mapping[str, str] | None) -> str | None:
    """A map column value as stored and exported: compact JSON, non-ASCII kept."""
    if value is None:
        return None
    return json.dumps(dict(value), separators=(",", ":"), ensure_ascii=False)


def conform(data_type: str, table: pa.Table) -> pa.Table:
    """table cast to arrow_schema(data_type): missing columns become nulls, order fixed."""
    schema = arrow_schema(data_type)
    names = table.column_names
    unknown = sorted(set(names) - set(schema.names))
    if unknown:
        raise ValueError(f"unknown columns for {data_type}: {', '.join(unknown)}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate columns in {data_type} table")
    arrays: list[pa.ChunkedArray | pa.Array] = []
    for field in schema:
        if field.name not in names:
            arrays.append(pa.nulls(table.num_rows, field.type))
            continue
        column = table.column(field.name)
        if column.type != field.type:
            try:
                column = pc.cast(column, field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise ValueError(
                    f"{data_type}.{field.name}: cannot store {column.type} as {field.type}: {e}"
                ) from None
        arrays.append(column)
    return pa.Table.from_arrays(arrays, schema=schema)


def partition_hour(name: str) -> int | None:
    """hour_ms of a partition directory name (UTC yyyyMMddHH), None for anything else."""
    if not _PARTITION.fullmatch(name):
        return None
    try:
        start = datetime.strptime(name, "%Y%m%d%H").replace(tzinfo=UTC)
    except ValueError:
        return None
    return int(start.timestamp()) * 1000


def read_journal(path: Path) -> tuple[str, list[str]] | None:
    """(merged file name, input names) of a compaction journal; None if unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return str(data["merged"]), [str(n) for n in data["inputs"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


fsync_dir = fsync_path


def by_hour(data_type: str, table: pa.Table) -> dict[int, pa.Table]:
    """The rows (conformed to the type's schema) grouped by their sendTime hour."""
    table = conform(data_type, table)
    if table.num_rows == 0:
        return {}
    send = table.column("sendTime")
    if send.null_count:
        raise ValueError(f"{send.null_count} {data_type} rows have no sendTime")
    send_ms = send.to_numpy()
    hour_of_row = send_ms - send_ms % HOUR_MS
    groups: dict[int, pa.Table] = {}
    if hour_of_row.min() == hour_of_row.max():
        groups[int(hour_of_row[0])] = table
    else:
        order = np.argsort(hour_of_row, kind="stable")
        hours, starts = np.unique(hour_of_row[order], return_index=True)
        for hour, lo, hi in zip(hours, starts, [*starts[1:], len(order)], strict=True):
            groups[int(hour)] = table.take(order[lo:hi])
    return groups


# Ingest files below this many rows are written with snappy and no dictionaries: their
# cost is mostly fixed per column chunk, where zstd and dictionary building took 3x the
# time of the whole file (3.6 ms against 1.3 for a commit of 450 web SDK events across
# 4 types); compaction rewrites them with zstd. Larger tables (imports, busy commits) get
# zstd level 1 and dictionaries, which make them half the size and quick to export.
SMALL_FILE_ROWS = 4096


def write_event_file(table: pa.Table, path: Path) -> None:
    """table as a Parquet file at path, fsynced."""
    # Min/max of random ids and free text help no reader and cost a fifth of the write.
    stats_columns = [f.name for f in table.schema if f.type != pa.string()]
    small = table.num_rows < SMALL_FILE_ROWS
    # Encoded into memory, then written at once: Parquet written to a Python file calls
    # back into Python (and waits for the GIL) for each of its many writes, which a busy
    # event loop holds for up to the switch interval each time (a collector's commit took
    # 30 ms, not 24, under load).
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        compression="snappy" if small else "zstd",
        compression_level=None if small else 1,
        use_dictionary=not small,
        write_statistics=stats_columns,
    )
    data = sink.getvalue()
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
