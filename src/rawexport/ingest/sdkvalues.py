"""Values of SDK events as the store's columns take them: text, integers, numbers, maps,
platforms and device types (spec/GROWINGIO_COLLECT_SPEC.md §4.2 "Map values", §4.3)."""

from __future__ import annotations

from typing import Any

import orjson

from rawexport.errors import UserError
from rawexport.ingest.validate import INT64_MAX, INT64_MIN


class Invalid(UserError, ValueError):
    """A value an event cannot have: the event is rejected (field and reason are listed)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


# ---- values -------------------------------------------------------------------------------


def text(value: Any) -> str | None:
    """A scalar column's text: strings as they are, numbers in their JSON spelling."""
    if value is None or type(value) is str:
        return value
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "||".join(t for t in map(text, value) if t is not None)
    return orjson.dumps(value).decode()


def integer(name: str, value: Any) -> int | None:
    """A time or index: an integer, a float rounded (PHP sends floats), digits in text."""
    if value is None or value == "":
        return None
    if type(value) is int:
        out = value
    elif type(value) is float and value == value and abs(value) < 9.3e18:
        out = round(value)
    elif type(value) is str and value.strip().lstrip("-").isdigit() and value.isascii():
        out = int(value)
    else:
        raise Invalid(name, "expected an integer")
    if not INT64_MIN <= out <= INT64_MAX:
        raise Invalid(name, "out of the 64-bit integer range")
    return out


def number(name: str, value: Any) -> float | None:
    if value is None or value == "":
        return None
    if type(value) is bool:
        raise Invalid(name, "expected a number")
    if isinstance(value, int | float):
        return float(value)
    if type(value) is str:
        try:
            return float(value)
        except ValueError:
            pass
    raise Invalid(name, "expected a number")


def coordinate(name: str, value: Any) -> float | None:
    """Latitude / longitude: 0 is what the SDKs send when they have none."""
    out = number(name, value)
    return None if not out or out != out else out


def map_text(name: str, value: Any, extra: dict[str, str] | None = None) -> str | None:
    """A map column: compact JSON of an object whose values are all text."""
    if value is None or value == "":
        value = {}
    if type(value) is str:  # some SDKs send the map as JSON text
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise Invalid(name, "expected an object") from None
    if type(value) is not dict:
        raise Invalid(name, "expected an object")
    if value and not extra:
        for v in value.values():
            if type(v) is not str:
                break
        else:  # the usual map: text values only, written as it is
            try:
                return orjson.dumps(value).decode()
            except orjson.JSONEncodeError:
                raise Invalid(name, "not valid UTF-8 text") from None
    out: dict[str, str] = {}
    for k, v in value.items():
        t = text(v)
        if t is not None:
            out[str(k)] = t
    if extra:
        out.update(extra)
    if not out:
        return None
    try:
        return orjson.dumps(out).decode()
    except orjson.JSONEncodeError:
        raise Invalid(name, "not valid UTF-8 text") from None


def string(value: Any) -> str | None:
    if type(value) is str:
        return value or None
    return text(value) or None


def platform_name(value: Any) -> str | None:
    p = string(value)
    if p is not None and p.lower() == "web":
        return "Web"
    return p


def device_type(value: Any) -> str | None:
    """GrowingIO's deviceType: 1 phone, 0 tablet (CDP sends PHONE/PAD or the model)."""
    t = string(value)
    if t is None:
        return None
    low = t.lower()
    if low in ("0", "1"):
        return low
    if low.startswith(("phone", "iphone", "ipod")):
        return "1"
    if low.startswith(("pad", "ipad", "tablet")):
        return "0"
    return None
