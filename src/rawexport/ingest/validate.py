"""Validating incoming events and turning them into store tables, per data type."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, repeat
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from rawexport.errors import UserError
from rawexport.schema import DATA_TYPES, ColumnType
from rawexport.store.events import arrow_schema

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# A row must name who it is about: the visitor when the type has one, else its request id.
REQUIRED_IDS: dict[str, tuple[str, ...]] = {
    name: ("visitUserId",) for name, t in DATA_TYPES.items() if "visitUserId" in t.column_names
}
REQUIRED_IDS["action_tag"] = ("actionRequestId",)
REQUIRED_IDS["ads_track_click"] = ()

# growingio-tracker event types (JSON names) -> our data type.
TRACKER_TYPES = {"CUSTOM": "custom_event", "LOGIN_USER_ATTRIBUTES": "vstr"}
# GrowingIO web SDK custom event (t = "cstm") fields -> custom_event columns.
SAAS_FIELDS = {
    "u": "visitUserId",
    "s": "sessionId",
    "tm": "time",
    "ptm": "pageTime",
    "d": "domain",
    "p": "page",
    "q": "queryParameters",
    "n": "eventName",
    "num": "eventNumber",
    "e": "eventVariable",
    "var": "eventVariable",
    "cs1": "loginUserId",
    "prid": "pageRequestId",
}


@dataclass(frozen=True)
class Rejection:
    index: int
    field: str
    reason: str

    def public(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "reason": self.reason}


Tables = dict[str, Any]  # data type -> pa.Table or RowChunk (both have num_rows)


@dataclass
class Batch:
    """Accepted rows as one table (or row chunk) per data type, and what was rejected."""

    tables: Tables = field(default_factory=dict)
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return sum(t.num_rows for t in self.tables.values())


class Invalid(UserError, ValueError):
    """A value an event cannot have: the event is rejected (field and reason are listed)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _map_value(name: str, value: Any) -> str:
    """Compact JSON text of a string map, numbers and booleans turned into strings.

    orjson writes the same text as store.encode_map (compact, non-ASCII kept) at a
    fraction of the cost; this is the hot path of every collector.
    """
    if type(value) is not dict:
        raise Invalid(name, "expected an object")
    out = value
    for k, v in value.items():
        if type(v) is str:
            continue
        if out is value:
            out = dict(value)
        if isinstance(v, bool):
            out[k] = "true" if v else "false"
        elif isinstance(v, int | float):
            out[k] = str(v)
        elif v is None:
            del out[k]
        else:
            raise Invalid(name, f"value of {k!r} must be a string or a number")
    try:
        return orjson.dumps(out).decode()
    except orjson.JSONEncodeError:
        raise Invalid(name, "not valid UTF-8 text") from None


_STRING, _BIGINT, _DOUBLE, _MAP = range(4)
_CODES: dict[ColumnType, int] = {
    "string": _STRING,
    "bigint": _BIGINT,
    "double": _DOUBLE,
    "map": _MAP,
}
# Per type: column -> (kind code, max length); the checks are inlined in check_row for speed.
_STRING_TYPE = pa.string()
SPECS: dict[str, dict[str, tuple[int, int]]] = {
    t.name: {c.name: (_CODES[c.type], c.length or sys.maxsize) for c in t.store_columns}
    for t in DATA_TYPES.values()
}


_SCHEMAS = {name: arrow_schema(name) for name in SPECS}
_UNBOUNDED = sys.maxsize


_NAMES = {name: tuple(schema.names) for name, schema in _SCHEMAS.items()}


class RowChunk:
    """Rows of one data type not yet made a table, held as columns: the ingest writer
    builds one table of the chunks of many requests at once (`build_table`), which costs a
    fraction of a table per request.

    The rows are turned into columns here, one row at a time while each is fresh in the
    processor's cache: the writer then reads each column's values in a row, where picking
    them out of thousands of row dicts, column after column, was most of its cost."""

    __slots__ = ("data_type", "columns", "num_rows")

    def __init__(self, data_type: str, rows: list[dict[str, Any]]) -> None:
        names = _NAMES[data_type]
        self.data_type = data_type
        self.num_rows = len(rows)
        self.columns: list[tuple[Any, ...]] = list(
            zip(*[tuple(map(row.get, names)) for row in rows], strict=True)
        )

    def table(self) -> pa.Table:
        return build_table(self.data_type, [self])


