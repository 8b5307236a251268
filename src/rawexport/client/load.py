"""Loading pulled v2 parts into Parquet files and DuckDB tables, typed from `schema`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from rawexport.export.csvsql import MAP_TYPE, SQL_TYPES, column_types, read_parts, typed_columns

HOUR_COLUMN = "_export_hour"  # Beijing yyyyMMddHH of the export file a row came from


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _table_sql(data_type: str) -> str:
    cols = [
        f"{_ident(c)} {MAP_TYPE if t == 'map' else SQL_TYPES[t]}"
        for c, t in column_types("v2", data_type)
    ]
    return ", ".join([*cols, f"{HOUR_COLUMN} VARCHAR"])


def stage(con: duckdb.DuckDBPyConnection, data_type: str, files: Sequence[Path]) -> str:
    """A temp table of the parts' rows with schema types and the hour column; its name."""
    name = f"stage_{data_type}"
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} ({_table_sql(data_type)})")
    if not files:
        return name
    # Files sit at {to}/{type}/{yyyyMMdd}/{HH}/part-NNNNN.csv.gz (pull's layout).
    hour = r"regexp_replace(filename, '^.*/(\d{8})/(\d{2})/[^/]*$', '\1\2')"
    con.execute(
        f"INSERT INTO {name} SELECT {typed_columns('v2', data_type)}, {hour} "
        f"FROM {read_parts('v2', data_type, files, filename=True)}"
    )
    return name


def to_parquet(
    files: dict[str, list[Path]], out_dir: Path, label: str
) -> dict[str, tuple[Path, int]]:
    """One Parquet file per data type: `{out_dir}/{type}/{label}.parquet`; (path, rows)."""
    out: dict[str, tuple[Path, int]] = {}
    with duckdb.connect() as con:
        for data_type, parts in files.items():
            table = stage(con, data_type, parts)
            target = Path(out_dir) / data_type / f"{label}.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".partial")
            con.execute(f"COPY {table} TO {_lit(str(tmp))} (FORMAT parquet)")
            os.replace(tmp, target)
            rows = _count(con, table)
            out[data_type] = (target, rows)
    return out


def to_duckdb(files: dict[str, list[Path]], db_path: Path, hours: Sequence[str]) -> dict[str, int]:
    """Replace the rows of `hours` in one table per data type; rows loaded per type.

    Idempotent: the rows of those hours are deleted and inserted in one transaction, so
    pulling a date again replaces that date's rows instead of adding to them.
    """
    out: dict[str, int] = {}
    hour_list = ", ".join(_lit(h) for h in hours)
    with duckdb.connect(str(db_path)) as con:
        for data_type, parts in files.items():
            table = stage(con, data_type, parts)
            target = _ident(data_type)
            con.execute(f"CREATE TABLE IF NOT EXISTS {target} ({_table_sql(data_type)})")
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(f"DELETE FROM {target} WHERE {HOUR_COLUMN} IN ({hour_list})")
                con.execute(f"INSERT INTO {target} SELECT * FROM {table}")
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise
            out[data_type] = _count(con, table)
    return out


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    row: Any = con.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0])
