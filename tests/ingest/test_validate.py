"""Event checks and conversion per data type, sendTime stamping."""

from __future__ import annotations

from typing import Any

import pytest

from rawexport.ingest import validate as ingest

T0 = 1_735_689_600_000  # 2025-01-01 00:00 UTC


def test_check_row_converts_and_rejects() -> None:
    row = ingest.check_row(
        "custom_event",
        {"visitUserId": "v", "eventNumber": 2, "eventVariable": {"a": 1, "b": 1.5, "c": False}},
    )
    assert row == {
        "visitUserId": "v",
        "eventNumber": 2.0,
        "eventVariable": '{"a":"1","b":"1.5","c":"false"}',
    }
    assert ingest.check_row("action_tag", {"actionRequestId": "r", "ruleId": None}) == {
        "actionRequestId": "r"
    }
    bad: list[tuple[str, dict[str, Any], str, str]] = [
        ("page", {"visitUserId": "v", "time": 2**63}, "time", "out of the 64-bit integer range"),
        ("page", {"visitUserId": "v", "time": 1.0}, "time", "expected an integer"),
        (
            "custom_event",
            {"visitUserId": "v", "eventNumber": "1"},
            "eventNumber",
            "expected a number",
        ),
        ("page", {"visitUserId": 7}, "visitUserId", "expected a string"),
        ("page", {"visitUserId": ""}, "visitUserId", "required"),
        ("action_tag", {"ruleId": "r"}, "actionRequestId", "required"),
        (
            "vstr",
            {"visitUserId": "v", "visitorVariable": [1]},
            "visitorVariable",
            "expected an object",
        ),
        ("page", {"visitUserId": "v" * 65}, "visitUserId", "longer than 64 characters"),
    ]
    for data_type, event, field, reason in bad:
        with pytest.raises(ingest.Invalid) as e:
            ingest.check_row(data_type, event)
        assert (e.value.field, e.value.reason) == (field, reason)
    # ads_track_click has no required id, and keeps sendTime although it does not export it.
    assert ingest.check_row("ads_track_click", {"clickUrl": "u"}) == {"clickUrl": "u"}


def test_send_time_is_stamped_unless_kept() -> None:
    events = [
        {"type": "page", "visitUserId": "v", "sendTime": 5},
        {"type": "page", "visitUserId": "w"},
    ]
    live = ingest.native(events, 1000)
    assert live.tables["page"].column("sendTime").to_pylist() == [1000, 1000]
    kept = ingest.native(events, None)
    assert kept.tables["page"].column("sendTime").to_pylist() == [5]
    assert [(r.index, r.field) for r in kept.rejected] == [(1, "sendTime")]


def test_tracker_uses_user_id_when_there_is_no_device() -> None:
    b = ingest.tracker(
        [
            {"eventType": "CUSTOM", "eventName": "e", "userId": "u"},
            {"eventType": "CUSTOM", "eventName": "e"},
            {"eventType": "ITEM"},
        ],
        7,
    )
    assert b.tables["custom_event"].column("visitUserId").to_pylist() == ["u"]
    assert [(r.index, r.field) for r in b.rejected] == [(1, "visitUserId"), (2, "eventType")]


def test_build_table_cuts_text_to_its_columns_length() -> None:
    """SDK rows (RowChunk) are cut, not refused: text longer than its column (in characters,
    multi-byte ones too) keeps the column's length; `ip` keeps an IPv6 address whole; keys
    that are no column are left out."""
    ipv6 = "2001:0db8:85a3:0000:0000:8a2e:0370:7334"
    rows: list[dict[str, Any]] = [
        {"visitUserId": "v" * 100, "sessionId": "s", "time": 1, "sendTime": 2, "ip": ipv6},
        {"visitUserId": "é" * 40, "sessionId": None, "time": 3, "sendTime": 4, "nope": "x"},
        {"visitUserId": "日" * 70, "sessionId": "s" * 49, "time": 5, "sendTime": 6},
    ]
    table = ingest.build_table("visit", [ingest.RowChunk("visit", rows)])
    assert table.column("visitUserId").to_pylist() == ["v" * 64, "é" * 40, "日" * 64]
    assert table.column("sessionId").to_pylist() == ["s", None, "s" * 49]
    assert table.column("ip").to_pylist() == [ipv6, None, None]
    assert table.column("time").to_pylist() == [1, 3, 5]
    assert "nope" not in table.column_names
    assert table.schema == ingest.build_table("visit", [ingest.RowChunk("visit", rows[:1])]).schema
    # the chunks of several requests: one table, in their order; empty strings are text
    chunks = [ingest.RowChunk("visit", rows[:1]), ingest.RowChunk("visit", []),
              ingest.RowChunk("visit", rows[1:])]  # fmt: skip
    assert ingest.build_table("visit", chunks).equals(table)
    blank = [{"visitUserId": "", "sessionId": "", "sendTime": 1}]
    assert ingest.build_table("visit", [ingest.RowChunk("visit", blank)]).column(
        "sessionId"
    ).to_pylist() == [""]
