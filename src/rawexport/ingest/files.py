"""Event files read into store tables: NDJSON (native events), Parquet, GrowingIO CSV(.gz) parts."""

from __future__ import annotations

import gc
import gzip
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from rawexport.errors import UserError
from rawexport.ingest import arrowjson
from rawexport.ingest import validate as conv
from rawexport.schema import DATA_TYPES
from rawexport.store.events import arrow_schema

# An export key's folder: {4hex}_{ai}_{data_type}_v2_{UTC yyyyMMddHHmm}
_TYPES = "|".join(sorted(DATA_TYPES, key=len, reverse=True))
_EXPORT_DIR = re.compile(rf"[0-9a-f]{{4}}_[A-Za-z0-9_-]+?_(?P<t>{_TYPES})_v2_\d{{12}}")


class BadFile(UserError, ValueError):
    """A file that cannot be imported; nothing of it is stored."""


def file_kind(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    for suffix, kind in (
        (".ndjson", "ndjson"),
        (".jsonl", "ndjson"),
        (".json", "ndjson"),
        (".parquet", "parquet"),
        (".csv", "csv"),
    ):
        if name.endswith(suffix):
            return kind
    raise BadFile(f"{path}: not .ndjson, .jsonl, .parquet or .csv(.gz)")


def type_of(path: Path, given: str | None) -> str:
    """--data-type, else the type named by an export folder or an event-store path."""
    if given:
        return given
    for part in reversed(path.resolve().parts[:-1]):
        m = _EXPORT_DIR.fullmatch(part)
        if m:
            return m["t"]
        if part in DATA_TYPES:
            return part
    raise BadFile(f"{path}: cannot tell its data type; pass --data-type")


def check_table(data_type: str, table: pa.Table, send_time: int | None) -> pa.Table:
    """A whole table checked like single events: types, lengths, ids, map JSON."""
    t = DATA_TYPES[data_type]
    store_names = {c.name for c in t.store_columns}
    unknown = [n for n in table.column_names if n not in store_names]
    if unknown:
        raise BadFile(f"columns not of {data_type}: {', '.join(unknown)}")
    try:
        table = table.cast(
            pa.schema([arrow_schema(data_type).field(n) for n in table.column_names])
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise BadFile(f"a value does not fit its column: {e}") from None
    for c in t.store_columns:
        if c.name not in table.column_names:
            continue
        col = table.column(c.name)
        if c.type == "string" and c.length is not None and table.num_rows:
            longest = pc.max(pc.utf8_length(col)).as_py()
            if longest is not None and longest > c.length:
                raise BadFile(f"{c.name}: a value is longer than {c.length} characters")
        if c.type == "map":
            for value in col.to_pylist():
                if value is not None and not isinstance(_loads(value), dict):
                    raise BadFile(f"{c.name}: {value[:60]!r} is not a JSON object")
    for name in conv.REQUIRED_IDS[data_type]:
        if name not in table.column_names or table.column(name).null_count:
            raise BadFile(f"{name}: required, missing in some rows")
    if send_time is not None:
        stamp = pa.array([send_time] * table.num_rows, pa.int64())
        if "sendTime" in table.column_names:
            table = table.drop_columns(["sendTime"])
        table = table.append_column("sendTime", stamp)
    elif "sendTime" not in table.column_names or table.column("sendTime").null_count:
        raise BadFile("sendTime: required in every row with --keep-send-time")
    return table


def _loads(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def read_csv(path: Path, data_type: str) -> pa.Table:
    """A GrowingIO-dialect CSV(.gz): header row, `\\` escapes, empty field = null."""
    types = {
        c.name: arrow_schema(data_type).field(c.name).type
        for c in DATA_TYPES[data_type].store_columns
    }
    try:
        return pacsv.read_csv(
            path,
            parse_options=pacsv.ParseOptions(
                delimiter=",",
                quote_char='"',
                double_quote=False,
                escape_char="\\",
                newlines_in_values=True,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=types, strings_can_be_null=True, null_values=[""]
            ),
        )
    except (pa.ArrowInvalid, OSError, EOFError) as e:
        raise BadFile(f"{path}: {e}") from None


BLOCK_BYTES = 32 << 20  # NDJSON is read in blocks of whole lines of about this size


def convert_block(
    block: bytes | bytearray, first: int, data_type: str | None, send_time: int | None
) -> tuple[dict[str, pa.Table], str | None]:
    """Tables of a block of whole NDJSON lines numbered from `first`, or the first problem.

    Read into columns by pyarrow and DuckDB (ingest/arrowjson.py) when that path can;
    else line by line (convert_lines), which also finds the problem and its line.
    """
    fast = arrowjson.tables(block, data_type, send_time)
    if fast is not None:
        return fast, None
    lines = bytes(block).split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return convert_lines(lines, first, data_type, send_time)


def convert_lines(
    lines: list[bytes], first: int, data_type: str | None, send_time: int | None
) -> tuple[dict[str, pa.Table], str | None]:
    """Tables of NDJSON lines numbered from `first`, or the first problem found.

    The lines are parsed as one JSON array and checked column by column
    (validate.native_columns); a chunk with anything wrong (or blank lines) is parsed and
    checked again line by line, which finds the problem and its line.
    """
    events: list[Any] = []
    line_of: list[int] = []
    # Many short-lived acyclic dicts: the cyclic GC would cost a third of the time.
    gc.disable()
    try:
        try:
            parsed = orjson.loads(b"[" + b",".join(lines) + b"]")
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, list) and len(parsed) == len(lines):  # one value a line
            tables = conv.native_columns(parsed, send_time, data_type)
            if tables is not None:
                return tables, None
        for n, line in enumerate(lines, first):
            if not line.strip():
                continue
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError as e:
                return {}, f"line {n} is not valid JSON: {e}"
            if data_type and isinstance(event, dict):
                event.setdefault("type", data_type)
            events.append(event)
            line_of.append(n)
        batch = conv.native(events, send_time)
    finally:
        gc.enable()
    if batch.rejected:
        r = batch.rejected[0]
        return {}, f"line {line_of[r.index]}: {r.field}: {r.reason}"
    return batch.tables, None


def _blocks(path: Path, size: int | None = None) -> Iterator[tuple[bytearray, int]]:
    """Blocks of whole lines (the last may lack its newline) and their first line number;
    read into a buffer of their own each, not copied after."""
    size = size or BLOCK_BYTES
    opener: Any = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        first = 1
        while True:
            block = bytearray(size)
            n = f.readinto(block)
            if not n:
                break
            del block[n:]
            if not block.endswith(b"\n"):
                block += f.readline()  # the rest of the last line
            yield block, first
            first += block.count(b"\n")


def read_ndjson(path: Path, data_type: str | None, send_time: int | None) -> dict[str, pa.Table]:
    """Native events, one JSON object a line, checked in chunks so memory stays flat.

    (A process pool over the chunks was slower on a busy 2-core machine: pickling the lines
    and tables cost about what it saved.)
    """
    parts: dict[str, list[pa.Table]] = {}
    try:
        for block, first in _blocks(path):
            tables, problem = convert_block(block, first, data_type, send_time)
            if problem:
                raise BadFile(f"{path}: {problem}")
            for t, table in tables.items():
                parts.setdefault(t, []).append(table)
    except (OSError, EOFError) as e:
        raise BadFile(f"{path}: {e}") from None
    return {t: pa.concat_tables(ts) for t, ts in parts.items()}


def load_file(path: Path, data_type: str | None, send_time: int | None) -> dict[str, pa.Table]:
    kind = file_kind(path)
    if kind == "ndjson":
        return read_ndjson(path, data_type, send_time)
    name = type_of(path, data_type)
    if kind == "parquet":
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as e:
            raise BadFile(f"{path}: {e}") from None
    else:
        table = read_csv(path, name)
    try:
        return {name: check_table(name, table, send_time)}
    except BadFile as e:
        raise BadFile(f"{path}: {e}") from None
