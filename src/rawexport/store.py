"""The event store: Parquet files in a local directory, partitioned by project / type / UTC hour."""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rawexport.schema import DATA_TYPES, ColumnType
from rawexport.timeutil import HOUR_MS, utc_partition

_ARROW_TYPES: dict[ColumnType, pa.DataType] = {
    "string": pa.string(),
    "bigint": pa.int64(),
    "double": pa.float64(),
    "map": pa.string(),
}
_PARTITION = re.compile(r"\d{10}")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]+")


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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _makedirs(path: Path) -> None:
    """mkdir -p that fsyncs each new directory's parent, so the entry survives a crash."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir(exist_ok=True)
        _fsync_dir(d.parent)


class EventStore:
    """Files {root}/{ai}/{data_type}/{UTC yyyyMMddHH}/{uuid hex}.parquet: one per append, hour."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def type_dir(self, ai: str, data_type: str) -> Path:
        if not _SAFE_NAME.fullmatch(ai):
            raise ValueError(f"bad project id {ai!r}")
        if data_type not in DATA_TYPES:
            raise ValueError(f"unknown data type {data_type!r}")
        return self.root / ai / data_type

    def hour_dir(self, ai: str, data_type: str, hour_ms: int) -> Path:
        if hour_ms % HOUR_MS:
            raise ValueError(f"{hour_ms} is not the start of an hour")
        return self.type_dir(ai, data_type) / utc_partition(hour_ms)

    def append(self, ai: str, data_type: str, table: pa.Table) -> dict[int, int]:
        """Store the rows durably, one new file per sendTime hour; returns {hour_ms: rows}.

        Every file is staged and fsynced before any is renamed into place, so an error
        (bad data, full disk) before the renames leaves nothing visible.
        """
        type_dir = self.type_dir(ai, data_type)
        table = conform(data_type, table)
        if table.num_rows == 0:
            return {}
        send = table.column("sendTime")
        if send.null_count:
            raise ValueError(f"{send.null_count} {data_type} rows have no sendTime")
        send_ms = send.to_numpy()
        hour_of_row = send_ms - send_ms % HOUR_MS
        hours, inverse = np.unique(hour_of_row, return_inverse=True)
        groups: dict[int, pa.Table] = {}
        if len(hours) == 1:
            groups[int(hours[0])] = table
        else:
            order = np.argsort(inverse, kind="stable")
            bounds = np.searchsorted(inverse[order], np.arange(len(hours) + 1))
            for i, hour in enumerate(hours):
                groups[int(hour)] = table.take(order[bounds[i] : bounds[i + 1]])

        staged: list[tuple[Path, Path]] = []
        try:
            for hour, group in groups.items():
                d = type_dir / utc_partition(hour)
                _makedirs(d)
                name = f"{uuid.uuid4().hex}.parquet"
                tmp = d / f".{name}.tmp"
                staged.append((tmp, d / name))
                with open(tmp, "wb") as f:
                    pq.write_table(group, f, compression="zstd")
                    f.flush()
                    os.fsync(f.fileno())
        except BaseException:
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)
            raise
        for tmp, final in staged:
            os.replace(tmp, final)
            _fsync_dir(final.parent)
        return {hour: group.num_rows for hour, group in groups.items()}

    def hour_files(self, ai: str, data_type: str, hour_ms: int) -> list[Path]:
        d = self.hour_dir(ai, data_type, hour_ms)
        if not d.is_dir():
            return []
        return sorted(p for p in d.glob("*.parquet") if not p.name.startswith("."))

    def hours(self, ai: str, data_type: str) -> list[int]:
        d = self.type_dir(ai, data_type)
        if not d.is_dir():
            return []
        found = []
        for sub in d.iterdir():
            if not _PARTITION.fullmatch(sub.name) or not sub.is_dir():
                continue
            if any(p.suffix == ".parquet" and not p.name.startswith(".") for p in sub.iterdir()):
                start = datetime.strptime(sub.name, "%Y%m%d%H").replace(tzinfo=UTC)
                found.append(int(start.timestamp()) * 1000)
        return sorted(found)

    def delete_hour(self, ai: str, data_type: str, hour_ms: int) -> None:
        """Remove an hour's files; a crash midway leaves the hour either whole or gone."""
        d = self.hour_dir(ai, data_type, hour_ms)
        if not d.is_dir():
            return
        doomed = d.with_name(f".{d.name}.{uuid.uuid4().hex}.deleting")
        os.replace(d, doomed)
        _fsync_dir(d.parent)
        shutil.rmtree(doomed)
