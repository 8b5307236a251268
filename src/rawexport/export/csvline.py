"""GrowingIO-dialect CSV lines of a batch of columns, built natively (_csvline*.c).

The quoting, escaping and joining of decision 6 happens here in one pass per batch, in C
and without the GIL, with a 64-bit hash of each line for ordering rows whose sort keys are
equal. Columns come as Arrow arrays: text (quoted only when needed), dictionary-encoded
text (each dictionary entry is encoded once), integers (decimal) and floats (shortest
round-trip text; inf and nan have no portable CSV spelling, so they are null).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rawexport.export import _csvline

STR32, STR64, DICT, INT64 = 0, 1, 2, 3


def _text(arr: pa.Array, quote: bool) -> _csvline.Column:
    """The C view of a string or large_string array (others are cast to large_string)."""
    if arr.type == pa.string():
        kind = STR32
    else:
        if arr.type != pa.large_string():
            arr = arr.cast(pa.large_string())  # string_view, null, ...: one copy
        kind = STR64
    validity, offsets, data = arr.buffers()
    return (
        kind,
        quote,
        validity if arr.null_count else None,
        offsets,
        data if data is not None else b"",
        None,
        arr.offset,
    )


def encode_values(arr: pa.Array, quote: bool) -> pa.Array:
    """Each value of a text array as its CSV field (nulls empty), a large_string array."""
    n = len(arr)
    if n == 0:
        return pa.array([], pa.large_string())
    data, offsets = _csvline.encode(n, _text(arr, quote), pa.allocate_buffer)
    return pa.LargeStringArray.from_buffers(n, offsets, data)


def _column(arr: pa.Array, quote: bool) -> _csvline.Column:
    t = arr.type
    if pa.types.is_dictionary(t):
        entries = encode_values(arr.dictionary, quote and _is_text(t.value_type))
        indices = arr.indices
        if indices.type != pa.int32():
            indices = indices.cast(pa.int32())
        validity = indices.buffers()[0] if indices.null_count else None
        _, offsets, data = entries.buffers()
        return (DICT, False, validity, indices.buffers()[1], offsets, data, indices.offset)
    if pa.types.is_integer(t):
        if t != pa.int64():
            arr = arr.cast(pa.int64())
        validity, values = arr.buffers()
        return (INT64, False, validity if arr.null_count else None, values, None, None, arr.offset)
    if pa.types.is_floating(t):
        finite = pc.is_finite(arr)
        arr = pc.if_else(finite, pc.cast(arr, pa.string()), pa.scalar(None, pa.string()))
        return _text(arr, False)
    return _text(arr, quote)


def _is_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def build_lines(
    fields: Sequence[pa.Array],
    quoted: Sequence[bool],
    dest: np.ndarray[tuple[int], np.dtype[np.int64]] | None = None,
) -> tuple[pa.Array, pa.Array]:
    """(lines, hashes) of equal-length columns: large_string lines ending in a newline.

    A null is an empty field; a quoted text field holding `,` `"` `\\` CR or LF is
    enclosed in quotes with `"` and `\\` escaped by a backslash; other fields are written
    verbatim. dest, a permutation, puts row i's line (and hash) at position dest[i].
    """
    if len(fields) != len(quoted) or not fields:
        raise ValueError("one quoting flag per field, and at least one field")
    n = len(fields[0])
    if any(len(arr) != n for arr in fields):
        raise ValueError("fields of different lengths")
    if n == 0:
        return pa.array([], pa.large_string()), pa.array([], pa.uint64())
    columns = [_column(arr, quote) for arr, quote in zip(fields, quoted, strict=True)]
    if dest is not None:
        dest = np.ascontiguousarray(dest, dtype=np.int64)
        if len(dest) != n:
            raise ValueError("dest must have one position per row")
    data, offsets, hashes = _csvline.build(n, columns, pa.allocate_buffer, dest)
    lines = pa.LargeStringArray.from_buffers(n, offsets, data)
    return lines, pa.Array.from_buffers(pa.uint64(), n, [None, hashes])


def key_ranges(
    keys: pa.Array, bounds: Sequence[str | int]
) -> np.ndarray[tuple[int], np.dtype[np.uint16]]:
    """Range number of each key: how many bounds are <= it; nulls get len(bounds) + 1.

    bounds are sorted; text keys compare by their UTF-8 bytes, as DuckDB orders VARCHAR.
    """
    n = len(keys)
    nb = len(bounds)
    if pa.types.is_dictionary(keys.type):
        per_entry = key_ranges(keys.dictionary, bounds)
        idx = keys.indices.to_numpy(zero_copy_only=False)
        out = np.full(n, nb + 1, dtype=np.uint16)
        valid = ~np.asarray(keys.is_null())
        out[valid] = per_entry[idx[valid].astype(np.int64)]
        return out
    if pa.types.is_integer(keys.type):
        ints = np.asarray([int(b) for b in bounds], dtype=np.int64)
        values = keys.cast(pa.int64()).fill_null(0).to_numpy()
        found: np.ndarray[tuple[int], np.dtype[np.uint16]] = np.searchsorted(
            ints, values, side="right"
        ).astype(np.uint16)
        found[np.asarray(keys.is_null())] = nb + 1
        return found
    if n == 0:
        return np.zeros(0, dtype=np.uint16)
    encoded = [str(b).encode() for b in bounds]
    got = _csvline.bucket(n, _text(keys, False), encoded)
    return np.frombuffer(got, dtype=np.uint16)


def key_order(
    keys: Sequence[pa.Array], hashes: np.ndarray[tuple[int], np.dtype[np.uint64]]
) -> np.ndarray[tuple[int], np.dtype[np.int64]]:
    """Positions of the rows in export order: by keys (text by its UTF-8 bytes, integers by
    value, nulls last in each), then by hash, as DuckDB's ORDER BY k0, ..., h ASC NULLS LAST
    (rows equal in both come in no fixed order)."""
    if not keys:
        raise ValueError("at least one sort key")
    n = len(keys[0])
    if any(len(k) != n for k in keys) or len(hashes) != n:
        raise ValueError("keys and hashes of different lengths")
    columns = []
    for k in keys:
        if pa.types.is_dictionary(k.type):
            k = k.dictionary_decode()
        if pa.types.is_integer(k.type):
            columns.append(_column(k, False))
        elif _is_text(k.type) or pa.types.is_string_view(k.type) or pa.types.is_null(k.type):
            columns.append(_text(k, False))
        else:
            raise TypeError(f"sort keys are text or integers, not {k.type}")
    out = np.empty(n, dtype=np.int64)
    _csvline.order(n, columns, np.ascontiguousarray(hashes, dtype=np.uint64), out)
    return out


class Gatherer:
    """Lines picked by global position from large_string chunks (their concatenation,
    without the copy concatenating makes): each row's chunk and row in it are looked up
    once, so many picks (the sorted lines of a group, a batch at a time) cost no search."""

    def __init__(self, chunks: Sequence[pa.Array]) -> None:
        lengths = np.fromiter((len(c) for c in chunks), dtype=np.int64, count=len(chunks))
        starts = np.zeros(len(chunks) + 1, dtype=np.int64)
        np.cumsum(lengths, out=starts[1:])
        self.rows = int(starts[-1])
        self.chunk_of = np.repeat(np.arange(len(chunks), dtype=np.int32), lengths)
        self.row_of = np.arange(self.rows, dtype=np.int64) - starts[self.chunk_of]
        self.views = []
        self.chunks = []  # kept alive: the views are their buffers
        for c in chunks:
            if c.type != pa.large_string():
                c = c.cast(pa.large_string())
            if c.null_count:
                raise ValueError("CSV line arrays may not contain nulls")
            _, offsets, data = c.buffers()
            self.chunks.append(c)
            self.views.append((offsets, data if data is not None else b"", c.offset, len(c)))

    def take(self, index: np.ndarray[tuple[int], np.dtype[np.int64]]) -> pa.Array:
        """The lines at global positions index, a large_string array."""
        index = np.ascontiguousarray(index, dtype=np.int64)
        if len(index) and (index.min() < 0 or index.max() >= self.rows):
            raise IndexError("gather index out of range")
        chunk, row = self.chunk_of[index], self.row_of[index]
        data, offsets = _csvline.gather(self.views, chunk, row, pa.allocate_buffer)
        return pa.LargeStringArray.from_buffers(len(index), offsets, data)


def gather_lines(
    chunks: Sequence[pa.Array], index: np.ndarray[tuple[int], np.dtype[np.int64]]
) -> pa.Array:
    """The lines at global positions index of the concatenated large_string chunks.

    The same as concatenating the chunks and taking index, without the copy the
    concatenation makes.
    """
    return Gatherer(chunks).take(index)
