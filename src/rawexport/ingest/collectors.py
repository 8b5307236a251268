"""The collectors' bodies turned into rows: GrowingIO's SDKs (CDP and SaaS families), their
items and user mappings, and the native event API.

Decoding (`codecs`), JSON / NDJSON (counted first by `jsonscan`) and protobuf parsing
within the batch limits (events, values, one event's values, nesting), then the events
filed by `sdk.Mapper`; the HTTP routes that call these are `api.collect`.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import orjson

from rawexport.ingest import codecs, jsonscan, sdk, trackerpb
from rawexport.ingest import validate as ingest
from rawexport.ingest.codecs import Payload, Refused, gunzip, unsnappy

__all__ = ["Decoders", "Refused", "gunzip", "parse_events", "sdk_events", "unsnappy"]


def parse_events(
    body: bytes,
    ndjson: bool = False,
    max_events: int | None = None,
    max_values: int | None = None,
) -> list[Any]:
    """A JSON array of events, or (native API) NDJSON / a single object.

    The body is counted first (jsonscan): past max_events events, max_values values, or
    an event too large or too deep, it is refused with 413 before it is parsed.
    """
    text = stripped(body)
    if not text:
        raise Refused(400, "empty body")
    jsonscan.check(text, jsonscan.Limits(max_events, max_values))
    if bytes(text[:1]) == b"[":
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError as e:
            raise Refused(400, f"body is not valid JSON: {e}") from None
        return parsed  # type: ignore[no-any-return]
    if not ndjson:
        raise Refused(400, "body must be a JSON array of events")
    lines = bytes(text)
    # Each line becomes an object once split, a blank one too: as many as values at most.
    if max_values is not None and lines.count(b"\n") >= max_values:
        raise Refused(413, f"more than {max_values} lines in one batch")
    events = []
    for n, line in enumerate(lines.split(b"\n"), 1):
        if line.strip():
            try:
                events.append(orjson.loads(line))
            except orjson.JSONDecodeError as e:
                raise Refused(400, f"line {n} is not valid JSON: {e}") from None
    return events


def _lazy(
    sniff: Callable[[bytes, int], list[Payload]], body: bytes, limit: int
) -> Iterator[Payload]:
    """The sniffed candidates, computed only when the guided decode failed."""
    yield from sniff(body, limit)


_LEADING_SPACE = re.compile(rb"[ \t\n\r\x0b\x0c]*")


def stripped(data: bytes) -> memoryview:
    """data without its leading and trailing ASCII whitespace (as bytes.strip), a view:
    a body of up to max_body_bytes is not copied to be trimmed (a refused bomb's peak)."""
    start = _LEADING_SPACE.match(data)
    lo = start.end() if start is not None else 0
    hi = len(data)
    while hi > lo:
        at = max(lo, hi - 4096)
        kept = len(data[at:hi].rstrip())
        if kept:
            hi = at + kept
            break
        hi = at
    return memoryview(data)[lo:hi]


def sdk_events(data: bytes, max_events: int, max_values: int | None = None) -> list[Any]:
    """The events of an SDK's JSON body: an array, or one object (wrapped); counted
    before it is parsed, as parse_events."""
    text = stripped(data)
    if not text:
        return []
    if bytes(text[:1]) not in (b"[", b"{"):
        # not JSON at all (orjson would first copy the whole body to find out)
        raise Refused(400, "body is not valid JSON: it starts with neither [ nor {")
    jsonscan.check(text, jsonscan.Limits(max_events, max_values))
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise Refused(400, f"body is not valid JSON: {e}") from None
    if type(parsed) is dict:
        return [parsed]
    if type(parsed) is not list:
        raise Refused(400, "body must be a JSON array of events")
    return parsed


ProtobufList = Callable[[bytes, int | None, int | None, int | None], list[dict[str, Any]]]


class Decoders:
    """Each collector's body turned into filed rows, within the batch limits."""

    def __init__(
        self,
        max_body_bytes: int,
        max_batch_events: int,
        mapper: sdk.Mapper,
        max_batch_values: int | None = None,
    ) -> None:
        self.max_body_bytes = max_body_bytes
        self.max_batch_events = max_batch_events
        self.max_batch_values = max_batch_values
        self.mapper = mapper

    def _parse(
        self,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        body: bytes,
        protobuf_list: ProtobufList,
        what: str,
    ) -> list[Any]:
        """The body decoded as its headers say, else, when that does not parse, as what it
        may be when they lie (spec §2.1 step 5); 400 naming the first failure otherwise."""
        if not body.strip():
            return []
        first: Refused | None = None
        try:
            guided = [codecs.decode(headers, query, body, self.max_body_bytes)]
        except Refused as e:
            if e.status == 413:
                raise
            first, guided = Refused(e.status, e.message, e.errors), []
        protobuf = "protobuf" in headers.get("content-type", "").lower()
        for payload in itertools.chain(guided, _lazy(codecs.sniff, body, self.max_body_bytes)):
            if payload.protobuf and not protobuf:
                continue
            try:
                if payload.protobuf:
                    return protobuf_list(
                        payload.data,
                        self.max_batch_events,
                        self.max_batch_values,
                        jsonscan.EVENT_VALUES,
                    )
                return sdk_events(payload.data, self.max_batch_events, self.max_batch_values)
            except trackerpb.TooManyEvents as e:
                raise Refused(413, f"{e} in one batch") from None
            except trackerpb.BadProtobuf as e:
                first = first or Refused(400, f"body is not a valid protobuf {what}: {e}")
            except Refused as e:
                if e.status == 413:
                    raise
                # a copy: `e` would hold this frame (and the body) in a reference cycle
                first = first or Refused(e.status, e.message, e.errors)
        detail = f": {first.message}" if first is not None else ""
        raise Refused(400, f"body is not {what} in any encoding GrowingIO's SDKs use{detail}")

    def events(
        self,
        family: str,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        body: bytes,
        origin: sdk.Origin,
    ) -> sdk.Filed:
        """SDK events of a family ("cdp": JSON or EventV3List protobuf; "saas": short-key
        JSON), in any of the SDKs' encodings, filed."""
        events = self._parse(headers, query, body, trackerpb.decode_events, "a list of events")
        return (
            self.mapper.cdp(events, origin) if family == "cdp" else self.mapper.saas(events, origin)
        )

    def items(
        self, headers: Mapping[str, str], query: Mapping[str, str], body: bytes, kind: str
    ) -> sdk.Filed:
        """Items (ItemDtoList) or user mappings (UserMappingDtoList): checked, counted, and
        not exported (no v2 type holds them)."""
        decode = trackerpb.decode_items if kind == "item" else trackerpb.decode_user_mappings
        entries = self._parse(headers, query, body, decode, f"a list of {kind}s")
        filed = sdk.Filed(ingest.Batch(), events=len(entries))
        for i, entry in enumerate(entries):
            if type(entry) is not dict:
                filed.batch.rejected.append(ingest.Rejection(i, "", "expected a JSON object"))
            else:
                filed.unexported += 1
        return filed

    def native(self, body: bytes, now: int) -> ingest.Batch:
        """The native event API: NDJSON, a JSON array or a single object."""
        events = parse_events(body, True, self.max_batch_events, self.max_batch_values)
        return ingest.native(events, now)
