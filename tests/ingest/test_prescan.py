"""The body pre-scans (rawexport.ingest._prescan, C): the JSON scan (jsonscan) exact on
valid JSON, the same as a Python reference on any bytes, each limit at its boundary; the
LZ4 block size (codecs.unlz4) the same as the Python walk it replaced, and fast."""

from __future__ import annotations

import json
import time
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rawexport.ingest import codecs, jsonscan
from rawexport.ingest._prescan import lz4_size
from rawexport.ingest.codecs import Refused
from rawexport.ingest.jsonscan import Limits, check, scan

OK, TOO_MANY_EVENTS, TOO_MANY_VALUES, EVENT_TOO_BIG, TOO_DEEP = range(5)
NONE = (None, None, None, None)


def reference(
    data: bytes,
    max_events: int | None = None,
    max_values: int | None = None,
    max_event_values: int | None = None,
    max_depth: int | None = None,
) -> tuple[int, int, int, int, int]:
    """The scan as _jsonscan.c does it, byte by byte."""
    big = 1 << 62
    limits = (max_events, max_values, max_event_values, max_depth)
    me, mv, mev, md = (big if x is None else x for x in limits)
    depth = deepest = events = values = event_values = 0
    batch = 0
    i, n = 0, len(data)
    while i < n:
        ch = data[i : i + 1]
        if ch in b" \t\n\r,:":
            i += 1
            continue
        if ch in b"]}":
            if depth > 0:
                depth -= 1
                if depth == 0:
                    batch = 0
            i += 1
            continue
        values += 1
        if values > mv:
            return TOO_MANY_VALUES, events, values, deepest, -1
        if depth == 0 and ch == b"[":
            batch = 1
        elif depth == batch:
            events += 1
            if events > me:
                return TOO_MANY_EVENTS, events, values, deepest, -1
            event_values = 1
        else:
            event_values += 1
            if event_values > mev:
                return EVENT_TOO_BIG, events, values, deepest, events - 1
        i += 1
        if ch == b'"':
            while i < n and data[i : i + 1] != b'"':
                i += 2 if data[i : i + 1] == b"\\" else 1
            i += 1
        elif ch in b"[{":
            depth += 1
            if depth > md:
                return TOO_DEEP, events, values, deepest, events - 1
            deepest = max(deepest, depth)
        else:
            while i < n and data[i : i + 1] not in b' \t\n\r,:[]{}"':
                i += 1
    return OK, events, values, deepest, -1


def nodes(value: Any) -> tuple[int, int]:
    """The objects orjson builds for a parsed value (keys included), and its nesting."""
    if isinstance(value, list):
        inner = [nodes(v) for v in value]
        return 1 + sum(c for c, _ in inner), 1 + max((d for _, d in inner), default=0)
    if isinstance(value, dict):
        inner = [nodes(v) for v in value.values()]
        return 1 + len(value) + sum(c for c, _ in inner), 1 + max((d for _, d in inner), default=0)
    return 1, 0


SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)  # orjson's integers
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=json_values, indent=st.sampled_from([None, 1, 4]))
def test_counts_of_valid_json_are_what_the_parse_builds(value: Any, indent: int | None) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=False).encode()
    count, depth = nodes(orjson.loads(text))
    code, events, values, deepest, _ = scan(text, *NONE)
    assert (code, values, deepest) == (OK, count, depth)
    if isinstance(value, list):
        assert events == len(value)  # a batch: its elements
    else:
        assert events == 1
    assert check(text, Limits(None, None, None, None)) == events


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(lines=st.lists(json_values, max_size=6), blank=st.sampled_from(["", "\r", "  \n"]))
def test_ndjson_lines_are_events(lines: list[Any], blank: str) -> None:
    text = ("\n" + blank).join(json.dumps(v) for v in lines).encode()
    code, events, values, _, _ = scan(text, *NONE)
    wrapped = sum(1 for v in lines if isinstance(v, list))  # an array line is a batch
    assert code == OK
    assert events == len(lines) - wrapped + sum(len(v) for v in lines if isinstance(v, list))
    assert values == sum(nodes(v)[0] for v in lines)


JUNK = st.binary(max_size=60) | st.lists(
    st.sampled_from(
        [b"[", b"]", b"{", b"}", b'"', b"\\", b",", b":", b" ", b"\n", b"1", b"ab", b'\\"']
    ),  # fmt: skip
    max_size=60,
).map(b"".join)
LIMIT = st.none() | st.integers(0, 12)


@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=JUNK, limits=st.tuples(LIMIT, LIMIT, LIMIT, LIMIT))
def test_any_bytes_scan_as_the_reference(data: bytes, limits: tuple[int | None, ...]) -> None:
    assert scan(data, *limits) == reference(data, *limits)
    assert scan(bytearray(data), *limits) == scan(memoryview(data), *limits)


