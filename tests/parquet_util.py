"""Parquet files of hand-written rows, in the event store's schema, for export tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rawexport.schema import DATA_TYPES
from rawexport.store.events import arrow_schema


def write_parquet(path: Path, data_type: str, rows: list[dict[str, Any]]) -> Path:
    """rows (dicts by column name; absent columns are null) as one Parquet file at path."""
    cols = DATA_TYPES[data_type].store_columns
    assert not {k for r in rows for k in r} - {c.name for c in cols}
    schema = arrow_schema(data_type)
    table = pa.table(
        {f.name: pa.array([r.get(f.name) for r in rows], f.type) for f in schema}, schema=schema
    )
    pq.write_table(table, path)
    return path
