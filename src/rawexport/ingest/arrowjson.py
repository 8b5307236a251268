"""NDJSON lines to store tables without a Python object per event.

pyarrow's JSON reader parses the lines into typed columns (in C++, on every core), and
DuckDB copies the text of each map column's objects out of the same lines (minified, keys
in their order, escaped as orjson writes them). The checks are validate.native_columns'
checks, on whole columns. Anything this path cannot prove it reads exactly as the row
path would is left to it: `tables` then answers None, and files.convert_block goes on
as before (which also finds the line and the reason of a problem). Among those: a line that
is not one JSON object, a key given twice, a type change in a column, a number in a map,
a value the column type does not take, an integer past 2^63 in a double column.
"""

from __future__ import annotations

import math
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from rawexport.ingest.validate import _BIGINT, _DOUBLE, _MAP, _STRING, SPECS, finish_table
from rawexport.store.events import arrow_schema

_PARSE = pj.ParseOptions(unexpected_field_behavior="infer", newlines_in_values=False)
_EXACT_INTEGERS = float(2**63)
# Blocks of 4 MiB parse in parallel and in cache (a few runs: 1.0-1.25 s for 1.5 M bench
# events against 0.9-1.7 s for two halves of each 32 MiB block).
_READ = pj.ReadOptions(block_size=4 << 20)


