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
    """A body decoded by its Content-Encoding (identity or gzip); 413 past `limit` once decoded.

    Decompression stops at `limit + 1` bytes, so a small bomb never grows past the limit.
    Concatenated gzip members (RFC 1952 allows them, `cat a.gz b.gz` makes them) are all
    decoded, within the same limit.
    """
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise Refused(400, f"unsupported Content-Encoding {encoding}")
    out = bytearray()
    rest = body
    while True:
        d = zlib.decompressobj(wbits=31)
        try:
            out += d.decompress(rest, limit + 1 - len(out))
        except zlib.error as e:
            raise Refused(400, f"bad gzip body: {e}") from None
        if len(out) > limit or d.unconsumed_tail:
            raise Refused(413, f"body larger than {limit} bytes once decompressed")
        if not d.eof:
            raise Refused(400, "truncated gzip body")
        rest = d.unused_data
        if not rest.strip(b"\0"):  # trailing NUL padding is allowed after the last member
            return bytes(out)


_FRAME_HEADER = b"\xff\x06\x00\x00sNaPpY"  # a framed snappy stream's first chunk


def _varint(data: bytes) -> int | None:
    value = shift = 0
    for i, b in enumerate(data[:10]):
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value if i < 9 else None
        shift += 7
    return None


def unsnappy(body: bytes, limit: int) -> bytes:
    """A snappy body: raw block (python-snappy's compress, snappyjs) or framed stream.

    A raw block states its decompressed length first: a block that claims more than
    `limit` is refused before anything is decompressed. A framed stream is decompressed
    chunk by chunk (each at most 64 KiB), and stops past the limit.
    """
    if body.startswith(_FRAME_HEADER):
        return _unsnappy_framed(body, limit)
    claimed = _varint(body)
    if claimed is not None and claimed > limit:
        raise Refused(413, f"body larger than {limit} bytes once decompressed")
    try:
        data = bytes(cramjam.snappy.decompress_raw(body))
    except Exception:
        raise Refused(400, "body is not valid snappy") from None
    if len(data) > limit:
        raise Refused(413, f"body larger than {limit} bytes once decompressed")
    return data


def _unsnappy_framed(body: bytes, limit: int) -> bytes:
    """A framed stream, one chunk at a time (each at most 64 KiB once decompressed, its
    CRC checked by cramjam), stopping as soon as the output passes `limit`."""
    out = bytearray()
    i = 0
    while i < len(body):
        if len(body) - i < 4:
            raise Refused(400, "body is not valid snappy")
        kind, size = body[i], int.from_bytes(body[i + 1 : i + 4], "little")
        chunk = body[i : i + 4 + size]
        if len(chunk) < 4 + size:
            raise Refused(400, "body is not valid snappy")
        i += 4 + size
        if kind in (0x00, 0x01):
            try:
                out += bytes(cramjam.snappy.decompress(_FRAME_HEADER + chunk))
            except Exception:
                raise Refused(400, "body is not valid snappy") from None
            if len(out) > limit:
                raise Refused(413, f"body larger than {limit} bytes once decompressed")
        elif 0x02 <= kind <= 0x7F:
            raise Refused(400, "body is not valid snappy")
        # 0xff (stream identifier), 0xfe (padding), 0x80-0xfd (skippable): nothing to add
    return bytes(out)


# JSON objects a batch may hold per event before it is even parsed: an event with a few
# nested maps. Parsing builds every object, so a body of 16 MiB of `{},` would build
# millions of dicts before the event count could be checked.
OBJECTS_PER_EVENT = 8


def parse_events(body: bytes, ndjson: bool = False, max_events: int | None = None) -> list[Any]:
    """A JSON array of events, or (native API) NDJSON / a single object.

    With max_events, a body that cannot hold that few events (more lines, or more JSON
    objects than OBJECTS_PER_EVENT per event) is refused with 413 before it is parsed.
    """
    text = body.strip()
    if not text:
        raise Refused(400, "empty body")
    if max_events is not None and text.count(b"{") > OBJECTS_PER_EVENT * max_events:
        raise Refused(413, f"more than {max_events} events in one batch")
    if text[:1] == b"[":
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError as e:
            raise Refused(400, f"body is not valid JSON: {e}") from None
        return parsed  # type: ignore[no-any-return]
    if not ndjson:
        raise Refused(400, "body must be a JSON array of events")
    lines = [line for line in text.split(b"\n") if line.strip()]
    if max_events is not None and len(lines) > max_events:
        raise Refused(413, f"more than {max_events} events in one batch")
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
            if not (stm.isascii() and stm.isdigit()):  # "²".isdigit() is True
                raise Refused(400, "X-Crypt-Codec 1 needs the stm query parameter")
            key = int(stm) & 0xFF
            body = (np.frombuffer(body, np.uint8) ^ np.uint8(key)).tobytes()
        if headers.get("x-compress-codec") == "2":
            body = unsnappy(body, self.max_body_bytes)
        if "protobuf" in headers.get("content-type", ""):
            try:
                events = trackerpb.decode_events(body, self.max_batch_events)
                return ingest.tracker(self._events(events), now)
            except trackerpb.TooManyEvents:
                raise Refused(
                    413, f"more than {self.max_batch_events} events in one batch"
                ) from None
            except trackerpb.BadProtobuf as e:
                raise Refused(400, f"body is not a valid EventV3List: {e}") from None
        return ingest.tracker(
            self._events(parse_events(body, max_events=self.max_batch_events)), now
        )

    def saas(self, headers: Mapping[str, str], body: bytes, ai: str, now: int) -> ingest.Batch:
        """A JSON array, or the same snappy-compressed (the web SDK sends either)."""
        if headers.get("x-compress-codec") == "2" or body.lstrip()[:1] != b"[":
            body = unsnappy(body, self.max_body_bytes)
            return ingest.saas(
                self._events(parse_events(body, max_events=self.max_batch_events)), ai, now
            )
        try:
            events = parse_events(body, max_events=self.max_batch_events)
        except Refused as e:  # a snappy block may start with "[" too
            if e.status == 413:
                raise
            try:
                events = parse_events(
                    unsnappy(body, self.max_body_bytes), max_events=self.max_batch_events
                )
            except Refused:
                raise Refused(400, "body is neither a JSON array nor snappy") from None
        return ingest.saas(self._events(events), ai, now)

    def native(self, body: bytes, now: int) -> ingest.Batch:
        """The native event API: NDJSON, a JSON array or a single object."""
        return ingest.native(
            self._events(parse_events(body, ndjson=True, max_events=self.max_batch_events)), now
        )
