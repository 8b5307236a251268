"""The CDP SDKs' protobuf bodies (event_v3.proto, item.proto, user_mapping.proto) decoded
to the events' JSON shape (the lowerCamelCase names the JSON bodies use).

spec/GROWINGIO_COLLECT_SPEC.md §2.6: every EventV3Dto field; proto3 leaves zero values
out, so a missing event_type is VISIT; unknown fields of every wire type are skipped;
int64 and int32 values may be negative (two's complement in ten bytes); fields 44/45 are
doubles (wire type 1). Decoding walks the bytes field by field and stops past the event
limit, so a small body never builds millions of objects.

The decoder is C (_trackerpb.c: about 1 µs an event of the Go SDK's batches, 10 µs one
with all 57 fields, where the Python walker it replaced took about 20 and 95). It holds
the tables below, their keys interned once; tests/ingest/test_trackerpb.py keeps that
walker as the reference and compares the two on random, damaged and complete lists.
The rules:

- Fields are read in order, each message checked to its end, skipped fields included (a
  varint is at most ten bytes; a length must fit in the message; wire types 3, 4, 6 and 7
  and field number 0 are errors). The first error in the bytes is the one raised.
- A field not in the message's table is skipped, and so is a field whose wire type is not
  the one its kind has (a newer SDK's change): strings, maps and resourceItem 2, integers
  and the event type 0, doubles 1.
- Strings are strict UTF-8. A repeated scalar field: the last one wins. A map is a dict,
  its later entries with the same key winning; an entry without a key or value gives "".
  resourceItem is a dict of RESOURCE_FIELDS (a repeated one replaces the earlier).
- int64 values of 2**63 and above are two's complement (less 2**64, also for the 70-bit
  values a ten-byte varint can state); INT32_FIELDS are wrapped to 32 bits; the event
  type is its EVENT_TYPES name, or its number (after that) as text.
- In the list, fields other than its values are skipped; a value that is not
  length-delimited is an error; the (limit + 1)-th value raises TooManyEvents before it is
  decoded.
- Values are counted as they are built: each message's dict 1, each field value 1 (a
  resourceItem: its dict and fields), each map entry 2 (key and value, a repeated key
  too). Past `values` in the list, or `message_values` in one message, TooManyEvents
  ("more than N values", "event I holds more than N values"): a body of a few KB cannot
  build millions of map entries.
"""

from __future__ import annotations

from typing import Any

from rawexport.errors import UserError
from rawexport.ingest import _trackerpb


class BadProtobuf(UserError, ValueError):
    """Bytes that are not a valid message of the expected type."""


class TooManyEvents(BadProtobuf):
    """The list holds more events than the batch may (checked while decoding)."""

    status = 413


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


def decode_events(
    data: bytes,
    limit: int | None = None,
    values: int | None = None,
    message_values: int | None = None,
) -> list[dict[str, Any]]:
    """The events of an EventV3List (field 1: repeated EventV3Dto); past `limit` events,
    `values` values or `message_values` values in one event, decoding stops with
    TooManyEvents (a 16 MiB body can hold 8 M empty events, or 2 M map entries)."""
    return _trackerpb.decode_events(data, limit, BadProtobuf, TooManyEvents, values, message_values)


def decode_items(
    data: bytes,
    limit: int | None = None,
    values: int | None = None,
    message_values: int | None = None,
) -> list[dict[str, Any]]:
    """The items of an ItemDtoList (field 2, not 1: item.proto)."""
    return _trackerpb.decode_items(data, limit, BadProtobuf, TooManyEvents, values, message_values)


def decode_user_mappings(
    data: bytes,
    limit: int | None = None,
    values: int | None = None,
    message_values: int | None = None,
) -> list[dict[str, Any]]:
    """The entries of a UserMappingDtoList (field 1)."""
    return _trackerpb.decode_user_mappings(
        data, limit, BadProtobuf, TooManyEvents, values, message_values
    )
