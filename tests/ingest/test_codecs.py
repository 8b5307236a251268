"""The SDK body decoders against the libraries that encode them (hypothesis): protobuf
(GrowingIO's own event_v3_pb2), snappy raw and framed, LZ4 block, XOR, the image query,
and their bounds."""

from __future__ import annotations

import contextlib
import json
import resource
import time
from typing import Any

import cramjam
import lz4.block
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawexport.ingest import codecs, trackerpb
from rawexport.ingest.codecs import Refused

MIB = 1 << 20
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
int32 = st.integers(-(2**31), 2**31 - 1)
int64 = st.integers(-(2**63), 2**63 - 1)
maps = st.dictionaries(texts, texts, max_size=3)

# event_v3.proto fields the tracker's generated module knows (it predates 56 and 57)
STRING_FIELDS = [
    "device_id", "user_id", "gio_id", "session_id", "data_source_id", "platform", "domain",
    "path", "query", "title", "referral_page", "language", "sdk_version", "app_version",
    "event_name", "protocol_type", "text_value", "xpath", "hyperlink", "url_scheme",
    "app_state", "network_state", "app_channel", "page_name", "platform_version",
    "device_brand", "device_model", "device_type", "operating_system", "app_name", "imei",
    "android_id", "oaid", "google_advertising_id", "idfa", "idfv", "orientation", "project_key",
    "user_key",
]  # fmt: skip
INT64_FIELDS = ["timestamp", "global_sequence_id", "page_show_timestamp", "send_time"]
INT32_FIELDS = ["event_sequence_id", "screen_height", "screen_width", "index"]


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


events = st.fixed_dictionaries(
    {},
    optional={
        **{f: texts for f in STRING_FIELDS},
        **{f: int64 for f in INT64_FIELDS},
        **{f: int32 for f in INT32_FIELDS},
        "event_type": st.integers(0, 10),
        "latitude": st.floats(allow_nan=False),
        "longitude": st.floats(allow_nan=False),
        "attributes": maps,
        "extra_sdk": maps,
        "resource_item": st.fixed_dictionaries(
            {}, optional={"id": texts, "key": texts, "attributes": maps}
        ),
    },
)


def expected(fields: dict[str, Any]) -> dict[str, Any]:
    """What the decoder gives for an event: JSON names, zero values left out (proto3)."""
    out: dict[str, Any] = {"eventType": "VISIT"}
    for name, value in fields.items():
        if name == "event_type":
            out["eventType"] = trackerpb.EVENT_TYPES[value]
        elif name == "resource_item":  # set, so sent, even when empty
            out["resourceItem"] = {k: v for k, v in value.items() if v}
        elif value:
            out[camel(name)] = value
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(events, max_size=4))
def test_protobuf_matches_growingios_own_module(batch: list[dict[str, Any]]) -> None:
    from growingio_tracker_protobuf import event_v3_pb2 as pb

    message = pb.EventV3List()
    for fields in batch:
        dto = message.values.add()
        for name, value in fields.items():
            if name in ("attributes", "extra_sdk"):
                getattr(dto, name).update(value)
            elif name == "resource_item":
                dto.resource_item.id = value.get("id", "")
                dto.resource_item.key = value.get("key", "")
                dto.resource_item.attributes.update(value.get("attributes", {}))
                dto.resource_item.SetInParent()
            else:
                setattr(dto, name, value)
    decoded = trackerpb.decode_events(message.SerializeToString())
    assert decoded == [expected(f) for f in batch]


def test_protobuf_unknown_fields_and_newer_fields() -> None:
    """xcontent (56) and timezoneOffset (57) are newer than the tracker's module; unknown
    fields of every wire type are skipped; a missing event type is VISIT."""
    body = (
        b"\x0a\x02d1"  # device_id
        + b"\xc2\x03\x05/#buy"  # 56 xcontent
        + b"\xca\x03\x01" + b"8"  # 57 timezoneOffset
        + b"\xf8\x07\x05"  # 127 varint
        + b"\xf9\x07" + b"\x00" * 8  # 127 fixed64
        + b"\xfd\x07" + b"\x00" * 4  # 127 fixed32
        + b"\xfa\x07\x02hi"  # 127 bytes
    )  # fmt: skip
    event = b"\x0a" + bytes([len(body)]) + body
    assert trackerpb.decode_events(event) == [
        {"eventType": "VISIT", "deviceId": "d1", "xcontent": "/#buy", "timezoneOffset": "8"}
    ]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_protobuf_garbage_is_an_error_not_a_crash(data: bytes) -> None:
    with contextlib.suppress(trackerpb.BadProtobuf):
        assert isinstance(trackerpb.decode_events(data, 50), list)


