"""The collectors' bodies decoded: growingio-tracker, SaaS custom events, the native event API.

Encodings (gzip, snappy, the tracker's XOR), JSON / NDJSON / protobuf parsing and the batch
limits; the HTTP routes that call these are `api.collect`.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

import cramjam
import numpy as np
import orjson

from rawexport.ingest import trackerpb
from rawexport.ingest import validate as ingest


class Refused(Exception):
    def __init__(self, status: int, message: str, errors: list[Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or []


def gunzip(body: bytes, encoding: str, limit: int) -> bytes:
    """A body decoded by its Content-Encoding (identity or gzip); 413 past `limit` once decoded."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise Refused(400, f"unsupported Content-Encoding {encoding}")
    d = zlib.decompressobj(wbits=31)
    try:
        data = d.decompress(body, limit + 1)
    except zlib.error as e:
        raise Refused(400, f"bad gzip body: {e}") from None
    if len(data) > limit or d.unconsumed_tail:
        raise Refused(413, f"body larger than {limit} bytes once decompressed")
    if not d.eof:
        raise Refused(400, "truncated gzip body")
    return data


def unsnappy(body: bytes, limit: int) -> bytes:
    """A snappy body: raw block (python-snappy's compress, snappyjs) or framed stream."""
    try:
        data = bytes(cramjam.snappy.decompress_raw(body))
    except Exception:
        try:
            data = bytes(cramjam.snappy.decompress(body))
        except Exception:
            raise Refused(400, "body is not valid snappy") from None
    if len(data) > limit:
        raise Refused(413, f"body larger than {limit} bytes once decompressed")
    return data


def parse_events(body: bytes, ndjson: bool = False) -> list[Any]:
    """A JSON array of events, or (native API) NDJSON / a single object."""
    text = body.strip()
    if not text:
        raise Refused(400, "empty body")
    if text[:1] == b"[":
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError as e:
            raise Refused(400, f"body is not valid JSON: {e}") from None
        return parsed  # type: ignore[no-any-return]
    if not ndjson:
        raise Refused(400, "body must be a JSON array of events")
    events = []
    for n, line in enumerate(text.split(b"\n"), 1):
        if line.strip():
            try:
                events.append(orjson.loads(line))
            except orjson.JSONDecodeError as e:
                raise Refused(400, f"line {n} is not valid JSON: {e}") from None
    return events


class Decoders:
    """The body of each collector turned into a store batch, within the batch limits."""

    def __init__(self, max_body_bytes: int, max_batch_events: int) -> None:
        self.max_body_bytes = max_body_bytes
        self.max_batch_events = max_batch_events

    def _events(self, events: list[Any]) -> list[Any]:
        if len(events) > self.max_batch_events:
            raise Refused(413, f"more than {self.max_batch_events} events in one batch")
        return events

    def tracker(
        self, headers: Mapping[str, str], query: Mapping[str, str], body: bytes, now: int
    ) -> ingest.Batch:
        """growingio-tracker: JSON or protobuf, optionally snappy and XOR-encrypted."""
        if headers.get("x-crypt-codec") == "1":
            stm = query.get("stm", "")
            if not stm.isdigit():
                raise Refused(400, "X-Crypt-Codec 1 needs the stm query parameter")
            key = int(stm) & 0xFF
            body = (np.frombuffer(body, np.uint8) ^ np.uint8(key)).tobytes()
        if headers.get("x-compress-codec") == "2":
            body = unsnappy(body, self.max_body_bytes)
        if "protobuf" in headers.get("content-type", ""):
            try:
                return ingest.tracker(self._events(trackerpb.decode_events(body)), now)
            except trackerpb.BadProtobuf as e:
                raise Refused(400, f"body is not a valid EventV3List: {e}") from None
        return ingest.tracker(self._events(parse_events(body)), now)

    def saas(self, headers: Mapping[str, str], body: bytes, ai: str, now: int) -> ingest.Batch:
        """A JSON array, or the same snappy-compressed (the web SDK sends either)."""
        if headers.get("x-compress-codec") == "2" or body.lstrip()[:1] != b"[":
            body = unsnappy(body, self.max_body_bytes)
            return ingest.saas(self._events(parse_events(body)), ai, now)
        try:
            events = parse_events(body)
        except Refused:  # a snappy block may start with "[" too
            try:
                events = parse_events(unsnappy(body, self.max_body_bytes))
            except Refused:
                raise Refused(400, "body is neither a JSON array nor snappy") from None
        return ingest.saas(self._events(events), ai, now)

    def native(self, body: bytes, now: int) -> ingest.Batch:
        """The native event API: NDJSON, a JSON array or a single object."""
        return ingest.native(self._events(parse_events(body, ndjson=True)), now)
