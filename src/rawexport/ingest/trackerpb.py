"""The CDP SDKs' protobuf bodies (event_v3.proto, item.proto, user_mapping.proto) decoded
to the events' JSON shape (the lowerCamelCase names the JSON bodies use).

spec/GROWINGIO_COLLECT_SPEC.md §2.6: every EventV3Dto field; proto3 leaves zero values
out, so a missing event_type is VISIT; unknown fields of every wire type are skipped;
int64 and int32 values may be negative (two's complement in ten bytes); fields 44/45 are
doubles (wire type 1). Decoding walks the bytes field by field and stops past the event
limit, so a small body never builds millions of objects.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any


class BadProtobuf(ValueError):
    """Bytes that are not a valid message of the expected type."""


class TooManyEvents(BadProtobuf):
    """The list holds more events than the batch may (checked while decoding)."""


STR, INT, ENUM, MAP, DOUBLE, ITEM = range(6)

# EventV3Dto field number -> (JSON name, kind)
EVENT_FIELDS: dict[int, tuple[str, int]] = {
    1: ("deviceId", STR),
    2: ("userId", STR),
    3: ("gioId", STR),
    4: ("sessionId", STR),
    5: ("dataSourceId", STR),
    6: ("eventType", ENUM),
    7: ("platform", STR),
    8: ("timestamp", INT),
    9: ("domain", STR),
    10: ("path", STR),
    11: ("query", STR),
    12: ("title", STR),
    13: ("referralPage", STR),
    14: ("globalSequenceId", INT),
    15: ("eventSequenceId", INT),
    16: ("screenHeight", INT),
    17: ("screenWidth", INT),
    18: ("language", STR),
    19: ("sdkVersion", STR),
    20: ("appVersion", STR),
    21: ("extraSdk", MAP),
    22: ("eventName", STR),
    23: ("pageShowTimestamp", INT),
    24: ("attributes", MAP),
    25: ("resourceItem", ITEM),
    26: ("protocolType", STR),
    27: ("textValue", STR),
    28: ("xpath", STR),
    29: ("index", INT),
    30: ("hyperlink", STR),
    31: ("urlScheme", STR),
    32: ("appState", STR),
    33: ("networkState", STR),
    34: ("appChannel", STR),
    35: ("pageName", STR),
    36: ("platformVersion", STR),
    37: ("deviceBrand", STR),
    38: ("deviceModel", STR),
    39: ("deviceType", STR),
    40: ("operatingSystem", STR),
    42: ("appName", STR),
    44: ("latitude", DOUBLE),
    45: ("longitude", DOUBLE),
    46: ("imei", STR),
    47: ("androidId", STR),
    48: ("oaid", STR),
    49: ("googleAdvertisingId", STR),
    50: ("idfa", STR),
    51: ("idfv", STR),
    52: ("orientation", STR),
    53: ("projectKey", STR),
    54: ("sendTime", INT),
    55: ("userKey", STR),
    56: ("xcontent", STR),
    57: ("timezoneOffset", STR),
}
# 32-bit fields: their negative values come as 64-bit two's complement too.
INT32_FIELDS = {15, 16, 17, 29}

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
    11: "ACTIVATE",
}

# ItemDto (item.proto) and UserMappingDto (user_mapping.proto)
ITEM_FIELDS: dict[int, tuple[str, int]] = {
    1: ("id", STR),
    2: ("key", STR),
    3: ("attributes", MAP),
    4: ("dataSourceId", STR),
    5: ("projectKey", STR),
}
RESOURCE_FIELDS: dict[int, tuple[str, int]] = {
    1: ("id", STR),
    2: ("key", STR),
    3: ("attributes", MAP),
}
USER_MAPPING_FIELDS: dict[int, tuple[str, int]] = {
    1: ("projectKey", STR),
    2: ("sendTime", INT),
    3: ("identifies", MAP),
    4: ("dataSourceId", STR),
}

_DOUBLE = struct.Struct("<d")
_SIGN = 1 << 63
_WRAP = 1 << 64


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    b = data[pos] if pos < len(data) else -1
    if 0 <= b < 0x80:  # most tags and small values: one byte
        return b, pos + 1
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


def iter_fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of one message, one at a time: a varint as int,
    a length-delimited field as bytes, a fixed64 / fixed32 as its raw bytes. A caller may
    stop early (a list of 8 M events is not built first)."""
    pos = 0
    end = len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise BadProtobuf("field number 0")
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, 0, value
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > end:
                raise BadProtobuf("truncated field")
            yield number, 2, data[pos : pos + size]
            pos += size
        elif wire == 1 or wire == 5:
            width = 8 if wire == 1 else 4
            if pos + width > end:
                raise BadProtobuf("truncated field")
            yield number, wire, data[pos : pos + width]
            pos += width
        else:
            raise BadProtobuf(f"unsupported wire type {wire}")


def fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(number, value) of every field of one message (see iter_fields)."""
    return [(n, v) for n, _, v in iter_fields(data)]


def _text(value: int | bytes) -> str:
    if not isinstance(value, bytes):
        raise BadProtobuf("expected a string field")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise BadProtobuf("string field is not UTF-8") from None


def _entry(value: int | bytes) -> tuple[str, str]:
    if not isinstance(value, bytes):
        raise BadProtobuf("expected a map entry")
    key = text = ""
    for n, wire, v in iter_fields(value):
        if n == 1 and wire == 2:
            key = _text(v)
        elif n == 2 and wire == 2:
            text = _text(v)
    return key, text


def message(data: bytes, table: dict[int, tuple[str, int]]) -> dict[str, Any]:
    """One message as a dict of its JSON names; fields not in `table` skipped, and so are
    fields whose wire type is not the one the proto declares (a newer SDK's change)."""
    out: dict[str, Any] = {}
    for number, wire, value in iter_fields(data):
        known = table.get(number)
        if known is None:
            continue
        name, kind = known
        if kind == STR:
            if wire == 2:
                out[name] = _text(value)
        elif kind == MAP:
            if wire == 2:
                k, v = _entry(value)
                out.setdefault(name, {})[k] = v
        elif kind in (INT, ENUM):
            if wire != 0:
                continue
            assert isinstance(value, int)
            if value >= _SIGN:
                value -= _WRAP
            if kind == ENUM:
                out[name] = EVENT_TYPES.get(value, str(value))
            elif number in INT32_FIELDS and table is EVENT_FIELDS:
                out[name] = ((value + (1 << 31)) % (1 << 32)) - (1 << 31)
            else:
                out[name] = value
        elif kind == DOUBLE:
            if wire == 1:
                assert isinstance(value, bytes)
                out[name] = _DOUBLE.unpack(value)[0]
        elif kind == ITEM and wire == 2:
            assert isinstance(value, bytes)
            out[name] = message(value, RESOURCE_FIELDS)
    return out


def _event(data: bytes) -> dict[str, Any]:
    event = message(data, EVENT_FIELDS)
    event.setdefault("eventType", "VISIT")  # proto3 leaves the 0 value out
    return event


def _list(
    data: bytes, field: int, decode: Any, limit: int | None, what: str
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for number, wire, value in iter_fields(data):
        if number != field:
            continue
        if wire != 2:
            raise BadProtobuf(f"expected {what}")
        if limit is not None and len(out) >= limit:
            raise TooManyEvents(f"more than {limit} events")
        out.append(decode(value))
    return out


def decode_events(data: bytes, limit: int | None = None) -> list[dict[str, Any]]:
    """The events of an EventV3List (field 1: repeated EventV3Dto); past `limit` events
    decoding stops with TooManyEvents (a 16 MiB body can hold 8 M empty events)."""
    return _list(data, 1, _event, limit, "an EventV3Dto")


def decode_items(data: bytes, limit: int | None = None) -> list[dict[str, Any]]:
    """The items of an ItemDtoList (field 2, not 1: item.proto)."""
    return _list(data, 2, lambda v: message(v, ITEM_FIELDS), limit, "an ItemDto")


def decode_user_mappings(data: bytes, limit: int | None = None) -> list[dict[str, Any]]:
    """The entries of a UserMappingDtoList (field 1)."""
    return _list(data, 1, lambda v: message(v, USER_MAPPING_FIELDS), limit, "a UserMappingDto")