def test_each_limit_at_its_boundary() -> None:
    # 3 events; 10 values (the batch, 5 in the first event, 3, 1); depth 3
    batch = b'[{"a":[1,2]},{"b":"x\\"]"},3]'
    assert scan(batch, 3, 10, 5, 3) == (OK, 3, 10, 3, -1)
    assert scan(batch, 2, 10, 5, 3)[0] == TOO_MANY_EVENTS
    assert scan(batch, 3, 9, 5, 3)[0] == TOO_MANY_VALUES
    assert scan(batch, 3, 10, 4, 3)[::4] == (EVENT_TOO_BIG, 0)
    assert scan(batch, 3, 10, 5, 2)[::4] == (TOO_DEEP, 0)
    with pytest.raises(Refused) as e:
        check(batch, Limits(2, 10))
    assert (e.value.status, e.value.message) == (413, "more than 2 events in one batch")
    with pytest.raises(Refused, match="more than 9 JSON values"):
        check(batch, Limits(3, 9))
    with pytest.raises(Refused, match="^event 0 holds more than 4 JSON values$"):
        check(batch, Limits(3, 10, 4))
    with pytest.raises(Refused, match="^event 1 holds more than 3 JSON values$"):
        check(b"[1,[2,3,4]]", Limits(3, 10, 3))
    with pytest.raises(Refused, match="^event 0 nests arrays and objects deeper than 2 levels"):
        check(batch, Limits(3, 10, 5, 2))
    # the defaults: 32 levels (the batch's array included), 10 000 values an event
    deep = b"[" * 32 + b"]" * 32
    assert check(deep, Limits(1, 100)) == 1 and scan(b"[" * 33, *NONE)[3] == 33
    with pytest.raises(Refused, match="deeper than 32"):
        check(b"[" * 33, Limits(1, 100))
    assert jsonscan.EVENT_VALUES == 10_000
    event = b"[[" + b"0," * 9_998 + b"0]]"
    assert check(event, Limits(1, 20_000)) == 1
    with pytest.raises(Refused, match="event 0 holds more than 10000"):
        check(event.replace(b"[[", b"[[0,"), Limits(1, 20_000))


def test_a_bomb_is_refused_fast() -> None:
    """16 MiB of `[],` stops at the first limit passed (values, here); with no limits the
    whole body is read in well under a second."""
    bomb = b"[" + b"[]," * 5_592_404 + b"[]]"
    started = time.monotonic()
    assert scan(bomb, 50_000, 2_000_000, 10_000, 32)[:3] == (TOO_MANY_EVENTS, 50_001, 50_002)
    assert scan(bomb, None, None, None, None)[:3] == (OK, 5_592_405, 5_592_406)
    assert time.monotonic() - started < 2


# -- LZ4 block sizes ----------------------------------------------------------------------


def lz4_size_reference(block: bytes, stop: int) -> int:
    """The Python walk codecs.unlz4 used before (rawexport 5e59346)."""
    pos = out = 0
    end = len(block)
    while pos < end:
        token = block[pos]
        pos += 1
        literals = token >> 4
        if literals == 15:
            while pos < end:
                more = block[pos]
                pos += 1
                literals += more
                if more != 255:
                    break
        pos += literals
        out += literals
        if out > stop or pos + 2 > end:
            return out
        pos += 2  # the match offset
        match = token & 15
        if match == 15:
            while pos < end:
                more = block[pos]
                pos += 1
                match += more
                if more != 255:
                    break
        out += match + 4
        if out > stop:
            return out
    return out


LZ4_BYTES = st.binary(max_size=400) | st.lists(
    st.sampled_from([b"\x00", b"\xff", b"\x0f", b"\xf0", b"\x1f", b"\x00\x00", b"ab"]),
    max_size=200,
).map(b"".join)


@settings(max_examples=2000, deadline=None)
@given(block=LZ4_BYTES, stop=st.integers(0, 1 << 20))
def test_lz4_size_is_the_python_walk(block: bytes, stop: int) -> None:
    assert lz4_size(block, stop) == lz4_size_reference(block, stop)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=5000))
def test_lz4_size_of_a_real_block_is_its_data(data: bytes) -> None:
    import lz4.block

    block = lz4.block.compress(data, store_size=False)
    assert lz4_size(block, 1 << 30) == len(data)


def test_16_mib_of_junk_claimed_lz4_is_told_fast() -> None:
    """The walk took 0.3-1.5 s for each such 16 MiB body in Python, holding the GIL; in C
    about 10 ms."""
    junk = b",,\n" * (16 * 1024 * 1024 // 3)
    zeros = bytes(16 * 1024 * 1024)
    long_matches = b"\x0f\x00\x00" * (16 * 1024 * 1024 // 3)
    started = time.monotonic()
    for body in (junk, zeros, long_matches):
        with pytest.raises(Refused) as e:
            codecs.unlz4(body, 16 * 1024 * 1024)
        assert e.value.status == 413
    assert time.monotonic() - started < 1
