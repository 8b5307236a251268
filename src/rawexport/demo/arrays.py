"""The generator's vectorised building blocks: every value is a pure function of (seed, ai,
hour, name, row) (splitmix64 under a blake2b key), turned into Arrow strings without a
Python loop (hex ids, UUIDs, decimal text)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from rawexport.demo.samples import I64, U64

Bools = npt.NDArray[np.bool_]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
# The two hex digits of each byte value as one uint16, so one gather makes both.
_HEX_PAIRS = np.frombuffer(b"".join(f"{b:02x}".encode() for b in range(256)), np.uint16)
_HEX_PAIRS_UPPER = np.frombuffer(b"".join(f"{b:02X}".encode() for b in range(256)), np.uint16)
_UUID_VARIANT = np.frombuffer(b"89ab", np.uint8)


def key_of(*parts: object) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little")


def mix(key: int, idx: U64) -> U64:
    """splitmix64 of idx under key: rows never depend on how they were chunked."""
    z: U64 = idx * _GOLDEN
    z += np.uint64(key)
    t = np.right_shift(z, np.uint64(30))
    z ^= t
    z *= _M1
    z ^= np.right_shift(z, np.uint64(27), out=t)
    z *= _M2
    z ^= np.right_shift(z, np.uint64(31), out=t)
    return z


def below(h: U64, n: int) -> I64:
    """h mapped onto [0, n) by its high 32 bits (Lemire's multiply-shift: no division)."""
    if n > 2**32:
        return (h % np.uint64(n)).view(np.int64)
    r = np.right_shift(h, np.uint64(32))
    r *= np.uint64(n)
    r >>= np.uint64(32)
    return r.view(np.int64)


def fixed_width(chars: npt.NDArray[np.uint8]) -> pa.Array:
    """A string array from an (n, width) matrix of ASCII codes, without a Python loop."""
    n, width = chars.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    data = np.ascontiguousarray(chars)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def hex_chars(hashes: Sequence[U64], width: int, upper: bool = False) -> npt.NDArray[np.uint8]:
    """(n, width) hex digits of the hashes' bytes; width <= 16 per hash."""
    words = np.stack(hashes, axis=1) if len(hashes) > 1 else hashes[0][:, None]
    pairs = (_HEX_PAIRS_UPPER if upper else _HEX_PAIRS)[words.view(np.uint8)[:, : (width + 1) // 2]]
    chars: npt.NDArray[np.uint8] = pairs.view(np.uint8)[:, :width]
    return chars


def hex_text(width: int, *hashes: U64) -> pa.Array:
    return fixed_width(hex_chars(hashes, width))


def uuid_text(a: U64, b: U64, upper: bool = False) -> pa.Array:
    """A version-4 UUID string made of the bits of a and b."""
    hexes = hex_chars((a, b), 32, upper)
    out = np.empty((len(a), 36), dtype=np.uint8)
    for dst, src, n in ((0, 0, 8), (9, 8, 4), (14, 12, 4), (19, 16, 4), (24, 20, 12)):
        out[:, dst : dst + n] = hexes[:, src : src + n]
    out[:, [8, 13, 18, 23]] = ord("-")
    out[:, 14] = ord("4")
    out[:, 19] = _UUID_VARIANT[a & np.uint64(3)]
    return fixed_width(out)


def join(*parts: pa.Array | str, sep: str = "") -> pa.Array:
    return pc.binary_join_element_wise(*parts, sep)


def int_text(values: I64) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def keep(mask: Bools, values: pa.Array) -> pa.Array:
    """values where mask holds, null elsewhere."""
    return pc.if_else(pa.array(mask), values, None)
