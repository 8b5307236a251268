"""An export's plan, made before any line is built: its budget, its key ranges, its slices.

Everything here is a function of the hour's rows and the settings, never of where the
tasks will run, so one process and a cluster plan the same ranges and write the same bytes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from rawexport.export.csvsql import key_sample_query

# DuckDB's limit covers its buffer pool only (v1 reads, the plan's key sample); the lines
# of a group (held twice while they are put in order), the compressor queue, the interpreter
# and allocator slack come on top.
DUCKDB_SHARE = 0.4
# Most CSV bytes sorted at once, as a share of the budget: a group is held while the next
# one is read, and its lines are gathered into order.
RANGE_SHARE = 0.15
# Ranges planned per range_bytes of estimated CSV (the estimate is rough; see
# plan_groups), the cap on ranges (one open file each; past it, groups grow), and sampled
# keys per range.
RANGE_SPLIT = 4
MAX_RANGES = 256
SAMPLE_PER_RANGE = 64
# Parquet plain bytes -> CSV bytes: numbers as text, separators, quoting (measured ~1.9).
CSV_PER_PLAIN_BYTE = 2

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?\s*", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS.update({"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40})


def parse_size(text: str) -> int:
    """Bytes of a DuckDB-style size such as `1GB`, `512MiB` or `800000000`."""
    m = _SIZE.fullmatch(text)
    if not m:
        raise ValueError(f"bad memory size {text!r}")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "b").lower()])


def range_bytes_of(memory_limit: str, range_bytes: int | None) -> int:
    """The most CSV sorted in one piece: RANGE_SHARE of the job's budget unless given."""
    return int(parse_size(memory_limit) * RANGE_SHARE) if range_bytes is None else range_bytes


def duckdb_bytes_of(memory_limit: str) -> int:
    """DuckDB's share of a job's budget (it spills to its temp directory beyond it)."""
    return int(parse_size(memory_limit) * DUCKDB_SHARE)


def _estimated_csv_bytes(files: Sequence[Path]) -> int:
    """CSV size guess from Parquet metadata (plain sizes; quoting and text ints add more)."""
    total = 0
    for f in files:
        meta = pq.ParquetFile(f).metadata
        total += sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    return total * CSV_PER_PLAIN_BYTE


def range_count(files: Sequence[Path], range_bytes: int) -> int:
    """How many key ranges an hour's lines are planned in: 0 when they fit one sort.

    Over-split: the size estimate (from Parquet metadata) is rough, and small neighbours
    are sorted together (plan_groups).
    """
    est = _estimated_csv_bytes(files)
    if est <= range_bytes:
        return 0
    return int(min(MAX_RANGES, -(-est * RANGE_SPLIT // range_bytes)))


def plan_bounds(
    con: duckdb.DuckDBPyConnection,
    version: str,
    name: str,
    files: Sequence[Path],
    count: int,
) -> list[str | int]:
    """Bounds of the first sort key splitting an hour into about count ranges ([] if its
    keys cannot be split).

    A pure function of the hour's rows (not of how they lie in files): the row count comes
    from Parquet metadata and the sample takes the rows whose first key's hash falls in a fixed
    residue class, so a cluster and one machine plan the same ranges.
    """
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    every = max(1, rows // (count * SAMPLE_PER_RANGE))
    query = key_sample_query(version, name, list(files), every)
    sample = [row[0] for row in con.execute(query).fetchall()]
    out: list[str | int] = []
    last: Any = None
    for i in range(1, count):
        v = sample[len(sample) * i // count] if sample else None
        if v is None or v == last:
            continue
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            return []  # only text and integer keys are split into ranges
        out.append(v)
        last = v
    return out


@dataclass(frozen=True)
class Slice:
    """Input of one split task: files (by the names tasks open them by), or some row groups
    of one file (v2)."""

    names: tuple[str, ...]
    row_groups: tuple[int, ...] | None = None


def plan_slices(version: str, files: Sequence[Path], slice_rows: int | None) -> list[Slice]:
    """The hour's input cut into slices of about slice_rows rows, or one slice of every
    file when slice_rows is None. Small files are packed together; a v2 file bigger than
    a slice is cut by its row groups (v1 reads whole files)."""
    if slice_rows is None:
        return [Slice(tuple(map(str, files)))] if files else []
    out: list[Slice] = []
    packed: list[str] = []
    packed_rows = 0
    for f in files:
        meta = pq.read_metadata(f)
        if version != "v2" or meta.num_rows <= slice_rows:
            if packed and packed_rows + meta.num_rows > slice_rows:
                out.append(Slice(tuple(packed)))
                packed, packed_rows = [], 0
            packed.append(str(f))
            packed_rows += meta.num_rows
            continue
        group: list[int] = []
        rows = 0
        for g in range(meta.num_row_groups):
            group.append(g)
            rows += meta.row_group(g).num_rows
            if rows >= slice_rows:
                out.append(Slice((str(f),), tuple(group)))
                group, rows = [], 0
        if group:
            out.append(Slice((str(f),), tuple(group)))
    if packed:
        out.append(Slice(tuple(packed)))
    return out
