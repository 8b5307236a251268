"""Gzip CSV parts of at most part_bytes each, cut on row boundaries, header in every part."""

from __future__ import annotations

import hashlib
import queue
import threading
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
from isal import isal_zlib

from rawexport.blobs import BlobStore
from rawexport.errors import PermanentError
from rawexport.export.spill import DirectWriter
from rawexport.types import PartInfo

MIN_PART_BYTES = 65536
# Staging buffer of a part file written with O_DIRECT.
PART_STAGING = 1 << 20
# A final empty block (at most one dynamic Huffman header, <= 328 bytes) and the
# 8-byte gzip trailer: what Z_FINISH may still add once everything is sync-flushed.
FINISH_RESERVE = 512
# A ranged export numbers the parts of its g-th range group from g * stride, so each group
# (a task on a cluster) knows its part numbers without waiting for the groups before; the
# stride is a power of ten, at least this, that no group's part count can reach.
GROUP_STRIDE = 100
# Room a part may lose to sync flushes and the deflate bounds' per-call constants.
FLUSH_SLACK = 4096


class RowTooLarge(PermanentError, ValueError):
    """One CSV row cannot fit in a part of part_bytes, even alone after the header."""


def deflate_bound(raw: int, level: int) -> int:
    """Most bytes compressing raw input then Z_SYNC_FLUSH can emit (isal, gzip wrapper).

    Levels 1-3 fall back to stored blocks (measured: < 0.04% + 11 bytes). Level 0 uses
    fixed tables with no fallback; a deflate symbol costs at most 48 bits per 3 bytes.
    """
    if level == 0:
        return 2 * raw + 1024
    return raw + raw // 1024 + 1024


def _max_raw(space: int, level: int) -> int:
    """Largest raw size whose deflate_bound fits in space (-1 when even 0 does not)."""
    if level == 0:
        return (space - 1024) // 2
    guess = (space - 1024) * 1024 // 1025
    while guess >= 0 and deflate_bound(guess, level) > space:
        guess -= 1
    return guess


def line_buffers(lines: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray[Any, Any], memoryview]:
    """(offsets, data) of a string array of whole lines, without copying the text."""
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    if lines.null_count:
        raise ValueError("CSV line arrays may not contain nulls")
    if len(lines) == 0:
        return np.zeros(1, dtype=np.int64), memoryview(b"")
    if lines.type in (pa.string(), pa.binary()):
        dtype: type[np.signedinteger[Any]] = np.int32
    elif lines.type in (pa.large_string(), pa.large_binary()):
        dtype = np.int64
    else:
        lines = lines.cast(pa.large_string())  # string_view and friends: one copy
        dtype = np.int64
    _, offsets_buf, data_buf = lines.buffers()
    offsets = np.frombuffer(
        offsets_buf,
        dtype=dtype,
        count=len(lines) + 1,
        offset=lines.offset * np.dtype(dtype).itemsize,
    ).astype(np.int64)
    data = memoryview(data_buf) if data_buf is not None else memoryview(b"")
    return offsets, data


