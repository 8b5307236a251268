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
