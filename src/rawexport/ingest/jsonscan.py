"""A JSON or NDJSON body's cost counted before it is parsed (C: _prescan.c).

Parsing builds one Python object per value, whatever the bytes: `[],` is 3 bytes and a
64-byte list, `1,` 2 bytes and an int plus its slot, so 16 MiB of JSON can build 5-8
million objects (400-500 MiB) while holding no event at all. `check` counts what the
parse would build and refuses (413) a body past any of these limits, before orjson runs:

- events: the values at the top level, or the elements of a top-level array (the batch);
  at most `Limits.events` (max_batch_events);
- values: every object, array, key, string, number, true, false and null, the whole
  body's at most `Limits.values` (max_batch_values; 50-80 bytes each once parsed);
- one event's values (itself and everything in it): at most `Limits.event_values`;
- nesting: at most `Limits.depth` arrays and objects inside each other, the batch's
  array included.

The scan reads the bytes once (strings 16 bytes at a time), allocates nothing, stops at
the first limit passed, and lets other threads run while it reads a large body. It does
not validate: bytes that are not JSON are counted as best it can (brackets that close
more than was opened are ignored, an unterminated string runs to the end) and left to
the parser to refuse. On valid JSON the counts are exact: tests/ingest/test_jsonscan.py
compares them with the parsed value's.

Measured against orjson.loads of the same bytes (one core, best of 30 runs): a 50-event
web SDK batch (28 KB) 10 µs against 56 µs; 500 native NDJSON events (104 KB) 68 µs against
350 µs; 16 MiB of `[],` refused in about 20 ms, having built nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from rawexport.ingest._prescan import scan_json as scan
from rawexport.ingest.codecs import Refused

__all__ = ["EVENT_VALUES", "MAX_DEPTH", "Limits", "check", "scan"]

# Values one event may hold: GrowingIO's events have at most about 60 fields and
# attributes maps of a few dozen keys; a web SDK event is about 45 values.
EVENT_VALUES = 10_000
# Arrays and objects inside each other: the SDKs' events nest 3 deep in a batch (batch,
# event, attributes), a list value in an attribute 4.
MAX_DEPTH = 32


@dataclass(frozen=True)
class Limits:
    """The limits of one body (None: none)."""

    events: int | None
    values: int | None
    event_values: int | None = EVENT_VALUES
    depth: int | None = MAX_DEPTH


OK, TOO_MANY_EVENTS, TOO_MANY_VALUES, EVENT_TOO_BIG, TOO_DEEP = range(5)


def check(text: bytes | memoryview, limits: Limits) -> int:
    """The number of events in `text`; Refused(413) past a limit."""
    code, events, _, _, index = scan(
        text, limits.events, limits.values, limits.event_values, limits.depth
    )
    if code == OK:
        return events
    if code == TOO_MANY_EVENTS:
        message = f"more than {limits.events} events in one batch"
    elif code == TOO_MANY_VALUES:
        message = (
            f"more than {limits.values} JSON values (objects, arrays, keys, strings, "
            "numbers) in one batch"
        )
    elif code == EVENT_TOO_BIG:
        message = f"event {index} holds more than {limits.event_values} JSON values"
    else:
        message = f"event {index} nests arrays and objects deeper than {limits.depth} levels"
    raise Refused(413, message)
