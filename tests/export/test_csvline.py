"""The native CSV line builder: GrowingIO dialect fields, hashes, dest, gather, key ranges."""

from __future__ import annotations

import bisect
import csv
import io
import math
import random
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rawexport.export import _csvline
from rawexport.export.csvline import (
    DICT,
    INT64,
    STR32,
    STR64,
    build_lines,
    encode_values,
    gather_lines,
    key_order,
    key_ranges,
)

Value = str | int | None
T = TypeVar("T")

SPECIALS = frozenset(',"\\\n\r')

NASTY: list[str | None] = [
    "",
    None,
    "plain",
    ",",
    '"',
    "\\",
    '\\"',
    "a\\",
    "\n",
    "\r",
    "\r\n",
    "a,b",
    'say "hi"',
    '""',
    "é,中文",
    "emoji 😀 ok",
    "😀,😀",
    "  spaced  ",
    "tab\there",
    "a'b",
    "null",
    "x" * 15,
    "x" * 16,
    "x" * 17,
    "x" * 15 + ",",
    "x" * 16 + '"',
    "x" * 17 + "\\",
]


def _long(length: int, specials: dict[int, str]) -> str:
    chars = [chr(ord("a") + i % 26) for i in range(length)]
    for pos, ch in specials.items():
        chars[pos] = ch
    return "".join(chars)


# Values over 100 bytes with specials at and around the 16-byte block boundaries.
LONG: list[str] = [
    _long(120, {}),
    _long(120, {15: ","}),
    _long(120, {16: '"'}),
    _long(120, {17: "\\"}),
    _long(120, {31: "\n"}),
    _long(120, {32: "\r"}),
    _long(130, {15: '"', 16: "\\", 17: '"', 31: "\\", 32: '"', 129: "\\"}),
    _long(101, {0: '"', 100: '"'}),
    _long(112, {47: ",", 48: ",", 63: '"', 64: '"', 111: "\\"}),
    "é" * 60 + "," + "中" * 40,
    "😀" * 30 + '"' + "x" * 17,
    "\\" * 40,
    '"' * 33,
]

ALL_VALUES = NASTY + LONG

TEXT_ALPHABET = st.one_of(
    st.sampled_from([",", '"', "\\", "\n", "\r", "a", " ", "é", "中", "😀"]),
    st.characters(codec="utf-8"),
)
TEXTS = st.text(TEXT_ALPHABET, max_size=40)
MAYBE_TEXTS = st.none() | TEXTS
REPRESENTATIONS = ["string", "large_string", "dict", "sliced", "large_sliced", "dict_sliced"]