def build_table(data_type: str, chunks: list[RowChunk]) -> pa.Table:
    """The store table of row chunks of a type, column by column: text longer than its
    column cut to the column's length (but `ip`: an IPv6 address is kept whole)."""
    schema = _SCHEMAS[data_type]
    spec = SPECS[data_type]
    chunks = [c for c in chunks if c.num_rows]
    n = sum(c.num_rows for c in chunks)
    arrays = []
    for i, column in enumerate(schema):
        name = column.name
        values: Sequence[Any]
        if len(chunks) == 1:
            values = chunks[0].columns[i]
        else:
            values = list(chain.from_iterable(c.columns[i] for c in chunks))
        if values.count(None) == n:
            arrays.append(pa.nulls(n, column.type))
            continue
        limit = spec[name][1]
        if (
            limit < _UNBOUNDED
            and name != "ip"
            and column.type == _STRING_TYPE
            and max(map(len, filter(None, values)), default=0) > limit
        ):
            values = [v[:limit] if v is not None else None for v in values]
        arrays.append(pa.array(values, column.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def check_row(data_type: str, event: Mapping[str, Any], skip: str = "") -> dict[str, Any]:
    """The row as stored: every value checked against its column; raises Invalid."""
    spec = SPECS[data_type]
    row: dict[str, Any] = {}
    for name, value in event.items():
        if value is None or name == skip:
            continue
        kind = spec.get(name)
        if kind is None:
            raise Invalid(name, f"not a column of {data_type}")
        code = kind[0]
        if code == _STRING:
            if type(value) is not str:
                raise Invalid(name, "expected a string")
            if len(value) > kind[1]:
                raise Invalid(name, f"longer than {kind[1]} characters")
        elif code == _BIGINT:
            if type(value) is not int:
                raise Invalid(name, "expected an integer")
            if not INT64_MIN <= value <= INT64_MAX:
                raise Invalid(name, "out of the 64-bit integer range")
        elif code == _DOUBLE:
            if type(value) is int:
                value = float(value)
            elif type(value) is not float:
                raise Invalid(name, "expected a number")
        else:
            value = _map_value(name, value)
        row[name] = value
    for name in REQUIRED_IDS[data_type]:
        if not row.get(name):
            raise Invalid(name, "required")
    return row


class Collector:
    """Gathers checked rows of one request, stamps sendTime, and builds the tables."""

    def __init__(self, send_time: int | None) -> None:
        self.send_time = send_time  # None: keep the events' own sendTime (backfill)
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.rejected: list[Rejection] = []

    def add(self, index: int, data_type: str, event: Mapping[str, Any], skip: str = "") -> None:
        try:
            row = check_row(data_type, event, skip)
            if self.send_time is not None:
                row["sendTime"] = self.send_time
            elif "sendTime" not in row:
                raise Invalid("sendTime", "required when keeping sendTime")
        except Invalid as e:
            self.rejected.append(Rejection(index, e.field, e.reason))
            return
        self.rows.setdefault(data_type, []).append(row)

    def reject(self, index: int, field: str, reason: str) -> None:
        self.rejected.append(Rejection(index, field, reason))

    def batch(self) -> Batch:
        tables = {
            t: pa.Table.from_pylist(rows, schema=arrow_schema(t))
            for t, rows in self.rows.items()
            if rows
        }
        return Batch(tables, self.rejected)


def _column(data_type: str, name: str, code: int, limit: int, values: list[Any]) -> pa.Array:
    """One column of checked values, as check_row would accept them; raises otherwise."""
    if code == _STRING:
        array = pa.array(values, _STRING_TYPE)
        if limit < sys.maxsize and len(array) > array.null_count:
            longest = pc.max(pc.utf8_length(array)).as_py()
            if longest > limit:
                raise Invalid(name, f"longer than {limit} characters")
        return array
    if code == _MAP:
        return pa.array(_map_texts(name, values), _STRING_TYPE)
    # Inferred first: pyarrow would cast 1.5 into an integer column, True into a double.
    array = pa.array(values)
    kind = array.type
    if code == _BIGINT and (pa.types.is_int64(kind) or pa.types.is_null(kind)):
        return array.cast(pa.int64())
    if code == _DOUBLE and (
        pa.types.is_int64(kind) or pa.types.is_float64(kind) or pa.types.is_null(kind)
    ):
        return array.cast(pa.float64())
    raise Invalid(name, f"values of type {kind}")


def _map_texts(name: str, values: list[Any]) -> list[bytes | str | None]:
    """_map_value of each value (None kept); objects of strings only, the usual case, go
    straight to orjson."""
    dumps = orjson.dumps
    out: list[bytes | str | None] = []
    for value in values:
        if type(value) is dict:
            for item in value.values():
                if type(item) is not str:
                    out.append(_map_value(name, value))
                    break
            else:
                out.append(dumps(value))
        elif value is None:
            out.append(None)
        else:
            raise Invalid(name, "expected an object")
    return out


def native_columns(
    events: list[Any], send_time: int | None, default_type: str | None = None
) -> dict[str, pa.Table] | None:
    """The tables `native` builds, column by column (no checked row per event), when every
    event is valid; None when one is not (or is unusual): `native` then says which.

    Column-wise checks are the row checks: a string column accepts only strings, bigint
    only 64-bit integers, double integers and floats, a map only objects of strings and
    numbers; lengths; required ids present and not empty; sendTime present when kept.
    """
    try:  # map(dict.get, ...) runs in C, and refuses anything but objects
        kinds = list(map(dict.get, events, repeat("type"), repeat(default_type)))
        names = set(kinds)
    except TypeError:  # not an object, or an unhashable "type"
        return None
    groups: dict[str, list[dict[str, Any]]] = {}
    if len(names) == 1:
        groups[next(iter(names))] = events
    else:
        for kind, event in zip(kinds, events, strict=True):
            groups.setdefault(kind, []).append(event)
    tables: dict[str, pa.Table] = {}
    for data_type, rows in groups.items():
        if data_type not in SPECS:
            return None
        table = _type_table(data_type, rows, send_time)
        if table is None:
            return None
        tables[data_type] = table
    return tables


def _type_table(
    data_type: str, rows: list[dict[str, Any]], send_time: int | None
) -> pa.Table | None:
    spec = SPECS[data_type]
    present = set().union(*rows)
    present.discard("type")
    if not present <= spec.keys():
        return None
    schema = arrow_schema(data_type)
    arrays: list[pa.Array] = []
    try:
        for name in schema.names:
            if name not in present:
                arrays.append(pa.nulls(len(rows), schema.field(name).type))
                continue
            code, limit = spec[name]
            values = list(map(dict.get, rows, repeat(name)))
            arrays.append(_column(data_type, name, code, limit, values))
    except (Invalid, pa.ArrowException, OverflowError, TypeError, ValueError):
        return None
    return finish_table(data_type, pa.Table.from_arrays(arrays, schema=schema), send_time)


def finish_table(data_type: str, table: pa.Table, send_time: int | None) -> pa.Table | None:
    """A table of checked columns, once its required ids are there and not empty, with
    sendTime stamped (or kept, when there in every row); None otherwise."""
    for name in REQUIRED_IDS[data_type]:
        column = table.column(name)
        if column.null_count or (len(column) and pc.min(pc.utf8_length(column)).as_py() == 0):
            return None
    index = table.schema.get_field_index("sendTime")
    if send_time is not None:
        stamp = pa.array(np.full(table.num_rows, send_time, dtype=np.int64))
        table = table.set_column(index, table.schema.field(index), stamp)
    elif table.column(index).null_count:
        return None
    return table


def native(events: Iterable[Any], send_time: int | None) -> Batch:
    """Events of the native API: {"type": "<data_type>", <v2 column>: value, ...}."""
    out = Collector(send_time)
    for i, event in enumerate(events):
        if not isinstance(event, dict):
            out.reject(i, "", "an event must be a JSON object")
            continue
        data_type = event.get("type")
        if not isinstance(data_type, str) or data_type not in DATA_TYPES:
            out.reject(i, "type", f"unknown data type {data_type!r}")
            continue
        out.add(i, data_type, event, skip="type")
    return out.batch()


def tracker(events: Iterable[Any], send_time: int) -> Batch:
    """growingio-tracker events: CUSTOM -> custom_event, LOGIN_USER_ATTRIBUTES -> vstr.

    The visitor is deviceId, else userId (the tracker lets a logged-in user send no
    deviceId); userKey, dataSourceId, projectKey, sdkVersion and platform are not stored.
    """
    out = Collector(send_time)
    for i, event in enumerate(events):
        if not isinstance(event, dict):
            out.reject(i, "", "an event must be a JSON object")
            continue
        kind = event.get("eventType")
        data_type = TRACKER_TYPES.get(kind) if isinstance(kind, str) else None
        if data_type is None:
            out.reject(i, "eventType", f"unsupported event type {event.get('eventType')!r}")
            continue
        row: dict[str, Any] = {
            "visitUserId": event.get("deviceId") or event.get("userId"),
            "time": event.get("timestamp"),
        }
        if data_type == "custom_event":
            row["eventName"] = event.get("eventName")
            row["loginUserId"] = event.get("userId")
            row["eventVariable"] = event.get("attributes")
        else:
            row["visitorVariable"] = event.get("attributes")
        out.add(i, data_type, row)
    return out.batch()


def saas(events: Iterable[Any], ai: str, send_time: int) -> Batch:
    """GrowingIO SaaS web SDK custom events ({t: "cstm", tm, u, s, n, e, cs1, ...})."""
    out = Collector(send_time)
    for i, event in enumerate(events):
        if not isinstance(event, dict):
            out.reject(i, "", "an event must be a JSON object")
            continue
        if event.get("t") != "cstm":
            out.reject(i, "t", f"unsupported event type {event.get('t')!r}")
            continue
        if event.get("ai") not in (None, ai):
            out.reject(i, "ai", "event of another project")
            continue
        row = {SAAS_FIELDS[k]: v for k, v in event.items() if k in SAAS_FIELDS}
        out.add(i, "custom_event", row)
    return out.batch()
