"""Sorting an export's lines in bounded memory.

Lines are built per batch and split by ranges of the first sort key into spill files; each
group of ranges is read back range by range, each range sorted on its keys alone as soon as
it is in (while the next ones are read), and the group's lines gathered in that order.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rawexport.export.csvline import Gatherer, build_lines, key_order, key_ranges
from rawexport.export.csvsql import quoted, sort_columns
from rawexport.export.spill import SpillWriter

# ~15-20 MB of CSV per batch: big enough to keep per-call overhead low, small enough that the
# compressor queue stays a few tens of MB.
BATCH_ROWS = 65536
# Staging buffer of one range's spill file (whole blocks go out with O_DIRECT).
SPILL_STAGING = 256 << 10
# Built batches (~20 MB each) waiting for the spill writer thread.
SPILL_QUEUE = 4


class Keyed:
    """Turns (f0..., k0...) batches into (line, k0..., h) batches: lines built natively."""

    def __init__(self, version: str, name: str) -> None:
        self.quoted = quoted(version, name)
        self.keys = sort_columns(version, name)

    def __call__(
        self, batch: pa.RecordBatch, order: np.ndarray[Any, Any] | None = None
    ) -> pa.RecordBatch:
        """Keyed rows of batch, in the given order (a permutation) if any."""
        n = len(self.quoted)
        keys = [batch.column(n + i) for i in range(len(self.keys))]
        keys = [k.dictionary_decode() if pa.types.is_dictionary(k.type) else k for k in keys]
        if order is None:
            lines, hashes = build_lines(batch.columns[:n], self.quoted)
        else:
            dest = np.empty(len(order), dtype=np.int64)
            dest[order] = np.arange(len(order))
            lines, hashes = build_lines(batch.columns[:n], self.quoted, dest)
            taken = pa.array(order)
            keys = [k.take(taken) for k in keys]
        return pa.RecordBatch.from_arrays([lines, *keys, hashes], ["line", *self.keys, "h"])


class Collect:
    """Keeps every keyed batch in memory (a feed() sink, for hours that fit)."""

    def __init__(self, keyed: Keyed) -> None:
        self.keyed = keyed
        self.batches: list[pa.RecordBatch] = []

    def write(self, batch: pa.RecordBatch) -> None:
        self.batches.append(self.keyed(batch))

    def close(self) -> None:
        pass

    def abort(self) -> None:
        self.batches.clear()


@dataclass(frozen=True)
class RangeStats:
    """What one range (or a group of ranges) holds: rows, bytes of lines, longest line."""

    rows: int
    bytes: int
    longest: int

    def add(self, other: RangeStats) -> RangeStats:
        return RangeStats(
            self.rows + other.rows, self.bytes + other.bytes, max(self.longest, other.longest)
        )


def line_bytes(stats: Mapping[int, RangeStats]) -> dict[int, int]:
    return {r: s.bytes for r, s in stats.items()}


def group_stats(stats: Mapping[int, RangeStats], groups: list[list[int]]) -> list[RangeStats]:
    out = []
    for members in groups:
        total = RangeStats(0, 0, 0)
        for r in members:
            total = total.add(stats[r])
        out.append(total)
    return out


class RangeFiles:
    """Appends each keyed batch's rows to the spill file of their key range (a sink).

    Range i holds bounds[i-1] <= k0 < bounds[i]; null keys get the last range because the
    export order is NULLS LAST. write() builds lines in the calling threads; one writer
    thread does the (direct, blocking) file writes, so builders never wait for the disk.
    """

    def __init__(self, work: Path, bounds: list[str | int], keyed: Keyed) -> None:
        self.paths = [work / f"range-{i:05d}.spill" for i in range(len(bounds) + 2)]
        self.writers: dict[int, SpillWriter] = {}
        self.bounds = bounds
        self.keyed = keyed
        self.schema: pa.Schema | None = None
        # Per range (rows, bytes of lines, longest line): what groups and part numbers are
        # planned by (the same on every machine).
        self.stats: dict[int, RangeStats] = {}
        self._sizes = threading.Lock()
        self.queue: queue.Queue[tuple[pa.RecordBatch, np.ndarray[Any, Any]] | None] = queue.Queue(
            maxsize=SPILL_QUEUE
        )
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._drain, name="rawexport-spill", daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is not None:
                continue
            grouped, counts = item
            try:
                start = 0
                for i in map(int, np.flatnonzero(counts)):
                    if i not in self.writers:
                        self.writers[i] = SpillWriter(self.paths[i], SPILL_STAGING)
                    self.writers[i].write_batch(grouped.slice(start, int(counts[i])))
                    start += int(counts[i])
            except BaseException as e:
                self.error = e

    def write(self, batch: pa.RecordBatch) -> None:
        if self.error is not None:
            raise self.error
        r = key_ranges(batch.column(len(self.keyed.quoted)), self.bounds)
        # Lines are built straight into range order: no second copy to group them.
        grouped = self.keyed(batch, np.argsort(r, kind="stable"))
        self.schema = grouped.schema
        counts = np.bincount(r, minlength=len(self.paths))
        lengths = pc.binary_length(grouped.column(0)).to_numpy(zero_copy_only=False)
        ends = np.concatenate([[0], np.cumsum(lengths)])
        edges = np.concatenate([[0], np.cumsum(counts)])
        sizes = ends[edges[1:]] - ends[edges[:-1]]
        with self._sizes:
            for i in map(int, np.flatnonzero(counts)):
                longest = int(lengths[edges[i] : edges[i + 1]].max())
                old = self.stats.get(i, RangeStats(0, 0, 0))
                self.stats[i] = old.add(RangeStats(int(counts[i]), int(sizes[i]), longest))
        self.queue.put((grouped, counts))

    def _finish(self) -> None:
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
        for w in self.writers.values():
            w.close()

    def close(self) -> None:
        self._finish()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        self._finish()  # the files are removed with the work directory

    def range_files(self) -> dict[int, Path]:
        """{range: its spill file} of the non-empty ranges."""
        return {i: self.paths[i] for i in sorted(self.writers)}


def settle_ties(
    perm: np.ndarray[Any, Any], hashes: np.ndarray[Any, Any], keys: pa.Table, lines: pa.Array
) -> np.ndarray[Any, Any]:
    """perm with rows of equal sort keys and equal hashes ordered by their bytes.

    key_order orders by the keys, then the line's hash; equal hashes of different lines are
    rare but possible, and rows equal in both come in the order they were read (which
    varies), so such runs get a fixed order here.
    """
    dup = np.flatnonzero(hashes[1:] == hashes[:-1])
    if not len(dup):
        return perm
    perm = perm.copy()
    i = 0
    while i < len(dup):
        a = b = int(dup[i])
        while i < len(dup) and int(dup[i]) == b:
            b += 1
            i += 1
        rows = [int(j) for j in perm[a : b + 1]]
        key_of = {j: tuple(keys.column(k)[j].as_py() for k in keys.column_names) for j in rows}
        run: list[int] = []
        settled: list[int] = []
        for j in [*rows, -1]:
            if run and (j < 0 or key_of[j] != key_of[run[0]]):
                settled += sorted(run, key=lambda x: str(lines[x].as_py()).encode())
                run = []
            run.append(j)
        perm[a : b + 1] = settled
    return perm


@dataclass
class Ordered:
    """A group's lines (chunks) and the order they go out in (positions in the chunks)."""

    lines: list[pa.Array]
    perm: np.ndarray[Any, Any]

    def batches(self) -> Iterator[pa.Array]:
        """The lines in order, BATCH_ROWS at a time."""
        pick = Gatherer(self.lines)
        for start in range(0, len(self.perm), BATCH_ROWS):
            yield pick.take(self.perm[start : start + BATCH_ROWS])


