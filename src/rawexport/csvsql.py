"""The DuckDB query that turns stored rows into sorted GrowingIO-dialect CSV lines."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rawexport.schema import DATA_TYPES, V1_TYPES, ColumnType

# Characters that force quoting: separator, quote, escape and both line-break bytes.
_SPECIAL = ("','", "'\"'", "'\\'", "chr(10)", "chr(13)")


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def field_sql(expr: str, type_: ColumnType) -> str:
    """One CSV field of expr; NULL stays NULL (concat() writes it as an empty field)."""
    if type_ == "bigint":
        return f"CAST({expr} AS VARCHAR)"
    if type_ == "double":
        # Shortest round-trip text; inf/nan have no portable CSV spelling, so they are null.
        return f"CASE WHEN isfinite({expr}) THEN CAST({expr} AS VARCHAR) END"
    special = " OR ".join(f"contains({expr}, {ch})" for ch in _SPECIAL)
    escaped = f"replace(replace({expr}, '\\', '\\\\'), '\"', '\\\"')"
    return f"CASE WHEN {special} THEN concat('\"', {escaped}, '\"') ELSE {expr} END"


def _plan(
    version: str, name: str
) -> tuple[str, list[tuple[str, str, ColumnType]], tuple[str, ...]]:
    """(store type to read, [(column, source expr, type)], sort keys) of an export."""
    if version == "v2":
        t = DATA_TYPES[name]
        return name, [(c.name, ident(c.name), c.type) for c in t.columns], t.sort_keys
    if version == "v1":
        v = V1_TYPES[name]
        cols: list[tuple[str, str, ColumnType]] = [(c.name, c.expr, c.type) for c in v.columns]
        return v.source, cols, v.sort_keys
    raise ValueError(f"unknown export version {version!r}")


def source_type(version: str, name: str) -> str:
    """The event-store data type an export of (version, name) reads."""
    return _plan(version, name)[0]


def columns(version: str, name: str) -> tuple[str, ...]:
    return tuple(c for c, _, _ in _plan(version, name)[1])


def header_line(version: str, name: str) -> bytes:
    return (",".join(columns(version, name)) + "\n").encode()


def sort_columns(version: str, name: str) -> list[str]:
    """Output names of the sort keys in keyed_lines_query, first key first."""
    return [f"k{i}" for i in range(len(_plan(version, name)[2]))]


def order_by(version: str, name: str) -> str:
    """The export order over keyed_lines_query's columns; DuckDB's default NULLS LAST.

    The line breaks ties between equal sort keys (equal lines are interchangeable), so a
    rerun writes the same bytes whatever the file layout; its hash goes first because
    comparing 8-byte hashes is cheaper than comparing whole lines (~10 % at 5 M rows).
    """
    return ", ".join([*sort_columns(version, name), "hash(line)", "line"])


def keyed_lines_query(version: str, name: str, files: Sequence[Path | str]) -> str:
    """`SELECT line, k0, k1, ...` (unsorted) over the given Parquet files.

    Each line is a whole CSV row ending in a newline; k0... are the raw sort keys.
    """
    if not files:
        raise ValueError("export_query needs at least one file")
    _, cols, sort_keys = _plan(version, name)
    inner = [f"{expr} AS c{i}" for i, (_, expr, _) in enumerate(cols)]
    inner += [f"{ident(k)} AS k{i}" for i, k in enumerate(sort_keys)]
    fields = [field_sql(f"c{i}", type_) for i, (_, _, type_) in enumerate(cols)]
    line = "concat(" + ", ',', ".join(fields) + ", chr(10))"
    paths = "[" + ", ".join(literal(str(f)) for f in files) + "]"
    keys = "".join(f", k{i}" for i in range(len(sort_keys)))
    return (
        f"SELECT {line} AS line{keys} FROM ("
        f"SELECT {', '.join(inner)} FROM read_parquet({paths}, union_by_name = true))"
    )


def export_query(version: str, name: str, files: Sequence[Path | str]) -> str:
    """`SELECT line ... ORDER BY sort keys, line` over the given Parquet files."""
    inner = keyed_lines_query(version, name, files)
    return f"SELECT line FROM ({inner}) ORDER BY {order_by(version, name)}"


def first_key_sample_query(version: str, name: str, files: Sequence[Path | str], rows: int) -> str:
    """A sorted, repeatable reservoir sample of the non-null first sort key (for ranges)."""
    _, _, sort_keys = _plan(version, name)
    paths = "[" + ", ".join(literal(str(f)) for f in files) + "]"
    key = ident(sort_keys[0])
    return (
        f"SELECT k FROM (SELECT {key} AS k FROM read_parquet({paths}, union_by_name = true) "
        f"WHERE {key} IS NOT NULL USING SAMPLE reservoir({int(rows)} ROWS) REPEATABLE (7)) "
        "ORDER BY k"
    )
