# Buffers are anything with the buffer protocol: bytes, pyarrow Buffers, numpy arrays.
from collections.abc import Callable, Sequence
from typing import Any

Column = tuple[int, bool, Any, Any, Any, Any, int]

def build(
    n: int,
    columns: Sequence[Column],
    allocate: Callable[[int], Any],
    dest: Any = None,
    /,
) -> tuple[Any, Any, Any]: ...
def gather(
    lines: Sequence[tuple[Any, Any, int, int]],
    chunk: Any,
    row: Any,
    allocate: Callable[[int], Any],
    /,
) -> tuple[Any, Any]: ...
def encode(n: int, column: Column, allocate: Callable[[int], Any], /) -> tuple[Any, Any]: ...
def bucket(n: int, column: Column, bounds: list[bytes], /) -> bytes: ...
def order(n: int, keys: Sequence[Column], hashes: Any, out: Any, /) -> None: ...