def _range_order(batches: list[pa.RecordBatch], keys: list[str]) -> Ordered:
    table = pa.Table.from_batches(batches)
    batches.clear()
    hashes = table.column("h").to_numpy()
    perm = key_order([table.column(k).combine_chunks() for k in keys], hashes)
    perm = settle_ties(perm, hashes[perm], table.select(keys), table.column("line"))
    return Ordered(table.column("line").chunks, perm)


def order_group(batches: list[pa.RecordBatch], keys: list[str]) -> Ordered:
    """The export order of keyed batches (which it empties): only the keys and hashes are
    sorted (csvline.key_order); the lines are gathered in that order afterwards."""
    return order_ranges([batches], keys)


def order_ranges(ranges: Iterable[list[pa.RecordBatch]], keys: list[str]) -> Ordered:
    """The export order of a group's ranges (disjoint, in key order), each range's keyed
    batches sorted as soon as they come (while the next ones are being read)."""
    lines: list[pa.Array] = []
    perms: list[np.ndarray[Any, Any]] = []
    rows = 0
    for batches in ranges:
        if not batches:
            continue
        got = _range_order(batches, keys)
        lines += got.lines
        perms.append(got.perm + rows if rows else got.perm)
        rows += len(got.perm)
    if not perms:
        return Ordered([], np.zeros(0, dtype=np.int64))
    return Ordered(lines, np.concatenate(perms) if len(perms) > 1 else perms[0])