def test_items_and_user_mappings() -> None:
    items = b"\x12\x17\x0a\x0242\x12\x03sku\x1a\x0c\x0a\x05color\x12\x03red"  # spec §2.6
    assert trackerpb.decode_items(items) == [
        {"id": "42", "key": "sku", "attributes": {"color": "red"}}
    ]
    assert trackerpb.decode_user_mappings(b"\x0a\x06\x0a\x02pk\x10\x01") == [
        {"projectKey": "pk", "sendTime": 1}
    ]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=5000))
def test_snappy_raw_and_framed(data: bytes) -> None:
    assert codecs.unsnappy(bytes(cramjam.snappy.compress_raw(data)), MIB) == data
    if data:  # cramjam frames nothing as no bytes at all, which is no stream
        assert codecs.unsnappy(bytes(cramjam.snappy.compress(data)), MIB) == data


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=5000))
def test_lz4_block(data: bytes) -> None:
    block = lz4.block.compress(data, store_size=False)
    if data:
        assert codecs.unlz4(block, MIB) == data
        assert codecs.unlz4(block, len(data)) == data
    if len(data) > 1:
        with pytest.raises(Refused) as e:
            codecs.unlz4(block, len(data) - 1)
        assert e.value.status == 413


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_lz4_garbage_is_400_or_bytes(data: bytes) -> None:
    try:
        assert isinstance(codecs.unlz4(data, 4096), bytes)
    except Refused as e:
        assert e.status in (400, 413)


@given(st.binary(max_size=300), st.integers(0, 2**45))
def test_xor_is_its_own_inverse(data: bytes, stm: int) -> None:
    once = codecs.xor(data, str(stm))
    assert all(a ^ b == stm & 0xFF for a, b in zip(once, data, strict=True))
    assert codecs.xor(once, str(stm)) == data


def test_xor_needs_ascii_digits() -> None:
    for bad in ("", "²", "12a", "-5"):
        with pytest.raises(Refused):
            codecs.xor(b"x", bad)


@given(st.text(max_size=200))
def test_image_data_is_the_rest_of_the_query(value: str) -> None:
    from urllib.parse import quote

    raw = b"stm=1&compress=0&data=" + quote(value, safe="&=+/:[]{},").encode()
    assert codecs.image_data(raw) == value.encode()
    assert codecs.image_data(b"xdata=1&data=" + quote(value).encode()) == value.encode()


def bounded(decode: Any, body: bytes, limit: int) -> float:
    """Seconds a decoder took to refuse a body that expands past the limit; RSS bounded."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(Refused) as e:
        decode(body, limit)
    assert e.value.status == 413
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown < 64 * 1024, f"RSS grew {grown} KiB"
    return time.perf_counter() - start


def test_every_decoder_stops_at_the_limit() -> None:
    """A 16 KB body that would expand to hundreds of MB stops at the limit, quickly."""
    huge = b"[" + b"{}," * 100_000_000  # 300 MB once decoded
    small = bytes(cramjam.snappy.compress_raw(b"a" * 10_000_000))
    assert bounded(codecs.unsnappy, small, MIB) < 1
    framed = bytes(cramjam.snappy.compress(b"a" * 50_000_000))
    assert bounded(codecs.unsnappy, framed, MIB) < 1
    block = lz4.block.compress(huge[:30_000_000], store_size=False)
    assert bounded(codecs.unlz4, block, MIB) < 1
    import gzip

    bomb = gzip.compress(huge[:50_000_000])
    assert bounded(lambda b, n: codecs.gunzip(b, "gzip", n), bomb, MIB) < 2


def test_sniffing_finds_what_lying_headers_hide() -> None:
    text = json.dumps([{"t": "cstm"}]).encode()
    snappy = bytes(cramjam.snappy.compress_raw(text))
    assert [p.data for p in codecs.sniff(text, MIB) if not p.protobuf] == [text]
    assert [p.data for p in codecs.sniff(snappy, MIB) if not p.protobuf] == [text]
