"""growingio-tracker's protobuf body (EventV3List, event_v3.proto) decoded to its JSON shape."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class BadProtobuf(ValueError):
    """Bytes that are not a valid EventV3List."""


# event_v3.proto: EventV3Dto field number -> (JSON name of JsonParser, wire kind)
_FIELDS: dict[int, tuple[str, str]] = {
    1: ("deviceId", "str"),
    2: ("userId", "str"),
    5: ("dataSourceId", "str"),
    6: ("eventType", "enum"),
    7: ("platform", "str"),
    8: ("timestamp", "int"),
    19: ("sdkVersion", "str"),
    22: ("eventName", "str"),
    24: ("attributes", "map"),
    53: ("projectKey", "str"),
    54: ("sendTime", "int"),
    55: ("userKey", "str"),
}
EVENT_TYPES = {
    0: "VISIT",
    1: "CUSTOM",
    2: "VISITOR_ATTRIBUTES",
    3: "LOGIN_USER_ATTRIBUTES",
    4: "CONVERSION_VARIABLES",
    5: "APP_CLOSED",
    6: "PAGE",
    7: "PAGE_ATTRIBUTES",
    8: "VIEW_CLICK",
    9: "VIEW_CHANGE",
    10: "FORM_SUBMIT",
}


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise BadProtobuf("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def iter_fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, varint value or bytes) of one message, one at a time; fixed-width
    fields skipped. A caller may stop early (a list of 8 M events is not built first)."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, value
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise BadProtobuf("truncated field")
            yield number, data[pos : pos + size]
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise BadProtobuf(f"unsupported wire type {wire}")
    if pos != len(data):
        raise BadProtobuf("truncated message")


def fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """Every field of one message (see iter_fields)."""
    return list(iter_fields(data))


def _text(value: int | bytes) -> str:
    if not isinstance(value, bytes):
        raise BadProtobuf("expected a string field")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise BadProtobuf("string field is not UTF-8") from None


def _event(data: bytes) -> dict[str, Any]:
    event: dict[str, Any] = {"eventType": "VISIT"}  # proto3 leaves the 0 value out
    for number, value in fields(data):
        known = _FIELDS.get(number)
        if known is None:
            continue
        name, kind = known
        if kind == "str":
            event[name] = _text(value)
        elif kind == "map":
            if not isinstance(value, bytes):
                raise BadProtobuf("expected a map entry")
            entry = {n: _text(v) for n, v in fields(value)}
            event.setdefault(name, {})[entry.get(1, "")] = entry.get(2, "")
        elif not isinstance(value, int):
            raise BadProtobuf(f"expected a number in field {number}")
        elif kind == "enum":
            event[name] = EVENT_TYPES.get(value, str(value))
        else:
            event[name] = value - (1 << 64) if value >= 1 << 63 else value
    return event


class TooManyEvents(BadProtobuf):
    """The list holds more events than the batch may (checked while decoding)."""


def decode_events(data: bytes, limit: int | None = None) -> list[dict[str, Any]]:
    """The events of an EventV3List (field 1: repeated EventV3Dto); past `limit` events
    decoding stops with TooManyEvents (a 16 MiB body can hold 8 M empty events)."""
    events: list[dict[str, Any]] = []
    for number, value in iter_fields(data):
        if number == 1:
            if not isinstance(value, bytes):
                raise BadProtobuf("expected an EventV3Dto")
            if limit is not None and len(events) >= limit:
                raise TooManyEvents(f"more than {limit} events")
            events.append(_event(value))
    return events
