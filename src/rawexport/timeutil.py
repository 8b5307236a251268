"""Beijing/UTC hour windows and export_date parsing.

An hour is identified everywhere by its start as epoch milliseconds (UTC). Beijing time is
UTC+8 with no daylight saving, so a Beijing hour is exactly one UTC hour.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Literal

from rawexport.errors import UserError

BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

ExportType = Literal["hour", "day"]


# Benchmarks and tests may shift a whole process's clock (e.g. to close an hour soon);
# production leaves RAWEXPORT_CLOCK_OFFSET_MS unset.
_OFFSET_MS = int(os.environ.get("RAWEXPORT_CLOCK_OFFSET_MS") or 0)


def now_ms() -> int:
    return time.time_ns() // 1_000_000 + _OFFSET_MS


def hour_floor(ms: int) -> int:
    return ms - ms % HOUR_MS


def hour_ceil(ms: int) -> int:
    return -(-ms // HOUR_MS) * HOUR_MS


def beijing(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, BEIJING)


def utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def to_ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def beijing_hour_label(hour_ms: int) -> str:
    """yyyyMMddHH of a Beijing hour (the form requests use)."""
    return beijing(hour_ms).strftime("%Y%m%d%H")


def utc_key_stamp(hour_ms: int) -> str:
    """UTC yyyyMMddHHmm of an hour, as in export object keys."""
    return utc(hour_ms).strftime("%Y%m%d%H%M")


def parse_utc_stamp(stamp: str) -> int:
    """The hour start (ms) of a UTC yyyyMMddHHmm key stamp; ValueError when it is not one."""
    when = datetime.strptime(stamp, "%Y%m%d%H%M").replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def utc_partition(hour_ms: int) -> str:
    """UTC yyyyMMddHH, the event store's partition name."""
    return utc(hour_ms).strftime("%Y%m%d%H")


def request_time(ms: int) -> str:
    """requestTime of the envelope: Beijing yyyy-MM-dd HH:mm."""
    return beijing(ms).strftime("%Y-%m-%d %H:%M")


class BadDate(UserError, ValueError):
    """An export_date/date that cannot be parsed; str() is the offending value."""


@dataclass(frozen=True)
class Window:
    """The hours an export request covers."""

    export_type: ExportType
    label: str  # the truncated export_date echoed as exportDate
    start_ms: int  # start of the first hour

    @property
    def hours(self) -> list[int]:
        n = 1 if self.export_type == "hour" else 24
        return [self.start_ms + i * HOUR_MS for i in range(n)]

    @property
    def end_ms(self) -> int:
        return self.hours[-1] + HOUR_MS


_DIGITS = re.compile(r"[0-9]+")


def _beijing_ms(year: int, month: int, day: int, hour: int, raw: str) -> int:
    try:
        dt = datetime(year, month, day, tzinfo=BEIJING)
    except ValueError:
        raise BadDate(raw) from None
    if not 0 <= hour <= 23:
        raise BadDate(raw)
    return to_ms(dt) + hour * HOUR_MS


def parse_export_date(export_type: str, raw: str) -> Window:
    """Parse a v2 export_date (Beijing yyyyMMdd[HH[mm]]) truncated per export_type.

    `day` keeps yyyyMMdd; `hour` keeps yyyyMMddHH and needs at least 10 digits. Anything
    after the kept digits must still be digits (the minutes GrowingIO ignores). Hour 24 is
    rejected, not rolled over: a client that loops 01..24 gets a clear error for 24.
    """
    if export_type not in ("hour", "day"):
        raise BadDate(export_type)
    if not _DIGITS.fullmatch(raw) or len(raw) > 14:
        raise BadDate(raw)
    need = 8 if export_type == "day" else 10
    if len(raw) < need or len(raw) == 9 or len(raw) == 11:
        raise BadDate(raw)
    if len(raw) >= 12 and not 0 <= int(raw[10:12]) <= 59:
        raise BadDate(raw)
    year, month, day = int(raw[0:4]), int(raw[4:6]), int(raw[6:8])
    if export_type == "day":
        start = _beijing_ms(year, month, day, 0, raw)
        return Window("day", raw[:8], start)
    hour = int(raw[8:10])
    start = _beijing_ms(year, month, day, hour, raw)
    return Window("hour", raw[:10], start)


def parse_v1_date(raw: str) -> Window:
    """v1 `date`: 8 digits = a Beijing day, 10 digits = a Beijing hour."""
    if len(raw) == 8:
        return parse_export_date("day", raw)
    if len(raw) == 10:
        return parse_export_date("hour", raw)
    raise BadDate(raw)


def parse_hour_arg(raw: str) -> int:
    """A CLI Beijing hour yyyyMMddHH -> hour start ms."""
    if len(raw) != 10:
        raise BadDate(raw)
    return parse_export_date("hour", raw).start_ms


def parse_day_arg(raw: str) -> int:
    """A CLI Beijing day yyyyMMdd -> day start ms."""
    if len(raw) != 8:
        raise BadDate(raw)
    return parse_export_date("day", raw).start_ms


def beijing_day_start(ms: int) -> int:
    """Start of the Beijing day containing ms."""
    return ms - (ms + 8 * HOUR_MS) % DAY_MS
