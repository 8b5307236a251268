"""NDJSON import builds columns without a checked row per event (ingest/arrowjson.py, then
validate.native_columns); whatever they accept, the row-by-row checks accept too, with the
very same tables, and whatever those refuse makes them step aside so the row checks name
the line."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawexport.ingest import arrowjson
from rawexport.ingest import validate as conv
from rawexport.ingest.files import convert_block, convert_lines

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


def same_tables(got: dict[str, Any] | None, events: list[Any], send_time: int | None) -> None:
    expected = row_by_row(events, send_time)
    assert got is not None and not expected.rejected
    assert got.keys() == expected.tables.keys()
    for t, table in got.items():
        assert table.equals(expected.tables[t]), (t, table.to_pylist(), expected.tables[t])


# Maps of strings only (the case arrowjson takes), in any key order, with escapes.
MAPS: list[dict[str, Any]] = [
    {"type": "custom_event", "visitUserId": "v", "eventName": "e",
     "eventVariable": {"b": "1", "a": "x\u00e9/\n\t\"\\ \u2028", "😀": "<\u00ff>"}},
    {"type": "custom_event", "visitUserId": "w", "eventName": "e",
     "eventVariable": {"a": "2", "b": "y"}},
    {"type": "custom_event", "visitUserId": "x", "eventName": "e", "eventVariable": {}},
    {"type": "custom_event", "visitUserId": "y", "eventName": "e", "eventVariable": None},
    {"type": "custom_event", "visitUserId": "z", "eventName": "e"},
]  # fmt: skip


@pytest.mark.parametrize("events", [VALID[0], VALID[2], VALID[3], MAPS], ids=str)
def test_arrow_blocks_give_the_row_by_row_tables(events: list[Any]) -> None:
    block = b"".join(lines_of(*events))
    same_tables(arrowjson.tables(block, None, 1234), events, 1234)
    kept = [{**e, "sendTime": 99} for e in events]
    same_tables(arrowjson.tables(b"".join(lines_of(*kept)), None, None), kept, None)


@pytest.mark.parametrize("events", [*INVALID, VALID[1]])
def test_what_arrow_blocks_cannot_prove_is_left_to_the_rows(events: list[Any]) -> None:
    """The invalid chunks, and a map with numbers (the row path writes those its way)."""
    block = b"".join(lines_of(*events))
    assert arrowjson.tables(block, None, 1234) is None
    tables, problem = convert_block(block, 1, None, 1234)
    assert (tables, problem) == convert_lines(lines_of(*events), 1, None, 1234)


@pytest.mark.parametrize(
    "block",
    [
        orjson.dumps(BASE) + b" " + orjson.dumps(BASE) + b"\n",  # two objects on a line
        orjson.dumps(BASE) + b"\n   \n" + orjson.dumps(BASE) + b"\n",  # a line of spaces
        b'{"type":"page","visitUserId":"v","visitUserId":"w"}\n',  # a key twice
        b'{"visitUserId":"v","type":null}\n',  # a null type is not a missing one
        b'{"type":"page","visitUserId":"v\xff"}\n',  # not UTF-8
        b'{"type":"custom_event","visitUserId":"v","eventNumber":1e400}\n',
        b'{"type":"custom_event","visitUserId":"v","eventNumber":1e19}\n',
    ],
)
def test_odd_lines_are_left_to_the_rows(block: bytes) -> None:
    assert arrowjson.tables(block, "page", 1234) is None


def test_types_mixed_in_a_block_give_the_row_by_row_tables() -> None:
    """(pyarrow reads one set of columns for all: an event of one type then seems to
    carry the other's columns, null; whether they were given as null it cannot tell, so
    such a block goes the orjson way.)"""
    events = [*MAPS, BASE, *VALID[0]]
    tables, problem = convert_block(b"".join(lines_of(*events)), 1, None, 7)
    assert problem is None
    same_tables(tables, events, 7)


def test_a_line_longer_than_a_parse_block() -> None:
    big = {f"k{i}": "v" * 2600 for i in range(2_000)}  # about 5 MiB of JSON
    events = [{**MAPS[1], "eventVariable": big}, MAPS[1]]
    tables, problem = convert_block(b"".join(lines_of(*events)), 1, None, 3)
    assert problem is None
    same_tables(tables, events, 3)


def test_blank_lines_and_a_missing_last_newline() -> None:
    block = b"\n" + orjson.dumps(BASE) + b"\n\n" + orjson.dumps({**BASE, "visitUserId": "w"})
    same_tables(arrowjson.tables(block, None, 5), [BASE, {**BASE, "visitUserId": "w"}], 5)
    untyped = {k: v for k, v in BASE.items() if k != "type"}
    same_tables(arrowjson.tables(b"".join(lines_of(untyped)), "page", 5), [BASE], 5)


TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=12)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {"visitUserId": TEXT.filter(bool), "eventName": TEXT},
            optional={"eventVariable": st.dictionaries(TEXT, TEXT, max_size=4), "page": TEXT},
        ),
        min_size=1,
        max_size=20,
    )
)
def test_arrow_blocks_agree_with_the_rows_on_any_strings(rows: list[dict[str, Any]]) -> None:
    events = [{"type": "custom_event", **r} for r in rows]
    got = arrowjson.tables(b"".join(lines_of(*events)), None, 42)
    if got is not None:  # it may step aside (a control character in a key, say)
        same_tables(got, events, 42)
