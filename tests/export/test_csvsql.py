"""The CSV line query: GrowingIO dialect fields that read back exactly, headers, order."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rawexport.export.csvsql import columns, fields_query, header_line, source_type
from rawexport.export.reading import sorted_lines
from rawexport.schema import DATA_TYPES, V1_TYPES
from tests.parquet_util import write_parquet

NASTY = [
    "plain",
    "a,b",
    'say "hi"',
    "back\\slash",
    "trailing\\",
    "\\",
    '\\"',
    'x\\"y',
    '"',
    '""',
    "line\nbreak",
    "crlf\r\nend",
    "lone\rcr",
    "\n",
    "中文,字符",
    "emoji 😀 ok",
    "  leading and trailing  ",
    "123",
    "-0.5",
    "1e10",
    "null",
    "NULL",
    "a'b",
    "tab\there",
    "",
]


def run_lines(version: str, name: str, files: list[Path]) -> list[str]:
    con = duckdb.connect()
    try:
        return [str(x) for a in sorted_lines(con, version, name, files) for x in a.to_pylist()]
    finally:
        con.close()


def parse(lines: list[str]) -> list[list[str]]:
    text = "".join(lines)
    return list(csv.reader(io.StringIO(text, newline=""), quotechar='"', escapechar="\\"))


def test_header_and_columns() -> None:
    assert header_line("v2", "action_tag") == b"sendTime,actionRequestId,ruleId\n"
    assert columns("v2", "page") == DATA_TYPES["page"].column_names
    assert columns("v1", "custom_attr") == ("sendTime", "eventname", "attribute")
    assert source_type("v1", "custom_attr") == "custom_event"
    assert source_type("v2", "vstr") == "vstr"
    with pytest.raises(ValueError):
        columns("v3", "page")


def test_nasty_strings_round_trip(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [
        {
            "visitUserId": f"u{i:03d}",
            "sessionId": s,
            "sendTime": i,
            "eventName": s,
            "eventVariable": json.dumps(
                {"k": s, s: "v"}, separators=(",", ":"), ensure_ascii=False
            ),
        }
        for i, s in enumerate(NASTY)
    ]
    f = write_parquet(tmp_path / "a.parquet", "custom_event", rows)
    parsed = parse(run_lines("v2", "custom_event", [f]))
    names = list(DATA_TYPES["custom_event"].column_names)
    assert len(parsed) == len(rows)
    for row, got in zip(rows, parsed, strict=True):
        record = dict(zip(names, got, strict=True))
        assert record["sessionId"] == row["sessionId"]
        assert record["eventName"] == row["eventName"]
        assert json.loads(record["eventVariable"]) == json.loads(row["eventVariable"])
        assert record["eventVariable"] == row["eventVariable"]
        assert record["sendTime"] == str(row["sendTime"])
        assert record["time"] == "" and record["eventNumber"] == ""


def test_numbers_and_nulls(tmp_path: Path) -> None:
    values = [
        0.0,
        -0.0,
        1.0,
        0.1,
        -2.5,
        1e16,
        1e21,
        1.5e-7,
        5e-324,
        1.7976931348623157e308,
        123456.789,
        math.pi,
        None,
        math.inf,
        -math.inf,
        math.nan,
    ]
    ints = [0, -1, 2**63 - 1, -(2**63), 1_700_000_000_000, None] + [7] * 10
    rows: list[dict[str, Any]] = [
        {
            "visitUserId": "u",
            "sessionId": f"s{i:02d}",
            "sendTime": ints[i],
            "time": ints[i],
            "latitude": v,
            "longitude": v,
        }
        for i, v in enumerate(values)
    ]
    f = write_parquet(tmp_path / "a.parquet", "visit", rows)
    parsed = parse(run_lines("v2", "visit", [f]))
    names = list(DATA_TYPES["visit"].column_names)
    by_session = {r[names.index("sessionId")]: dict(zip(names, r, strict=True)) for r in parsed}
    for i, v in enumerate(values):
        rec = by_session[f"s{i:02d}"]
        if v is None or not math.isfinite(v):
            assert rec["latitude"] == ""  # inf and nan are exported as null
        else:
            assert float(rec["latitude"]) == v
            assert "inf" not in rec["latitude"] and "nan" not in rec["latitude"]
        assert rec["time"] == ("" if ints[i] is None else str(ints[i]))
        assert all(rec[c] == "" for c in ("ip", "domain", "IMEI"))


# Mostly the characters the dialect cares about, plus any other code point.
_CHAR = st.one_of(st.sampled_from(list(',"\\\n\r\x00 x')), st.characters(codec="utf-8"))
_TEXT = st.text(_CHAR, max_size=40)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=st.lists(st.one_of(st.none(), _TEXT), min_size=1, max_size=30),
    floats=st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=30),
)
def test_property_round_trip(
    tmp_path_factory: pytest.TempPathFactory, texts: list[str | None], floats: list[float]
) -> None:
    path = tmp_path_factory.mktemp("prop") / "a.parquet"
    n = max(len(texts), len(floats))
    rows: list[dict[str, Any]] = [
        {
            "visitUserId": f"u{i:04d}",
            "sessionId": texts[i % len(texts)],
            "sendTime": i,
            "domain": texts[(i + 1) % len(texts)],
            "eventNumber": floats[i % len(floats)],
            "eventVariable": None
            if texts[i % len(texts)] is None
            else json.dumps(
                {"v": texts[i % len(texts)]}, separators=(",", ":"), ensure_ascii=False
            ),
        }
        for i in range(n)
    ]
    write_parquet(path, "custom_event", rows)
    parsed = parse(run_lines("v2", "custom_event", [path]))
    names = list(DATA_TYPES["custom_event"].column_names)
    assert len(parsed) == n
    for row, got in zip(rows, parsed, strict=True):  # visitUserId is unique and sorts first
        rec = dict(zip(names, got, strict=True))
        assert rec["visitUserId"] == row["visitUserId"]
        assert rec["sessionId"] == (row["sessionId"] or "")
        assert rec["domain"] == (row["domain"] or "")
        assert rec["eventVariable"] == (row["eventVariable"] or "")
        assert float(rec["eventNumber"]) == row["eventNumber"]


def test_sort_order_with_ties(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [
        {"visitUserId": "b", "sessionId": "s1", "sendTime": 5, "time": 1},
        {"visitUserId": "a", "sessionId": "s2", "sendTime": 1, "time": 1},
        {"visitUserId": "a", "sessionId": "s1", "sendTime": 9, "time": 1},
        {"visitUserId": "a", "sessionId": "s1", "sendTime": 3, "time": 7},
        {"visitUserId": "a", "sessionId": "s1", "sendTime": 3, "time": 6},
        {"visitUserId": None, "sessionId": "s0", "sendTime": 0, "time": 1},
    ]
    f1 = write_parquet(tmp_path / "1.parquet", "vstr", rows[:3])
    f2 = write_parquet(tmp_path / "2.parquet", "vstr", rows[3:])
    a = run_lines("v2", "vstr", [f1, f2])
    b = run_lines("v2", "vstr", [f2, f1])
    assert a == b
    order = [(r[0], r[1], r[3], r[2]) for r in parse(a)]
    # Equal sort keys: a fixed tie-break over the line (same order for both file layouts).
    assert sorted(order[:2]) == [("a", "s1", "3", "6"), ("a", "s1", "3", "7")]
    assert order[2:] == [
        ("a", "s1", "9", "1"),
        ("a", "s2", "1", "1"),
        ("b", "s1", "5", "1"),
        ("", "s0", "0", "1"),
    ]


def test_ads_click_sorted_by_stored_send_time(tmp_path: Path) -> None:
    rows = [{"ip": str(i), "sendTime": t} for i, t in enumerate([30, 10, 20])]
    f = write_parquet(tmp_path / "a.parquet", "ads_track_click", rows)
    names = DATA_TYPES["ads_track_click"].column_names
    assert "sendTime" not in names
    got = parse(run_lines("v2", "ads_track_click", [f]))
    assert [r[names.index("ip")] for r in got] == ["1", "2", "0"]
    assert all(len(r) == len(names) for r in got)


def test_v1_query_runs_for_every_v1_type(tmp_path: Path) -> None:
    for name, v1 in V1_TYPES.items():
        f = write_parquet(tmp_path / f"{name}.parquet", v1.source, [{"sendTime": 1}])
        got = parse(run_lines("v1", name, [f]))
        assert len(got) == 1 and len(got[0]) == len(v1.columns)


def test_file_paths_are_quoted(tmp_path: Path) -> None:
    d = tmp_path / "it's here"
    d.mkdir()
    f = write_parquet(d / "a.parquet", "action_tag", [{"sendTime": 1, "ruleId": "r"}])
    assert parse(run_lines("v2", "action_tag", [f])) == [["1", "", "r"]]
    with pytest.raises(ValueError):
        fields_query("v2", "action_tag", [])
