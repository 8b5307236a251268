from datetime import datetime

import pytest

from rawexport.timeutil import (
    BEIJING,
    HOUR_MS,
    BadDate,
    beijing_day_start,
    beijing_hour_label,
    hour_ceil,
    hour_floor,
    parse_export_date,
    parse_hour_arg,
    parse_v1_date,
    request_time,
    to_ms,
    utc_key_stamp,
)


def bj(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return to_ms(datetime(year, month, day, hour, minute, tzinfo=BEIJING))


def test_beijing_hour_is_utc_minus_eight() -> None:
    w = parse_export_date("hour", "2017082108")
    assert w.start_ms == bj(2017, 8, 21, 8)
    assert utc_key_stamp(w.start_ms) == "201708210000"
    assert w.label == "2017082108"
    assert w.hours == [w.start_ms]


@pytest.mark.parametrize("raw", ["20180701", "2018070100", "201807010059", "20180701235959"])
def test_day_truncates_to_eight_digits(raw: str) -> None:
    w = parse_export_date("day", raw)
    assert w.label == "20180701"
    assert len(w.hours) == 24
    assert w.hours[0] == bj(2018, 7, 1)
    assert w.end_ms == bj(2018, 7, 2)


def test_hour_truncates_to_ten_digits() -> None:
    assert parse_export_date("hour", "201807011259").label == "2018070112"


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        ("hour", "20180701"),
        ("hour", "2018070124"),
        ("hour", "201807011260"),
        ("day", "20181301"),
        ("day", "20180230"),
        ("day", "2018070"),
        ("day", "abcdefgh"),
        ("day", "2018-07-01"),
        ("week", "20180701"),
        ("day", "123456789012345"),
    ],
)
def test_bad_dates_rejected(kind: str, raw: str) -> None:
    with pytest.raises(BadDate):
        parse_export_date(kind, raw)


def test_v1_dates() -> None:
    assert parse_v1_date("20160605").export_type == "day"
    assert parse_v1_date("2016060510").start_ms == bj(2016, 6, 5, 10)
    with pytest.raises(BadDate):
        parse_v1_date("20160502008")


def test_helpers() -> None:
    t = bj(2024, 1, 2, 3) + 1234
    assert hour_floor(t) == bj(2024, 1, 2, 3)
    assert hour_ceil(t) == bj(2024, 1, 2, 4)
    assert hour_ceil(bj(2024, 1, 2, 3)) == bj(2024, 1, 2, 3)
    assert beijing_day_start(t) == bj(2024, 1, 2)
    assert beijing_day_start(bj(2024, 1, 2, 7) + HOUR_MS) == bj(2024, 1, 2)
    assert beijing_hour_label(t) == "2024010203"
    assert request_time(t) == "2024-01-02 03:00"
    assert parse_hour_arg("2024010203") == bj(2024, 1, 2, 3)
    with pytest.raises(BadDate):
        parse_hour_arg("20240102")