def sort_group(batches: list[pa.RecordBatch], keys: list[str]) -> Iterator[pa.Array]:
    """The lines of keyed batches in export order, BATCH_ROWS at a time."""
    yield from order_group(batches, keys).batches()


def rebatch(arrays: Iterable[pa.Array], rows: int) -> Iterator[pa.Array]:
    """The lines of arrays in chunks of exactly `rows` (the last one shorter).

    The part writer sync-flushes its compressor per chunk, so fixed chunks make the bytes of
    a part independent of how the lines were produced.
    """
    pending: list[pa.Array] = []
    count = 0
    for a in arrays:
        while len(a):
            take = min(rows - count, len(a))
            pending.append(a.slice(0, take))
            count += take
            a = a.slice(take)
            if count == rows:
                yield pa.concat_arrays(pending) if len(pending) > 1 else pending[0]
                pending, count = [], 0
    if pending:
        yield pa.concat_arrays(pending) if len(pending) > 1 else pending[0]


def plan_groups(line_bytes: Mapping[int, int], group_bytes: int) -> list[list[int]]:
    """Consecutive non-empty ranges packed into groups of at most group_bytes of lines.

    A range bigger than that is a group alone. Each group is sorted in one piece and has
    parts of its own (numbered from its index * group_stride()), so the groups of an hour can
    run anywhere, in any order, and still give the same bytes.
    """
    groups: list[list[int]] = []
    size = 0
    for r in sorted(i for i, n in line_bytes.items() if n > 0):
        n = line_bytes[r]
        if groups and size + n <= group_bytes:
            groups[-1].append(r)
            size += n
        else:
            groups.append([r])
            size = n
    return groups


def sorted_groups(
    groups: Sequence[int],
    read: Callable[[int], Iterable[list[pa.RecordBatch]]],
    keys: list[str],
) -> Iterator[tuple[int, pa.Array]]:
    """(group, lines) of each range group in export order, BATCH_ROWS lines at a time (a
    PartWriter's input); read(g) gives group g's keyed batches, range by range.

    Ranges are disjoint and in key order, so sorting each range alone gives the order of
    one global sort. The next group is read and sorted in a second thread while this one's
    lines are gathered into order.
    """

    def ordered(g: int) -> Ordered:
        got = read(g)
        try:
            return order_ranges(got, keys)
        finally:
            close = getattr(got, "close", None)
            if close is not None:  # a generator stopped early still lets go of its files
                close()

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rawexport-spill") as pool:
        ahead = pool.submit(ordered, groups[0]) if groups else None
        for i, g in enumerate(groups):
            assert ahead is not None
            group = ahead.result()
            ahead = pool.submit(ordered, groups[i + 1]) if i + 1 < len(groups) else None
            for chunk in rebatch(group.batches(), BATCH_ROWS):
                yield g, chunk
            del group