def group_stride(
    groups: Iterable[tuple[int, int, int]], header: bytes, part_bytes: int, level: int
) -> int:
    """The part-number stride of a ranged export whose groups hold (rows, bytes of lines,
    longest line) each: every part but a group's last holds at least the raw bytes that fit
    a part's worst-case bound, less one line and the flush slack (at least one row)."""
    space = part_bytes - FINISH_RESERVE - deflate_bound(len(header), level)
    per_part = _max_raw(space, level) - FLUSH_SLACK
    most = 1
    for rows, raw, longest in groups:
        room = per_part - longest
        most = max(most, rows if room <= 0 else min(rows, -(-raw // room) + 1))
    stride = GROUP_STRIDE
    while stride <= most:
        stride *= 10
    return stride


class PartWriter:
    """Streams CSV lines into gzip parts; each finished part goes to blobs.put(key_for(n)).

    Parts are numbered from first_part on; write((group, lines)) items end the open part
    when the group changes and number the new group's parts from group * group_stride.
    """

    def __init__(
        self,
        *,
        header: bytes,
        part_bytes: int,
        level: int,
        tmp_dir: Path,
        blobs: BlobStore,
        key_for: Callable[[int], str],
        first_part: int = 0,
        group_stride: int = GROUP_STRIDE,
    ) -> None:
        if part_bytes < MIN_PART_BYTES:
            raise ValueError(f"part_bytes must be >= {MIN_PART_BYTES}, got {part_bytes}")
        if not 0 <= level <= 3:
            raise ValueError(f"compress level must be 0..3, got {level}")
        self.header = header
        self.part_bytes = part_bytes
        self.level = level
        self.tmp_dir = Path(tmp_dir)
        self.blobs = blobs
        self.key_for = key_for
        self.parts: list[PartInfo] = []
        self.next_part = first_part
        self.group: int | None = None
        self.group_stride = group_stride
        self._file: DirectWriter | None = None
        self._path: Path | None = None
        self._comp: Any = None
        self._md5: Any = None
        self._sha: Any = None
        self._written = 0
        self._rows = 0

    def _emit(self, out: bytes) -> None:
        assert self._file is not None
        self._file.write(out)
        self._md5.update(out)
        self._sha.update(out)
        self._written += len(out)

    def _compress(self, raw: memoryview | bytes) -> None:
        self._emit(self._comp.compress(raw))
        self._emit(self._comp.flush(isal_zlib.Z_SYNC_FLUSH))
        if self._written + FINISH_RESERVE > self.part_bytes:
            raise RuntimeError("compressed part exceeded its bound; deflate_bound is wrong")

    def _open(self) -> None:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        # Parts bypass the page cache where the file system allows (see spill.py).
        self._path = self.tmp_dir / f"part-{uuid.uuid4().hex}.csv.gz"
        self._file = DirectWriter(self._path, PART_STAGING)
        self._comp = isal_zlib.compressobj(self.level, isal_zlib.DEFLATED, 31)
        self._md5, self._sha = hashlib.md5(), hashlib.sha256()
        self._written = self._rows = 0
        self._compress(self.header)

    def _close_part(self) -> None:
        assert self._file is not None and self._path is not None
        self._emit(self._comp.flush(isal_zlib.Z_FINISH))
        self._file.close(fsync=True)
        self._file = None
        if self._written > self.part_bytes:
            raise RuntimeError(f"part of {self._written} bytes exceeds {self.part_bytes}")
        n = self.next_part
        if self.group is not None and n >= (self.group + 1) * self.group_stride:
            raise RuntimeError(
                f"range group {self.group} needs more than {self.group_stride} parts"
            )
        self.next_part += 1
        key = self.key_for(n)
        self.blobs.put(key, self._path)
        info = PartInfo(
            n, key, self._rows, self._written, self._md5.hexdigest(), self._sha.hexdigest()
        )
        self.parts.append(info)
        self._path = None

    def write(self, lines: pa.Array | pa.ChunkedArray | tuple[int, pa.Array]) -> None:
        """Add whole lines (each ending in a newline), in order; or (group, lines)."""
        if isinstance(lines, tuple):
            group, lines = lines
            if group != self.group:
                self.start_group(group)
        offsets, data = line_buffers(lines)
        self.write_buffers(offsets, data)

    def write_buffers(self, offsets: np.ndarray[Any, Any], data: memoryview) -> None:
        n = len(offsets) - 1
        i = 0
        while i < n:
            if self._file is None:
                self._open()
            space = self.part_bytes - FINISH_RESERVE - self._written
            limit = int(offsets[i]) + _max_raw(space, self.level)
            j = int(np.searchsorted(offsets, limit, side="right")) - 1
            if j <= i:
                if self._rows == 0:
                    self.abort()
                    size = int(offsets[i + 1] - offsets[i])
                    raise RowTooLarge(
                        f"a CSV row of {size} bytes does not fit in a part of "
                        f"{self.part_bytes} bytes; raise part_bytes"
                    )
                self._close_part()
                continue
            self._compress(data[offsets[i] : offsets[j]])
            self._rows += j - i
            i = j

    def start_group(self, group: int) -> None:
        """End the open part; the next parts are range group `group`'s."""
        if self._file is not None:
            self._close_part()
        self.group = group
        self.next_part = group * self.group_stride

    def close(self) -> list[PartInfo]:
        """Finish the open part (if any) and return every part written."""
        if self._file is not None:
            self._close_part()
        return self.parts

    def abort(self) -> None:
        """Drop the open part without publishing it."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._path is not None:
            self._path.unlink(missing_ok=True)
            self._path = None


_DONE = object()


class Sink(Protocol):
    """What feed() drives from its thread: write each item, then close, or abort."""

    def write(self, item: Any, /) -> None: ...

    def close(self) -> object: ...

    def abort(self) -> None: ...


def feed(chunks: Iterable[object], sink: Sink, queue_size: int = 4, workers: int = 1) -> None:
    """Feed chunks to sink in other threads, so producing and consuming overlap.

    isal, hashlib, Arrow kernels, csvline and file writes release the GIL, so the threads
    use several cores; DuckDB only runs while its result is being fetched, so the fetching
    thread must not do the heavy work itself. With workers > 1, sink.write is called from
    several threads at once, in no fixed order (the sink must allow both).
    """
    q: queue.Queue[object] = queue.Queue(maxsize=queue_size)
    errors: list[BaseException] = []

    def consume() -> None:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if not errors:
                try:
                    sink.write(item)
                except BaseException as e:
                    errors.append(e)

    threads = [
        threading.Thread(target=consume, name=f"rawexport-sink-{i}", daemon=True)
        for i in range(workers)
    ]
    for t in threads:
        t.start()
    finished = False
    try:
        for chunk in chunks:
            q.put(chunk)
            if errors:
                break
        else:
            finished = True
    finally:
        for _ in threads:
            q.put(_DONE)
        for t in threads:
            t.join()
        try:
            if finished and not errors:
                sink.close()
            else:
                sink.abort()
        except BaseException as e:
            errors.append(e)
    if errors:
        raise errors[0]


def write_parts(
    chunks: Iterable[pa.Array], writer: PartWriter, queue_size: int = 4
) -> list[PartInfo]:
    """Compress chunks into writer's parts in a second thread (see feed)."""
    feed(chunks, writer, queue_size)
    return writer.parts


class Lanes:
    """A sink of (group, lines) items that compresses range groups side by side, each
    writer fed by a thread of its own: a group's items all go to one writer, the one with
    the least work queued when the group's first item comes.

    Groups number their parts from g * stride, so which writer compresses a group changes
    no byte; with two writers, one compresses group g while the other finishes group g - 1
    (compression is the costliest step of a group, and one core's worth without this).
    """

    def __init__(self, writers: list[PartWriter], queue_size: int) -> None:
        if not writers:
            raise ValueError("at least one writer")
        self.writers = writers
        self.queues: list[queue.Queue[object]] = [queue.Queue(maxsize=queue_size) for _ in writers]
        self.errors: list[BaseException] = []
        self.pending = [0] * len(writers)  # items given to a writer and not yet written
        self.lock = threading.Lock()
        self.group: int | None = None
        self.lane = 0
        self.threads = [
            threading.Thread(target=self._drain, args=(i,), name=f"rawexport-lane-{i}", daemon=True)
            for i in range(len(writers))
        ]
        for t in self.threads:
            t.start()

    def _drain(self, lane: int) -> None:
        q, writer = self.queues[lane], self.writers[lane]
        while (item := q.get()) is not _DONE:
            if not self.errors:
                try:
                    writer.write(item)
                except BaseException as e:
                    self.errors.append(e)
            with self.lock:
                self.pending[lane] -= 1

    def write(self, item: tuple[int, pa.Array]) -> None:
        if self.errors:
            raise self.errors[0]
        with self.lock:
            if item[0] != self.group:
                self.group = item[0]
                self.lane = min(range(len(self.writers)), key=self.pending.__getitem__)
            self.pending[self.lane] += 1
        self.queues[self.lane].put(item)

    def _join(self) -> None:
        for q in self.queues:
            q.put(_DONE)
        for t in self.threads:
            t.join()

    def close(self) -> list[PartInfo]:
        self._join()
        if self.errors:
            for w in self.writers:
                w.abort()
            raise self.errors[0]
        parts = [p for w in self.writers for p in w.close()]
        return sorted(parts, key=lambda p: p.part)

    def abort(self) -> None:
        self._join()
        for w in self.writers:
            w.abort()


def write_lanes(
    items: Iterable[tuple[int, pa.Array]], writers: list[PartWriter], queue_size: int = 4
) -> list[PartInfo]:
    """Compress (group, lines) items into parts, groups side by side (see Lanes); the parts
    in number order."""
    lanes = Lanes(writers, queue_size)
    try:
        for item in items:
            lanes.write(item)
    except BaseException:
        lanes.abort()
        raise
    return lanes.close()