def tables(
    block: bytes | bytearray, data_type: str | None, send_time: int | None
) -> dict[str, pa.Table] | None:
    """The tables of a block of whole NDJSON lines (as validate.native_columns builds
    them), or None."""
    try:
        data = pa.py_buffer(block)  # no copy
        lines = _lines(data)
    except pa.ArrowInvalid:
        return None
    # (Extracting the map texts while pyarrow parses, in a thread, gained nothing on two
    # cores: both use them all.)
    try:
        parsed = pj.read_json(
            pa.BufferReader(data),
            read_options=_READ,
            parse_options=_PARSE,
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if parsed.num_rows != len(lines) or not len(lines):  # two objects on a line, say
        return None
    kinds = _kinds(parsed, data_type)
    if kinds is None:
        return None
    names = kinds.unique().to_pylist()
    if any(name not in SPECS for name in names):
        return None
    maps = _map_texts(lines, parsed, names)
    if maps is None:
        return None
    out: dict[str, pa.Table] = {}
    for name in names:
        if len(names) == 1:
            part, part_maps = parsed, maps
        else:
            mask = pc.equal(kinds, name)
            part = parsed.filter(mask)
            part_maps = {k: v.filter(mask) for k, v in maps.items()}
        table = _type_table(name, part, part_maps, send_time)
        if table is None:
            return None
        out[name] = table
    return out


def _kinds(parsed: pa.Table, data_type: str | None) -> pa.Array | None:
    if "type" not in parsed.column_names:
        if data_type is None:
            return None
        return pa.array([data_type] * parsed.num_rows, pa.string())
    kinds = parsed.column("type").combine_chunks()
    if pa.types.is_null(kinds.type):
        kinds = kinds.cast(pa.string())
    if not pa.types.is_string(kinds.type):
        return None
    if kinds.null_count:  # a missing type or `"type": null`: not told apart here
        return None
    return kinds


def _lines(data: pa.Buffer) -> pa.Array:
    """The block's lines that are not empty, as UTF-8. (A line of only spaces is one of
    them, though a JSON reader skips it: the row counts then differ, and the block is left
    to the row path.)"""
    if data.size >= 2**31:
        raise pa.ArrowInvalid("a block too large for one string")
    offsets = pa.array([0, data.size], pa.int32()).buffers()[1]
    whole = pa.Array.from_buffers(pa.binary(), 1, [None, offsets, data])
    text = whole.cast(pa.string())  # raises on bad UTF-8
    lines = pc.list_flatten(pc.split_pattern(text, "\n"))
    return lines.filter(pc.greater(pc.binary_length(lines), 0))


_MAP_NAMES = {
    name: sorted(c for c, (code, _) in spec.items() if code == _MAP) for name, spec in SPECS.items()
}


def _extract(lines: pa.Array, columns: list[str]) -> pa.Table | None:
    """The JSON text of these keys' values on each line (SQL null when missing)."""
    if not columns:
        return pa.table({})
    paths = ", ".join(f'json_extract(line, \'$."{name}"\') AS "{name}"' for name in columns)
    con = duckdb.connect()
    try:
        con.register("lines", pa.table({"line": lines}))
        got: pa.Table = con.sql(f"SELECT {paths} FROM lines").to_arrow_table()
        return got
    except duckdb.Error:
        return None
    finally:
        con.close()


def _map_texts(lines: pa.Array, parsed: pa.Table, names: list[str]) -> dict[str, pa.Array] | None:
    """The text of each map column's values, or None when a map is not an object of
    strings (the row path writes numbers its own way) or the lines do not line up."""
    found = {c for n in names for c in _MAP_NAMES[n]}
    columns = sorted(found & set(parsed.column_names))
    if not columns:
        return {}
    for name in columns:
        kind = parsed.schema.field(name).type
        if pa.types.is_null(kind):
            continue
        if not pa.types.is_struct(kind):
            return None
        for i in range(kind.num_fields):
            child = kind.field(i).type
            if not (pa.types.is_string(child) or pa.types.is_null(child)):
                return None
    texts = _extract(lines, columns)
    if texts is None or texts.num_rows != parsed.num_rows:
        return None
    out: dict[str, pa.Array] = {}
    for name in columns:
        values = texts.column(name).combine_chunks().cast(pa.string())
        values = pc.if_else(pc.equal(values, "null"), pa.scalar(None, pa.string()), values)
        # DuckDB writes a control character as \u00XX in capitals, orjson in small letters.
        if pc.any(pc.match_substring(values, "\\u")).as_py():
            return None
        # Lined up: a map is there (not null) on exactly the rows pyarrow read one on.
        if not pc.all(pc.equal(pc.is_valid(values), pc.is_valid(parsed.column(name)))).as_py():
            return None
        out[name] = values
    return out


def _type_table(
    data_type: str, part: pa.Table, maps: dict[str, pa.Array], send_time: int | None
) -> pa.Table | None:
    spec = SPECS[data_type]
    schema = arrow_schema(data_type)
    present = set(part.column_names) - {"type"}
    if not present <= spec.keys():
        return None
    arrays: list[Any] = []
    for field in schema:
        name = field.name
        if name not in present:
            arrays.append(pa.nulls(part.num_rows, field.type))
            continue
        column = part.column(name).combine_chunks()
        checked = _checked(spec[name], column, maps.get(name))
        if checked is None:
            return None
        arrays.append(checked)
    return finish_table(data_type, pa.Table.from_arrays(arrays, schema=schema), send_time)


def _checked(spec: tuple[int, int], column: pa.Array, texts: pa.Array | None) -> pa.Array | None:
    code, limit = spec
    kind = column.type
    if pa.types.is_null(kind):
        target = {_STRING: pa.string(), _MAP: pa.string(), _BIGINT: pa.int64()}
        return pa.nulls(len(column), target.get(code, pa.float64()))
    if code == _MAP:
        return texts
    if code == _STRING:
        if not pa.types.is_string(kind):
            return None
        if len(column) > column.null_count:
            longest = pc.max(pc.utf8_length(column)).as_py()
            if longest is not None and longest > limit:
                return None
        return column
    if code == _BIGINT:
        return column if pa.types.is_int64(kind) else None
    if code == _DOUBLE:
        if pa.types.is_int64(kind):
            return column.cast(pa.float64())
        if not pa.types.is_float64(kind):
            return None
        # pyarrow reads an integer past int64 as a double; the row path does not
        # (and a value past the double range as inf): leave those to it.
        largest = pc.max(pc.abs(column)).as_py()
        if largest is not None and (largest >= _EXACT_INTEGERS or not math.isfinite(largest)):
            return None
        return column
    return None
