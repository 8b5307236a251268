"""The DuckDB queries of an export: stored rows as text fields plus sort keys, key samples."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rawexport.schema import DATA_TYPES, V1_TYPES, ColumnType


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def field_sql(expr: str, type_: ColumnType) -> str:
    """One field of expr as text, not yet quoted; NULL stays NULL (an empty field)."""
    if type_ == "double":
        # Shortest round-trip text; inf/nan have no portable CSV spelling, so they are null.
        return f"CASE WHEN isfinite({expr}) THEN CAST({expr} AS VARCHAR) END"
    return f"CAST({expr} AS VARCHAR)"


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


def quoted(version: str, name: str) -> tuple[bool, ...]:
    """Per field of fields_query: may it need quoting (text) or never (numbers)."""
    return tuple(t in ("string", "map") for _, _, t in _plan(version, name)[1])


def sort_keys(version: str, name: str) -> list[str]:
    """The stored columns an export is sorted by, first key first."""
    return list(_plan(version, name)[2])


def sort_columns(version: str, name: str) -> list[str]:
    """Output names of the sort keys in fields_query, first key first."""
    return [f"k{i}" for i in range(len(_plan(version, name)[2]))]


def fields_query(version: str, name: str, files: Sequence[Path | str]) -> str:
    """`SELECT f0, f1, ..., k0, k1, ...` (unsorted) over the given Parquet files.

    f0... are the export's fields as text, unquoted (csvline quotes and joins them);
    k0... are the raw sort keys.
    """
    if not files:
        raise ValueError("fields_query needs at least one file")
    _, cols, sort_keys = _plan(version, name)
    inner = [f"{expr} AS c{i}" for i, (_, expr, _) in enumerate(cols)]
    inner += [f"{ident(k)} AS k{i}" for i, k in enumerate(sort_keys)]
    fields = [f"{field_sql(f'c{i}', type_)} AS f{i}" for i, (_, _, type_) in enumerate(cols)]
    paths = "[" + ", ".join(literal(str(f)) for f in files) + "]"
    keys = "".join(f", k{i}" for i in range(len(sort_keys)))
    return (
        f"SELECT {', '.join(fields)}{keys} FROM ("
        f"SELECT {', '.join(inner)} FROM read_parquet({paths}, union_by_name = true))"
    )


def key_sample_query(version: str, name: str, files: Sequence[Path | str], every: int) -> str:
    """The sorted non-null first sort keys of the rows whose first key's hash is 0 mod every.

    The sample depends on the rows alone, not on their files or read order (for ranges).
    It takes every row of the values it takes, so a value weighs as many rows as it has;
    and only the first key's column is read.
    """
    _, _, sort_keys = _plan(version, name)
    paths = "[" + ", ".join(literal(str(f)) for f in files) + "]"
    key = ident(sort_keys[0])
    return (
        f"SELECT k FROM (SELECT {key} AS k FROM read_parquet({paths}, union_by_name = true)) "
        f"WHERE k IS NOT NULL AND hash(k) % {int(every)} = 0 ORDER BY k"
    )


# The parts read back typed (`rawexport pull --parquet`, Parquet delivery): text, numbers,
# and maps (compact JSON objects in the CSV) as GrowingIO's map<string,string>.
SQL_TYPES = {"string": "VARCHAR", "bigint": "BIGINT", "double": "DOUBLE", "map": "VARCHAR"}
MAP_TYPE = "MAP(VARCHAR, VARCHAR)"


def column_types(version: str, name: str) -> list[tuple[str, ColumnType]]:
    """(column, type) of an export's CSV, in order."""
    return [(c, t) for c, _, t in _plan(version, name)[1]]


def typed_columns(version: str, name: str) -> str:
    """The SELECT list giving an export's CSV columns their types (maps as MAP_TYPE)."""
    out = []
    for c, t in column_types(version, name):
        if t == "map":
            out.append(f"CAST(CAST({ident(c)} AS JSON) AS {MAP_TYPE}) AS {ident(c)}")
        else:
            out.append(ident(c))
    return ", ".join(out)


def read_parts(
    version: str, name: str, files: Sequence[Path | str], *, filename: bool = False
) -> str:
    """`read_csv(...)` of export parts in the export's dialect, every column as it is typed
    before typed_columns (filename: add each row's file as `filename`)."""
    spec = ", ".join(
        f"{literal(c)}: {literal(SQL_TYPES[t])}" for c, t in column_types(version, name)
    )
    paths = "[" + ", ".join(literal(Path(f).as_posix()) for f in files) + "]"
    return (
        f"read_csv({paths}, header=true, delim=',', quote='\"', escape='\\', "
        f"columns={{{spec}}}, auto_detect=false, filename={str(filename).lower()}, "
        "allow_quoted_nulls=false)"
    )