def ref_field(value: Value, quote: bool) -> str:
    """The GrowingIO dialect field of one value, in plain Python."""
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    if not quote or not SPECIALS.intersection(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ref_line(row: Sequence[Value], quoted: Sequence[bool]) -> str:
    return ",".join(ref_field(v, q) for v, q in zip(row, quoted, strict=True)) + "\n"


def represent(values: Sequence[str | None], how: str) -> pa.Array:
    """The same text values as one of several Arrow representations."""
    padded = ['pad,"\\', None, *values, "tail\\"]
    if how == "string":
        return pa.array(values, pa.string())
    if how == "large_string":
        return pa.array(values, pa.large_string())
    if how == "dict":
        return pa.array(values, pa.string()).dictionary_encode()
    if how == "sliced":
        return pa.array(padded, pa.string()).slice(2, len(values))
    if how == "large_sliced":
        return pa.array(padded, pa.large_string()).slice(2, len(values))
    if how == "dict_sliced":
        return pa.array(padded, pa.large_string()).dictionary_encode().slice(2, len(values))
    raise AssertionError(how)


def parse(text: str) -> list[list[str]]:
    rows = csv.reader(io.StringIO(text, newline=""), quotechar='"', escapechar="\\")
    return [row if row else [""] for row in rows]  # a blank line is one empty field


def lines_of(fields: Sequence[pa.Array], quoted: Sequence[bool]) -> list[str]:
    lines, hashes = build_lines(fields, quoted)
    assert lines.type == pa.large_string()
    assert hashes.type == pa.uint64()
    assert len(lines) == len(hashes) == len(fields[0])
    return [str(x) for x in lines.to_pylist()]


def columns_of(rows: Sequence[Sequence[T]], ncols: int) -> list[list[T]]:
    return [[row[j] for row in rows] for j in range(ncols)]


@pytest.mark.parametrize("how", REPRESENTATIONS)
@pytest.mark.parametrize("quote", [True, False])
def test_nasty_values_match_reference(how: str, quote: bool) -> None:
    got = lines_of([represent(ALL_VALUES, how)], [quote])
    assert got == [ref_line([v], [quote]) for v in ALL_VALUES]


@pytest.mark.parametrize("how", REPRESENTATIONS)
def test_nasty_values_read_back(how: str) -> None:
    values = ALL_VALUES
    shifted = values[1:] + values[:1]
    fields = [represent(values, how), represent(shifted, "string"), represent(values, how)]
    got = lines_of(fields, [True, True, True])
    assert got == [ref_line(row, [True] * 3) for row in zip(values, shifted, values, strict=True)]
    parsed = parse("".join(got))
    assert parsed == [[v or "" for v in row] for row in zip(values, shifted, values, strict=True)]


def test_block_boundary_specials() -> None:
    values: list[str | None] = []
    for length in (14, 15, 16, 17, 18, 31, 32, 33, 47, 48, 49, 100, 129):
        values.append(_long(length, {}))
        for pos in (0, 15, 16, 17, 31, 32, length - 1):
            if pos < length:
                for ch in (",", '"', "\\", "\n", "\r"):
                    values.append(_long(length, {pos: ch}))
    for how in ("string", "large_string", "sliced", "large_sliced", "dict"):
        arr = represent(values, how)
        assert lines_of([arr], [True]) == [ref_line([v], [True]) for v in values]
        assert lines_of([arr, arr], [True, False]) == [
            ref_line([v, v], [True, False]) for v in values
        ]
        assert encode_values(
            arr.dictionary_decode() if how == "dict" else arr, True
        ).to_pylist() == [ref_field(v, True) for v in values]


def test_tight_buffers_value_at_end_of_data() -> None:
    """Data buffers with no padding: the last values end exactly at the buffer's end."""
    values = ["a,b", 'x"', "plain", "q" * 17, "z\\", _long(40, {15: '"', 33: "\\", 39: ","})]
    data = "".join(values).encode()
    ends = np.cumsum([0] + [len(v.encode()) for v in values])
    offsets32 = pa.py_buffer(ends.astype(np.int32).tobytes())
    offsets64 = pa.py_buffer(ends.astype(np.int64).tobytes())
    for arr in (
        pa.StringArray.from_buffers(len(values), offsets32, pa.py_buffer(data)),
        pa.LargeStringArray.from_buffers(len(values), offsets64, pa.py_buffer(data)),
    ):
        for quote in (True, False):
            assert lines_of([arr], [quote]) == [ref_line([v], [quote]) for v in values]
            assert encode_values(arr, quote).to_pylist() == [ref_field(v, quote) for v in values]
        for k in range(len(values)):
            tail = arr.slice(k)
            assert lines_of([tail], [True]) == [ref_line([v], [True]) for v in values[k:]]


def test_integers_in_decimal() -> None:
    fields: list[pa.Array] = []
    expected: list[list[Value]] = []
    for t in (pa.int8(), pa.int16(), pa.int32(), pa.int64()):
        info = np.iinfo(t.to_pandas_dtype())
        vals: list[int | None] = [int(info.min), int(info.max), 0, -1, 1, None, 10, -10]
        fields.append(pa.array(vals, t))
        expected.append(list(vals))
    for t in (pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64()):
        top = 2**63 - 1 if t == pa.uint64() else int(np.iinfo(t.to_pandas_dtype()).max)
        uvals: list[int | None] = [0, top, 1, None, 9, 99, 100, 200]
        fields.append(pa.array(uvals, t))
        expected.append(list(uvals))
    rows = list(zip(*expected, strict=True))
    got = lines_of(fields, [True] * len(fields))
    assert got == [ref_line(row, [True] * len(fields)) for row in rows]
    assert got[0].startswith("-128,-32768,-2147483648,-9223372036854775808,0,")
    assert got[1].startswith("127,32767,2147483647,9223372036854775807,")


def test_integers_sliced_with_nulls() -> None:
    vals = [None if i % 7 == 3 else (i * 7919 - 50_000) * (-1) ** i for i in range(300)]
    for t in (pa.int64(), pa.int32(), pa.int16()):
        arr = pa.array(vals, pa.int64()).cast(t, safe=False)
        want = arr.to_pylist()
        for start in (0, 1, 5, 13, 130):
            part = arr.slice(start, 150)
            assert lines_of([part], [False]) == [
                ref_line([v], [False]) for v in want[start : start + 150]
            ]


@pytest.mark.parametrize("t", [pa.float64(), pa.float32()])
def test_floats(t: pa.DataType) -> None:
    vals = [
        0.1,
        -0.0,
        0.0,
        1.5,
        -2.25,
        1e300,
        1e-7,
        5e-324,
        123456789012345678.0,
        float("nan"),
        float("inf"),
        float("-inf"),
        None,
    ]
    arr = pa.array(vals, pa.float64()).cast(t, safe=False)
    text = pc.cast(arr, pa.string()).to_pylist()
    expected = [
        "" if v is None or not math.isfinite(v) else str(s)
        for v, s in zip(arr.to_pylist(), text, strict=True)
    ]
    assert lines_of([arr], [True]) == [e + "\n" for e in expected]
    assert lines_of([arr.slice(3)], [True]) == [e + "\n" for e in expected[3:]]
    labels = pa.array(["x"] * len(vals))
    assert lines_of([labels, arr], [True, True]) == ["x," + e + "\n" for e in expected]


def test_null_only_columns() -> None:
    got = lines_of(
        [pa.nulls(4), pa.array([None] * 4, pa.string()), pa.nulls(4, pa.int64())], [True] * 3
    )
    assert got == [",,\n"] * 4
    empty_dict = pa.DictionaryArray.from_arrays(
        pa.array([None, None], pa.int32()), pa.array([], pa.string())
    )
    assert lines_of([empty_dict, pa.array(["a", "b"])], [True, True]) == [",a\n", ",b\n"]


@pytest.mark.parametrize("quote", [True, False])
def test_dictionary_same_as_decoded(quote: bool) -> None:
    rng = random.Random(7)
    entries = [v for v in ALL_VALUES if v is not None]
    indices: list[int | None] = [
        None if rng.random() < 0.1 else rng.randrange(len(entries)) for _ in range(1000)
    ]
    for value_type in (pa.string(), pa.large_string()):
        for index_type in (pa.int8(), pa.int16(), pa.int32(), pa.int64()):
            d = pa.DictionaryArray.from_arrays(
                pa.array(indices, index_type), pa.array(entries, value_type)
            )
            plain = d.dictionary_decode()
            for start, length in ((0, 1000), (3, 500), (129, 700)):
                a, b = d.slice(start, length), plain.slice(start, length)
                la, ha = build_lines([a, b], [quote, quote])
                lb, hb = build_lines([b, a], [quote, quote])
                assert la.equals(lb)
                assert ha.equals(hb)
                want = [ref_line([v, v], [quote, quote]) for v in b.to_pylist()]
                assert la.to_pylist() == want
    with_null_entry = pa.DictionaryArray.from_arrays(
        pa.array([0, 1, 2, 1], pa.int32()), pa.array(["a,b", None, '"'])
    )
    assert lines_of([with_null_entry], [quote]) == [
        ref_line([v], [quote]) for v in ["a,b", None, '"', None]
    ]


def test_dictionary_of_integers() -> None:
    arr = pa.array([5, None, -3, 5, 2**40], pa.int64()).dictionary_encode()
    assert lines_of([arr], [True]) == ["5\n", "\n", "-3\n", "5\n", f"{2**40}\n"]


def test_other_types_are_cast_to_text() -> None:
    arr = pa.array([True, None, False])
    assert lines_of([arr], [True]) == ["true\n", "\n", "false\n"]


def _random_value(rng: random.Random) -> str | None:
    r = rng.random()
    if r < 0.08:
        return None
    if r < 0.15:
        return ""
    if r < 0.5:
        length = rng.randrange(1, 17)  # short: one 16-byte move
    elif r < 0.8:
        length = rng.randrange(17, 40)
    else:
        length = rng.randrange(100, 300)
    pool = 'abcdefgh ,"\\\n\ré中😀'
    weights = [8] * 9 + [1] * 5 + [2, 2, 1]
    return "".join(rng.choices(pool, weights=weights, k=length))


def _wide_batch(
    rng: random.Random, nrows: int, ncols: int
) -> tuple[list[pa.Array], list[bool], list[list[Value]]]:
    """A batch mixing text (every representation), integers, quoted and not, by column."""
    fields: list[pa.Array] = []
    quoted: list[bool] = []
    values: list[list[Value]] = []
    for j in range(ncols):
        if j % 9 == 4:
            ints: list[Value] = [
                None if rng.random() < 0.1 else rng.randrange(-(2**63), 2**63) for _ in range(nrows)
            ]
            fields.append(pa.array(ints, pa.int64()))
            quoted.append(True)
            values.append(ints)
            continue
        col: list[str | None]
        if j % 5 == 2:  # few distinct values: dictionary-friendly
            distinct = [_random_value(rng) for _ in range(12)]
            col = [rng.choice(distinct) for _ in range(nrows)]
        else:
            col = [_random_value(rng) for _ in range(nrows)]
        fields.append(represent(col, REPRESENTATIONS[j % len(REPRESENTATIONS)]))
        quoted.append(j % 7 != 6)
        values.append(list(col))
    return fields, quoted, values


def test_wide_batch_matches_reference_line_by_line() -> None:
    rng = random.Random(20240611)
    nrows, ncols = 3000, 40
    fields, quoted, values = _wide_batch(rng, nrows, ncols)
    rows = list(zip(*values, strict=True))
    got = lines_of(fields, quoted)
    want = [ref_line(row, quoted) for row in rows]
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g == w, f"row {i}"
    # only quoted text and integers read back exactly
    readable = [j for j in range(ncols) if quoted[j]]
    sub = lines_of([fields[j] for j in readable], [True] * len(readable))
    parsed = parse("".join(sub))
    assert parsed == [[ref_field(row[j], False) for j in readable] for row in rows]


def test_wide_batch_with_dest_permutation() -> None:
    rng = random.Random(99)
    nrows, ncols = 2000, 40
    fields, quoted, values = _wide_batch(rng, nrows, ncols)
    plain, plain_hashes = build_lines(fields, quoted)
    dest = np.random.default_rng(5).permutation(nrows).astype(np.int64)
    lines, hashes = build_lines(fields, quoted, dest)
    got = lines.to_pylist()
    got_hashes = hashes.to_pylist()
    want = plain.to_pylist()
    want_hashes = plain_hashes.to_pylist()
    rows = list(zip(*values, strict=True))
    for i in range(nrows):
        assert got[dest[i]] == want[i] == ref_line(rows[i], quoted), f"row {i}"
        assert got_hashes[dest[i]] == want_hashes[i]
    # the offsets are a proper large_string array: concatenation is the lines in dest order
    order = np.argsort(dest)
    assert "".join(got) == "".join(want[i] for i in order)


def test_dest_identity_and_reverse() -> None:
    arr = pa.array([f"v{i}," * (i % 5) for i in range(300)])
    plain, hashes = build_lines([arr], [True])
    same, same_h = build_lines([arr], [True], np.arange(300))
    assert same.equals(plain) and same_h.equals(hashes)
    rev, rev_h = build_lines([arr], [True], np.arange(299, -1, -1))
    assert rev.to_pylist() == plain.to_pylist()[::-1]
    assert rev_h.to_pylist() == hashes.to_pylist()[::-1]


@pytest.mark.parametrize(
    "dest",
    [
        [0, 0, 1],
        [0, 1, 3],
        [0, 1, -1],
        [2, 1],
        [0, 1, 2, 3],
        [2**40, 0, 1],
    ],
    ids=["duplicate", "past-end", "negative", "short", "long", "huge"],
)
def test_dest_must_be_a_permutation(dest: list[int]) -> None:
    arr = pa.array(["a", "b", "c"])
    with pytest.raises(ValueError):
        build_lines([arr], [True], np.asarray(dest, dtype=np.int64))


def test_raw_dest_must_be_a_permutation() -> None:
    arr = pa.array(["a", "b", "c"])
    validity, offsets, data = arr.buffers()
    column = (STR32, True, None, offsets, data, None, 0)
    for bad in ([0, 1], [0, 0, 1], [1, 2, 3], [-1, 0, 1]):
        with pytest.raises(ValueError):
            _csvline.build(3, [column], pa.allocate_buffer, np.asarray(bad, dtype=np.int64))
    got = _csvline.build(3, [column], pa.allocate_buffer, np.asarray([2, 0, 1], np.int64))
    lines = pa.LargeStringArray.from_buffers(3, got[1], got[0])
    assert lines.to_pylist() == ["b\n", "c\n", "a\n"]


def test_build_lines_argument_checks() -> None:
    with pytest.raises(ValueError):
        build_lines([], [])
    with pytest.raises(ValueError):
        build_lines([pa.array(["a"])], [True, False])
    with pytest.raises(ValueError):
        build_lines([pa.array(["a"]), pa.array(["a", "b"])], [True, True])
    lines, hashes = build_lines([pa.array([], pa.string())], [True])
    assert len(lines) == 0 and lines.type == pa.large_string()
    assert len(hashes) == 0 and hashes.type == pa.uint64()


def test_hash_depends_only_on_the_line() -> None:
    values = ALL_VALUES * 3
    variants = [lines_of([represent(values, how)], [True]) for how in REPRESENTATIONS]
    assert all(v == variants[0] for v in variants)
    hashes = [build_lines([represent(values, how)], [True])[1] for how in REPRESENTATIONS]
    assert all(h.equals(hashes[0]) for h in hashes)
    # deterministic across calls
    again = build_lines([represent(values, "string")], [True])[1]
    assert again.equals(hashes[0])
    # equal lines, different columns: "12,a\n" from (int, text) and from one verbatim field
    two = build_lines([pa.array([12, -5]), pa.array(["a", "b,c"])], [True, True])
    one = build_lines([pa.array(["12,a", '-5,"b,c"'], pa.large_string())], [False])
    assert two[0].equals(one[0])
    assert two[1].equals(one[1])


def test_hashes_of_equal_lines_equal_and_distinct_lines_differ() -> None:
    rng = random.Random(3)
    col_a = [_random_value(rng) for _ in range(4000)]
    col_b = [rng.choice(["x", None, "y,z", "", '"']) for _ in range(4000)]
    lines, hashes = build_lines([pa.array(col_a), pa.array(col_b)], [True, True])
    by_line: dict[str, int] = {}
    for line, h in zip(lines.to_pylist(), hashes.to_pylist(), strict=True):
        assert by_line.setdefault(line, h) == h
    assert len(set(by_line.values())) == len(by_line)


@given(
    st.integers(1, 4).flatmap(
        lambda ncols: st.tuples(
            st.lists(
                st.lists(MAYBE_TEXTS, min_size=ncols, max_size=ncols), min_size=1, max_size=30
            ),
            st.lists(st.booleans(), min_size=ncols, max_size=ncols),
            st.lists(st.sampled_from(REPRESENTATIONS), min_size=ncols, max_size=ncols),
        )
    )
)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_lines_match_reference_hypothesis(
    case: tuple[list[list[str | None]], list[bool], list[str]],
) -> None:
    rows, quoted, hows = case
    ncols = len(quoted)
    cols = columns_of(rows, ncols)
    fields = [represent(c, how) for c, how in zip(cols, hows, strict=True)]
    lines, hashes = build_lines(fields, quoted)
    got = lines.to_pylist()
    assert got == [ref_line(row, quoted) for row in rows]
    plain = [pa.array(c, pa.string()) for c in cols]
    assert build_lines(plain, quoted)[1].equals(hashes)
    all_quoted = build_lines(fields, [True] * ncols)[0].to_pylist()
    assert parse("".join(all_quoted)) == [[v or "" for v in row] for row in rows]


@given(st.lists(MAYBE_TEXTS, max_size=40), st.booleans(), st.sampled_from(REPRESENTATIONS[:2]))
@settings(max_examples=200, deadline=None)
def test_encode_values_hypothesis(values: list[str | None], quote: bool, how: str) -> None:
    arr = represent(values, how)
    got = encode_values(arr, quote)
    assert got.type == pa.large_string()
    assert got.to_pylist() == [ref_field(v, quote) for v in values]
    if values:
        sliced = represent(values, "large_sliced" if how == "large_string" else "sliced")
        assert encode_values(sliced, quote).to_pylist() == got.to_pylist()


def test_encode_values_fixed() -> None:
    assert encode_values(pa.array([], pa.string()), True).to_pylist() == []
    arr = pa.array(["a,b", None, 'x"', "\\", "plain", ""])
    assert encode_values(arr, True).to_pylist() == ['"a,b"', "", '"x\\""', '"\\\\"', "plain", ""]
    assert encode_values(arr, False).to_pylist() == ["a,b", "", 'x"', "\\", "plain", ""]


def _line_chunks() -> list[pa.Array]:
    a = build_lines([pa.array([f"a{i}" for i in range(10)])], [True])[0]
    b = pa.array(["x,y\n", "", '"q"\n', "é\n"], pa.string())
    c = pa.array([f"long {'z' * i}\n" for i in range(40)], pa.large_string()).slice(7, 20)
    empty = pa.array([], pa.large_string())
    d = pa.array(["p\n", "q\n", "r\n"], pa.large_string()).slice(1)
    return [a, b, empty, c, a.slice(9), d]


def test_gather_lines_same_as_concat_take() -> None:
    chunks = _line_chunks()
    whole = pa.concat_arrays([c.cast(pa.large_string()) for c in chunks])
    total = len(whole)
    rng = np.random.default_rng(11)
    for index in (
        np.arange(total),
        np.arange(total)[::-1],
        rng.integers(0, total, size=500),
        np.array([total - 1, 0, total - 1]),
        np.array([], dtype=np.int64),
    ):
        got = gather_lines(chunks, index)
        assert got.type == pa.large_string()
        assert got.to_pylist() == whole.take(pa.array(index, pa.int64())).to_pylist()


@given(
    st.lists(st.lists(st.text(TEXT_ALPHABET, max_size=20), max_size=8), min_size=1, max_size=5),
    st.data(),
)
@settings(max_examples=200, deadline=None)
def test_gather_lines_hypothesis(chunk_values: list[list[str]], data: st.DataObject) -> None:
    chunks: list[pa.Array] = []
    for k, vals in enumerate(chunk_values):
        arr = pa.array(["pre", *vals, "post"], pa.large_string() if k % 2 else pa.string())
        chunks.append(arr.slice(1, len(vals)))
    whole = pa.concat_arrays([c.cast(pa.large_string()) for c in chunks])
    total = len(whole)
    if total == 0:
        index: list[int] = []
    else:
        index = data.draw(st.lists(st.integers(0, total - 1), max_size=30))
    got = gather_lines(chunks, np.asarray(index, dtype=np.int64))
    assert got.to_pylist() == [whole[i].as_py() for i in index]


def test_gather_lines_out_of_range() -> None:
    chunks = _line_chunks()
    total = sum(len(c) for c in chunks)
    for bad in ([total], [0, -1], [2**40]):
        with pytest.raises(IndexError):
            gather_lines(chunks, np.asarray(bad, dtype=np.int64))
    with pytest.raises(IndexError):
        gather_lines([], np.asarray([0], dtype=np.int64))


def test_raw_gather_rejects_bad_input() -> None:
    arr = pa.array(["a\n", "b\n"], pa.large_string())
    _, offsets, data = arr.buffers()
    chunk = np.zeros(2, np.int32)
    row = np.array([0, 1], np.int64)
    with pytest.raises(ValueError):
        _csvline.gather([(offsets, data, 0, 3)], chunk, row, pa.allocate_buffer)
    with pytest.raises(ValueError):
        _csvline.gather([(offsets, b"", 0, 2)], chunk, row, pa.allocate_buffer)
    with pytest.raises(ValueError):
        _csvline.gather([(offsets, data, 0, 2)], np.zeros(3, np.int32), row, pa.allocate_buffer)
    with pytest.raises(IndexError):
        _csvline.gather(
            [(offsets, data, 0, 2)], np.array([0, 1], np.int32), row, pa.allocate_buffer
        )
    with pytest.raises(IndexError):
        _csvline.gather(
            [(offsets, data, 0, 2)], chunk, np.array([0, 2], np.int64), pa.allocate_buffer
        )


def test_key_ranges_text_fixed() -> None:
    bounds = ["", "a", "m", "z", "é"]
    keys = ["", "a", "b", "m", "mm", "z", "zz", "é", "éa", "中", "A", None, "😀"]
    want = [
        bisect.bisect_right([b.encode() for b in bounds], k.encode()) if k is not None else 6
        for k in keys
    ]
    assert want[:3] == [1, 2, 2]
    assert want[7] == 5  # 'é' sorts after 'z' by UTF-8 bytes
    for how in REPRESENTATIONS:
        got = key_ranges(represent(keys, how), bounds)
        assert got.dtype == np.uint16
        assert got.tolist() == want, how
    assert key_ranges(pa.array(["", "a"]), ["a"]).tolist() == [0, 1]  # '' < 'a'
    assert key_ranges(pa.array(["é", "z"]), ["z"]).tolist() == [1, 1]
    assert key_ranges(pa.array(["y"]), ["é"]).tolist() == [0]
    assert key_ranges(pa.array(["x", None]), []).tolist() == [0, 1]
    assert key_ranges(pa.array([], pa.string()), ["a"]).tolist() == []


@given(
    st.lists(st.none() | st.text(TEXT_ALPHABET, max_size=6), max_size=40),
    st.lists(st.text(TEXT_ALPHABET, max_size=6), max_size=10),
    st.sampled_from(REPRESENTATIONS),
)
@settings(max_examples=200, deadline=None)
def test_key_ranges_text_hypothesis(keys: list[str | None], bounds: list[str], how: str) -> None:
    bounds = sorted(bounds, key=lambda b: b.encode())
    encoded = [b.encode() for b in bounds]
    want = [
        len(bounds) + 1 if k is None else bisect.bisect_right(encoded, k.encode()) for k in keys
    ]
    assert key_ranges(represent(keys, how), bounds).tolist() == want


def test_key_ranges_integers() -> None:
    bounds = [-100, 0, 0, 7, 2**40]
    vals = [-(2**63), -101, -100, -1, 0, 1, 6, 7, 8, 2**40, 2**63 - 1, None]
    want = [len(bounds) + 1 if v is None else bisect.bisect_right(bounds, v) for v in vals]
    for arr in (
        pa.array(vals, pa.int64()),
        pa.array(vals, pa.int64()).dictionary_encode(),
        pa.array([5, *vals], pa.int64()).slice(1),
    ):
        assert key_ranges(arr, bounds).tolist() == want
    small = [-100, 0, 7, 8, None, 127]
    assert key_ranges(pa.array(small, pa.int8()), bounds).tolist() == [
        6 if v is None else bisect.bisect_right(bounds, v) for v in small
    ]
    assert key_ranges(pa.array(small, pa.int8()), [str(b) for b in bounds[:4]]).tolist() == [
        5 if v is None else bisect.bisect_right(bounds[:4], v) for v in small
    ]


def _str32(offsets: Sequence[int], data: bytes, **kw: Any) -> tuple[Any, ...]:
    col: dict[str, Any] = {
        "kind": STR32,
        "quote": True,
        "validity": None,
        "a": np.asarray(offsets, np.int32).tobytes(),
        "b": data,
        "c": None,
        "offset": 0,
    }
    col.update(kw)
    return tuple(col.values())


def _dict_col(indices: Sequence[int], entry_offsets: Sequence[int], data: bytes) -> tuple[Any, ...]:
    return (
        DICT,
        False,
        None,
        np.asarray(indices, np.int32).tobytes(),
        np.asarray(entry_offsets, np.int64).tobytes(),
        data,
        0,
    )


RAW_BAD: dict[str, tuple[int, list[tuple[Any, ...]]]] = {
    "offsets-short": (3, [_str32([0, 1, 2], b"ab")]),
    "offsets-short-after-slice": (2, [_str32([0, 1, 2], b"ab", offset=1)]),
    "unknown-kind": (2, [_str32([0, 1, 2], b"ab", kind=9)]),
    "negative-kind": (2, [_str32([0, 1, 2], b"ab", kind=-1)]),
    "offsets-past-data": (2, [_str32([0, 1, 5], b"ab")]),
    "inner-offset-past-data": (2, [_str32([0, 9, 2], b"ab")]),
    "offsets-decreasing": (2, [_str32([0, 2, 1], b"ab")]),
    "offsets-negative": (1, [_str32([-4, 1], b"ab")]),
    "str64-past-data": (
        2,
        [(STR64, True, None, np.asarray([0, 1, 99], np.int64).tobytes(), b"ab", None, 0)],
    ),
    "dict-index-too-big": (2, [_dict_col([0, 2], [0, 1, 2], b"ab")]),
    "dict-index-negative": (2, [_dict_col([0, -1], [0, 1, 2], b"ab")]),
    "dict-entry-past-data": (2, [_dict_col([0, 1], [0, 1, 7], b"ab")]),
    # entries are checked when parsed, so one no row uses is refused too
    "dict-unused-entry-decreasing": (1, [_dict_col([0], [0, 2, 1, 3], b"abc")]),
    "dict-entry-negative": (1, [_dict_col([0], [-1, 1], b"ab")]),
    "dict-indices-short": (3, [_dict_col([0, 1], [0, 1, 2], b"ab")]),
    "dict-no-entry-offsets": (
        1,
        [(DICT, False, None, np.zeros(1, np.int32).tobytes(), b"", b"", 0)],
    ),
    "int64-short": (3, [(INT64, False, None, np.zeros(2, np.int64).tobytes(), None, None, 0)]),
    "validity-short": (20, [_str32(list(range(21)), b"x" * 20, validity=b"\xff")]),
    "negative-offset": (1, [_str32([0, 1, 2], b"ab", offset=-1)]),
    "bad-second-column": (2, [_str32([0, 1, 2], b"ab"), _str32([0, 1, 5], b"ab")]),
    "no-columns": (1, []),
    "negative-rows": (-1, [_str32([0, 1], b"a")]),
}


@pytest.mark.parametrize("name", list(RAW_BAD))
def test_raw_build_rejects_bad_input(name: str) -> None:
    n, columns = RAW_BAD[name]
    with pytest.raises(ValueError):
        _csvline.build(n, columns, pa.allocate_buffer)


def test_raw_build_rejects_bad_objects() -> None:
    good = _str32([0, 1, 2], b"ab")
    with pytest.raises(TypeError):
        _csvline.build(2, [good], None)  # type: ignore[arg-type]  # wrong on purpose
    with pytest.raises(TypeError):
        _csvline.build(2, [good], 42)  # type: ignore[arg-type]  # wrong on purpose
    with pytest.raises(TypeError):
        _csvline.build(2, [good[:5]], pa.allocate_buffer)  # too short a tuple
    with pytest.raises(TypeError):
        _csvline.build(2, 5, pa.allocate_buffer)  # type: ignore[arg-type]  # wrong on purpose
    with pytest.raises(TypeError):
        _csvline.build(2, [_str32([0, 1, 2], None)], pa.allocate_buffer)  # type: ignore[arg-type]

    def short(size: int) -> bytearray:
        return bytearray(max(size - 1, 0))

    with pytest.raises(ValueError):
        _csvline.build(2, [good], short)

    def failing(size: int) -> Any:
        raise MemoryError("no")

    with pytest.raises(MemoryError):
        _csvline.build(2, [good], failing)
    with pytest.raises(BufferError):
        _csvline.build(2, [good], bytes)  # not writable
    # and the good column itself works, with any writable buffer
    data, offsets, hashes = _csvline.build(2, [good], bytearray)
    assert bytes(data)[: np.frombuffer(offsets, np.int64)[-1]] == b"a\nb\n"


def test_raw_encode_and_bucket_reject_bad_input() -> None:
    with pytest.raises(ValueError):
        _csvline.encode(2, _str32([0, 1, 5], b"ab"), pa.allocate_buffer)
    with pytest.raises(ValueError):
        _csvline.encode(2, _dict_col([0, 1], [0, 1, 2], b"ab"), pa.allocate_buffer)
    with pytest.raises(ValueError):
        _csvline.encode(-1, _str32([0, 1], b"a"), pa.allocate_buffer)
    with pytest.raises(ValueError):
        _csvline.bucket(2, _str32([0, 2, 1], b"ab"), [b"a"])
    with pytest.raises(ValueError):
        _csvline.bucket(3, _str32([0, 1, 2], b"ab"), [b"a"])
    with pytest.raises(TypeError):
        _csvline.bucket(2, _str32([0, 1, 2], b"ab"), ["a"])  # type: ignore[list-item]  # wrong on purpose
    with pytest.raises(TypeError):
        _csvline.bucket(2, _str32([0, 1, 2], b"ab"), (b"a",))  # type: ignore[arg-type]  # wrong on purpose
    with pytest.raises(ValueError):
        _csvline.bucket(2, _str32([0, 1, 2], b"ab"), [b"a"] * 65534)
    got = _csvline.bucket(2, _str32([0, 1, 2], b"ab"), [b"a"])
    assert np.frombuffer(got, np.uint16).tolist() == [1, 1]


def test_raw_build_valid_columns_of_every_kind() -> None:
    """Hand-made tuples of each kind, with offsets and validity bits, build the right lines."""
    text = _str32([0, 3, 5, 6, 8], b'a,bxy"z\\q', offset=1, validity=bytes([0b11011]))
    large = (STR64, False, None, np.asarray([0, 1, 2, 3, 4], np.int64).tobytes(), b"wxyz", None, 1)
    dictionary = _dict_col([0, 2, 1, 0], [0, 5, 5, 8], b'"a,b"pqr')
    ints = (
        INT64,
        False,
        bytes([0b1101]),
        np.asarray([1, -2, 3, 4], np.int64).tobytes(),
        None,
        None,
        1,
    )
    n = 3
    data, offsets, hashes = _csvline.build(n, [text, large, dictionary, ints], pa.allocate_buffer)
    lines = pa.LargeStringArray.from_buffers(n, offsets, data).to_pylist()
    # text rows 1..3: "xy", '"' (validity bit 2 clear: null), "z\\"; ints rows 1..3: null, 3, 4
    assert lines == ['xy,x,"a,b",\n', ",y,pqr,3\n", '"z\\\\",z,,4\n']
    assert pa.Array.from_buffers(pa.uint64(), n, [None, hashes]).null_count == 0


def duckdb_order(keys: list[pa.Array], hashes: np.ndarray[Any, Any]) -> list[tuple[Any, ...]]:
    """(keys..., hash) of the rows as DuckDB's ORDER BY k0, ..., h ASC NULLS LAST gives them."""
    import duckdb

    names = [f"k{i}" for i in range(len(keys))]
    table = pa.table([*keys, pa.array(hashes, pa.uint64())], names=[*names, "h"])
    order = ", ".join(f"{c} ASC NULLS LAST" for c in [*names, "h"])
    con = duckdb.connect()
    con.register("t", table)
    got = con.sql(f"SELECT * FROM t ORDER BY {order}").fetchall()
    con.close()
    return [tuple(r) for r in got]


def rows_by(
    order: np.ndarray[Any, Any], keys: list[pa.Array], hashes: np.ndarray[Any, Any]
) -> list[tuple[Any, ...]]:
    cols = [k.to_pylist() for k in keys]
    return [(*(c[i] for c in cols), int(hashes[i])) for i in order]


# Texts sharing long prefixes (the first 8 bytes are what rows are bucketed by), with NUL
# bytes, non-ASCII and empty strings; integers at the extremes.
_PREFIXED = st.sampled_from(
    [
        "",
        "a",
        "a\x00",
        "a\x00\x00",
        "abcdefgh",
        "abcdefghi",
        "abcdefgh\x00",
        "abcdefgz",
        "abcdefg",
        "ÿÿÿÿÿÿÿÿ",
        "中文中文",
        "中文中文x",
        "\x7f" * 9,
        "b",
    ]
)
_TEXT_KEY = st.one_of(st.none(), _PREFIXED, st.text(max_size=12))
_INT_KEY = st.one_of(
    st.none(),
    st.sampled_from([-(2**63), 2**63 - 1, -1, 0, 1]),
    st.integers(-(2**63), 2**63 - 1),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    kinds=st.lists(st.sampled_from(["text", "large", "int"]), min_size=1, max_size=3),
    n=st.integers(0, 120),
)
def test_key_order_is_duckdbs_order(data: st.DataObject, kinds: list[str], n: int) -> None:
    keys: list[pa.Array] = []
    for kind in kinds:
        strategy = _INT_KEY if kind == "int" else _TEXT_KEY
        values = data.draw(st.lists(strategy, min_size=n, max_size=n))
        t = {"text": pa.string(), "large": pa.large_string(), "int": pa.int64()}[kind]
        keys.append(pa.array(values, t))
    # few distinct hashes, so that rows equal in their keys are told apart (or not) by them
    hashes = np.asarray(
        data.draw(st.lists(st.sampled_from([0, 1, 2**64 - 1, 2**63]), min_size=n, max_size=n)),
        dtype=np.uint64,
    )
    order = key_order(keys, hashes)
    assert sorted(order.tolist()) == list(range(n))
    assert rows_by(order, keys, hashes) == duckdb_order(keys, hashes)


def test_key_order_on_sliced_and_dictionary_keys() -> None:
    rnd = random.Random(7)
    words = [f"visitor-{rnd.randrange(40):03d}-{'x' * rnd.randrange(3)}" for _ in range(500)]
    text = pa.array([None if i % 13 == 0 else w for i, w in enumerate(words)]).slice(17, 400)
    ints = pa.array(
        [rnd.randrange(-5, 5) if i % 11 else None for i in range(500)], pa.int32()
    ).slice(3, 400)
    coded = pa.array(words[:400]).dictionary_encode()
    hashes = np.asarray([rnd.randrange(3) for _ in range(400)], dtype=np.uint64)
    for keys in ([text, ints], [coded, ints, text]):
        order = key_order(keys, hashes)
        plain = [
            k.dictionary_decode()
            if pa.types.is_dictionary(k.type)
            else k.cast(pa.int64())
            if pa.types.is_integer(k.type)
            else k
            for k in keys
        ]
        assert rows_by(order, plain, hashes) == duckdb_order(plain, hashes)


def test_key_order_rejects_what_it_cannot_order() -> None:
    with pytest.raises(ValueError):
        key_order([], np.zeros(0, np.uint64))
    with pytest.raises(ValueError):
        key_order([pa.array(["a", "b"])], np.zeros(3, np.uint64))
    with pytest.raises(TypeError):
        key_order([pa.array([1.5, 2.5])], np.zeros(2, np.uint64))
    good = _str32([0, 1, 2], b"ab")
    with pytest.raises(ValueError):
        _csvline.order(2, [good], np.zeros(1, np.uint64), np.zeros(2, np.int64))
    with pytest.raises(ValueError):
        _csvline.order(2, [good], np.zeros(2, np.uint64), np.zeros(1, np.int64))
    with pytest.raises(ValueError):
        _csvline.order(
            2, [_dict_col([0, 1], [0, 1, 2], b"ab")], np.zeros(2, np.uint64), np.zeros(2, np.int64)
        )
    with pytest.raises(ValueError):
        _csvline.order(2, [_str32([0, 1, 5], b"ab")], np.zeros(2, np.uint64), np.zeros(2, np.int64))
    with pytest.raises(BufferError):
        _csvline.order(2, [good], np.zeros(2, np.uint64), bytes(16))  # out not writable
