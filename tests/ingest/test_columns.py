"""NDJSON import builds columns without a checked row per event (validate.native_columns);
whatever it accepts, the row-by-row checks accept too, with the very same tables, and
whatever they refuse makes it step aside so the row checks name the line."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from rawexport.ingest import validate as conv
from rawexport.ingest.files import convert_lines

BASE = {"type": "page", "visitUserId": "v1", "sessionId": "s1", "page": "/", "time": 1}


def row_by_row(events: list[Any], send_time: int | None) -> conv.Batch:
    return conv.native(events, send_time)


def lines_of(*events: Any) -> list[bytes]:
    return [orjson.dumps(e) + b"\n" for e in events]


VALID: list[list[Any]] = [
    [BASE, {**BASE, "visitUserId": "v2", "time": 2**62}],
    [BASE, {"type": "custom_event", "visitUserId": "v", "eventName": "buy",
            "eventVariable": {"price": 9.5, "n": 3, "ok": True, "gone": None, "s": "x"}}],
    [{**BASE, "page": None}, {**BASE, "referrerPage": "/a" * 10}],
    [{"type": "action_tag", "actionRequestId": "r1"}],
    [{**BASE, "sendTime": 5}],
]  # fmt: skip

INVALID: list[list[Any]] = [
    [BASE, {**BASE, "time": 1.5}],  # a float in a bigint column
    [BASE, {**BASE, "time": True}],
    [{**BASE, "time": True}],  # a column of booleans alone: pyarrow would cast it
    [{**BASE, "time": 2.0}],  # an integral float: pyarrow would cast it
    [{"type": "custom_event", "visitUserId": "v", "eventName": "e", "eventNumber": True}],
    [BASE, {**BASE, "page": 7}],  # a number in a string column
    [BASE, {**BASE, "visitUserId": ""}],  # a required id, empty
    [BASE, {k: v for k, v in BASE.items() if k != "visitUserId"}],
    [BASE, {**BASE, "nope": 1}],  # not a column
    [BASE, {**BASE, "type": "nope"}],
    [BASE, {**BASE, "time": 2**63}],
    [{"type": "custom_event", "visitUserId": "v", "eventVariable": {"a": {"b": 1}}}],
    [{"type": "custom_event", "visitUserId": "v", "eventVariable": ["a"]}],
    [BASE, [1, 2]],
    [BASE, {**BASE, "type": ["page"]}],
]


@pytest.mark.parametrize("events", VALID)
@pytest.mark.parametrize("send_time", [1234, None])
def test_valid_chunks_give_the_row_by_row_tables(events: list[Any], send_time: int | None) -> None:
    if send_time is None:
        events = [{**e, "sendTime": 99} for e in events]
    tables, problem = convert_lines(lines_of(*events), 1, None, send_time)
    expected = row_by_row(events, send_time)
    assert problem is None and not expected.rejected
    assert tables.keys() == expected.tables.keys()
    for t, table in tables.items():
        assert table.equals(expected.tables[t]), t
    assert conv.native_columns(events, send_time) is not None  # the columns did it


@pytest.mark.parametrize("events", INVALID)
def test_invalid_chunks_are_left_to_the_row_checks(events: list[Any]) -> None:
    assert conv.native_columns(events, 1234) is None
    tables, problem = convert_lines(lines_of(*events), 1, None, 1234)
    r = row_by_row(events, 1234).rejected[0]
    assert tables == {} and problem == f"line {r.index + 1}: {r.field}: {r.reason}"


def test_lines_that_are_not_one_object_each() -> None:
    two_on_a_line = [orjson.dumps(BASE) + b"," + orjson.dumps(BASE) + b"\n"]
    assert convert_lines(two_on_a_line, 1, None, 1)[1] is not None
    blank = [*lines_of(BASE), b"\n", *lines_of(BASE)]
    tables, problem = convert_lines(blank, 1, None, 1)
    assert problem is None and tables["page"].num_rows == 2


def test_kept_send_time_must_be_in_every_row() -> None:
    events = [{**BASE, "sendTime": 1}, BASE]
    assert conv.native_columns(events, None) is None
    problem = convert_lines(lines_of(*events), 1, None, None)[1]
    assert problem == "line 2: sendTime: required when keeping sendTime"


def test_the_default_type_fills_in_a_missing_one() -> None:
    untyped = {k: v for k, v in BASE.items() if k != "type"}
    tables, problem = convert_lines(lines_of(untyped, BASE), 1, "page", 7)
    assert problem is None and tables["page"].num_rows == 2
