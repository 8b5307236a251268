"""Request bodies decoded as GrowingIO's SDKs encode them, each decoder bounded by a limit.

spec/GROWINGIO_COLLECT_SPEC.md §2: `Content-Encoding: gzip`, then XOR with `stm`
(`X-Crypt-Codec: 1`), then the compression `X-Compress-Codec` names (0 none, 1 lz-string
UTF-16, 2 snappy, 3 LZ4 block) or the web SDK's `compress` query value (1 lz-string
Uint8Array, 11 lz-string URI form); headers that lie are tolerated by sniffing. Every
decoder stops as soon as its output passes the limit: a small body never grows into
hundreds of MB.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

import cramjam
import lz4.block
import numpy as np

from rawexport.errors import UserError
from rawexport.ingest import lzstring
from rawexport.ingest._prescan import lz4_size


class Refused(UserError):
    """A request the collectors answer with `status`, the message and `errors`."""

    def __init__(self, status: int, message: str, errors: list[Any] | None = None) -> None:
        super().__init__(message, status=status, errors=errors or ())


class TooBig(Refused):
    """A body whose decoding passed the limit (413): the caller may decode it again with
    a larger limit, nothing was parsed or filed yet."""


def too_big(limit: int) -> TooBig:
    return TooBig(413, f"body larger than {limit} bytes once decompressed")


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
    parts: list[bytes] = []  # one a member: a single member is returned as decoded
    size = 0
    rest = body
    while True:
        d = zlib.decompressobj(wbits=31)
        try:
            parts.append(d.decompress(rest, limit + 1 - size))
        except zlib.error as e:
            raise Refused(400, f"bad gzip body: {e}") from None
        size += len(parts[-1])
        if size > limit or d.unconsumed_tail:
            raise too_big(limit)
        if not d.eof:
            raise Refused(400, "truncated gzip body")
        rest = d.unused_data
        if not rest.strip(b"\0"):  # trailing NUL padding is allowed after the last member
            return parts[0] if len(parts) == 1 else b"".join(parts)


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
        raise too_big(limit)
    try:
        data = bytes(cramjam.snappy.decompress_raw(body))
    except Exception:
        raise Refused(400, "body is not valid snappy") from None
    if len(data) > limit:
        raise too_big(limit)
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
                raise too_big(limit)
        elif 0x02 <= kind <= 0x7F:
            raise Refused(400, "body is not valid snappy")
        # 0xff (stream identifier), 0xfe (padding), 0x80-0xfd (skippable): nothing to add
    return bytes(out)


def unlz4(body: bytes, limit: int) -> bytes:
    """An LZ4 raw block with no size prefix (the iOS SDKs'): decoded into at most `limit`
    bytes. The size is not sent, so a block that does not fit is told from a corrupt one
    by adding up the lengths its sequences state, stopping past the limit (C: it reads
    16 MiB in about 20 ms, where a Python loop took seconds holding the GIL)."""
    if not body:
        return b""
    try:
        return bytes(lz4.block.decompress(body, uncompressed_size=limit))
    except lz4.block.LZ4BlockError:
        pass
    if lz4_size(body, limit) > limit:
        raise too_big(limit)
    raise Refused(400, "body is not a valid LZ4 block")


def xor(body: bytes, stm: str) -> bytes:
    """X-Crypt-Codec 1: every byte XOR the low byte of the `stm` query value."""
    if not (stm.isascii() and stm.isdigit()):  # "²".isdigit() is True
        raise Refused(400, "X-Crypt-Codec 1 needs the stm query parameter")
    key = int(stm) & 0xFF
    return (np.frombuffer(body, np.uint8) ^ np.uint8(key)).tobytes()


def _lz(decode: Any, body: bytes | str, limit: int) -> bytes:
    try:
        return decode(body, limit)  # type: ignore[no-any-return]
    except OverflowError:
        raise too_big(limit) from None
    except ValueError:
        raise Refused(400, "body is not valid lz-string") from None


def lz_uint8(body: bytes, limit: int) -> bytes:
    """lz-string `compressToUint8Array` (web `compress=1`): the JSON text as UTF-8."""
    return _lz(lzstring.decompress_uint8, body, limit)


def lz_uri(body: bytes | str, limit: int) -> bytes:
    """lz-string `compressToEncodedURIComponent` (web image GETs, `compress=11`)."""
    return _lz(lzstring.decompress_uri, body, limit)


def lz_utf16(body: bytes | str, limit: int) -> bytes:
    """lz-string `compressToUTF16` (mini-programs, `X-Compress-Codec: 1`), sent as UTF-8."""
    return _lz(lzstring.decompress_utf16, body, limit)


def image_data(raw_query: bytes) -> bytes:
    """The `data` value of a web image GET: everything after the first `data=` to the end
    of the raw query, percent-decoded without `+` -> space (the SDK does not URI-encode
    the body, so an `&` inside a value would split it for a form parser)."""
    at = raw_query.find(b"data=")
    while at > 0 and raw_query[at - 1 : at] != b"&":
        at = raw_query.find(b"data=", at + 1)
    if at < 0:
        return b""
    return unquote_to_bytes(raw_query[at + 5 :])


@dataclass(frozen=True)
class Payload:
    """A decoded body: the bytes to parse, and whether they are protobuf."""

    data: bytes
    protobuf: bool


def decode(
    headers: Mapping[str, str], query: Mapping[str, str], body: bytes, limit: int
) -> Payload:
    """The body as the headers and the `compress` query value say it is encoded (§2.1
    steps 2-4); Refused(400) when that fails, Refused(413) past the limit."""
    protobuf = "protobuf" in headers.get("content-type", "").lower()
    if headers.get("x-crypt-codec", "").strip() == "1":
        body = xor(body, query.get("stm", ""))
    codec = headers.get("x-compress-codec", "").strip()
    if codec == "2":
        body = unsnappy(body, limit)
    elif codec == "3":
        body = unlz4(body, limit)
    elif codec == "1":
        body = lz_utf16(body, limit)
    elif codec in ("", "0"):
        compress = query.get("compress", "")
        if compress == "1":
            body = lz_uint8(body, limit)
        elif compress == "11":
            body = lz_uri(body, limit)
    else:
        raise Refused(400, f"unsupported X-Compress-Codec {codec}")
    return Payload(body, protobuf)


def sniff(body: bytes, limit: int) -> list[Payload]:
    """What a body whose headers lied may be (§2.1 step 5), most likely first: plain JSON
    (the SaaS Android debug mode sends it with both codec headers), a snappy block (the
    Python SaaS SDK sends it with no header), lz-string Uint8Array, protobuf."""
    out: list[Payload] = []
    head = body.lstrip()[:1]
    if head in (b"[", b"{"):
        out.append(Payload(body, False))
    for unpack in (unsnappy, lz_uint8, unlz4):
        try:
            data = unpack(body, limit)
        except Refused as e:
            if e.status == 413:
                raise
            continue
        if data.lstrip()[:1] in (b"[", b"{"):
            out.append(Payload(data, False))
    out.append(Payload(body, True))
    return out
