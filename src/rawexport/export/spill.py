"""Spill files of record batches, written and read around the page cache (O_DIRECT).

A big export spills its lines once (range files, see pipeline) and reads them back once. On
these machines the page cache is the slow path: each fresh cache page costs a fault in the
host, so buffered writes ran at ~0.4 GB/s of kernel CPU (7 GB: 16 s of CPU) where O_DIRECT
writes took 1.3 s of CPU for the same bytes, and buffered reads of uncached data 14 s
against 1 s. Batches are framed as [8-byte length][IPC message]. Where O_DIRECT is refused
(tmpfs, some network file systems) the same files are written and read buffered.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import struct
import sys
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

# Direct I/O needs aligned buffers, offsets and sizes; 4096 covers every common device.
ALIGN = 4096
# Bytes read per system call when loading a file back.
READ_CHUNK = 8 << 20
# Spill files of one group read at once.
READERS = 4
# Read buffers grow in steps of this.
BUFFER_STEP = 16 << 20
_FRAME = struct.Struct("<q")
_DIRECT = getattr(os, "O_DIRECT", 0)


def _open(path: Path, flags: int) -> tuple[int, bool]:
    """(fd, direct) of path opened with flags, plus O_DIRECT where the file system allows."""
    if _DIRECT:
        try:
            return os.open(path, flags | _DIRECT, 0o600), True
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
    return os.open(path, flags, 0o600), False


class DirectWriter:
    """A new file written with O_DIRECT where allowed: bytes in, close() to complete it.

    Whole ALIGN blocks go out from a page-aligned staging buffer and the tail (< ALIGN)
    waits for more; close() pads it and truncates the padding. Not thread-safe.
    """

    def __init__(self, path: Path, staging: int = 1 << 20) -> None:
        self.path = path
        self.fd, self.direct = _open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        self.size = 0
        self._staging = mmap.mmap(-1, max(ALIGN, staging - staging % ALIGN))
        self._used = 0  # bytes in staging not yet written

    def write(self, data: bytes | memoryview) -> None:
        data = memoryview(data).cast("B")
        self.size += len(data)
        view = memoryview(self._staging)
        try:
            while len(data):
                room = len(self._staging) - self._used
                take = min(room, len(data))
                view[self._used : self._used + take] = data[:take]
                self._used += take
                data = data[take:]
                if self._used == len(self._staging):
                    self._flush(self._used)
        finally:
            view.release()

    def _flush(self, upto: int) -> None:
        """Write staging[:upto] (a multiple of ALIGN when direct) and keep what follows."""
        view = memoryview(self._staging)
        try:
            done = 0
            while done < upto:
                done += os.write(self.fd, view[done:upto])
            rest = self._used - upto
            view[:rest] = view[upto : self._used]
            self._used = rest
        finally:
            view.release()

    def close(self, fsync: bool = False) -> None:
        """Write what is staged (and fsync when asked); the file then has size bytes."""
        if self.fd < 0:
            return
        try:
            if self.direct:
                whole = self._used - self._used % ALIGN
                if whole:
                    self._flush(whole)
                if self._used:
                    padded = -(-self._used // ALIGN) * ALIGN
                    self._staging[self._used : padded] = bytes(padded - self._used)
                    self._used = padded
                    self._flush(padded)
                    os.ftruncate(self.fd, self.size)
            elif self._used:
                self._flush(self._used)
            if fsync:
                os.fsync(self.fd)
        finally:
            os.close(self.fd)
            self.fd = -1
            self._staging.close()


class SpillWriter(DirectWriter):
    """Appends record batches to a spill file, framed for read_spill."""

    def write_batch(self, batch: pa.RecordBatch) -> None:
        message = batch.serialize()
        self.write(_FRAME.pack(message.size))
        self.write(memoryview(message))


class ReadBuffers:
    """Memory that spill files are read back into, reused from one read to the next.

    Fresh memory is the dearest part of reading a spill file here: every new page faults
    (measured: a first read of 150 MB took 0.33 s of CPU, a read into memory already used
    0.002 s), and a freed big block goes back to the system at once. So the buffers stay,
    and one is reused once nothing refers to it any more: the batches read into it hold
    the array (through Arrow's buffer), so its reference count says when they are gone.
    """

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self._arrays: list[np.ndarray[Any, np.dtype[np.uint8]]] = []

    def _unused(self, i: int) -> bool:
        return sys.getrefcount(self._arrays[i]) <= 2  # the list's and the call's own

    def take(self, size: int) -> tuple[pa.Buffer, memoryview]:
        """(buffer, writable view) of size bytes starting on an ALIGN boundary."""
        need = size + ALIGN
        fits = [i for i in range(len(self._arrays)) if len(self._arrays[i]) >= need]
        i = next((i for i in fits if self._unused(i)), None)
        if i is None:
            free = [j for j in range(len(self._arrays)) if self._unused(j)]
            if len(self._arrays) >= self.keep and free:
                del self._arrays[free[0]]  # too small: make room for a bigger one
            # Room to spare (untouched pages cost nothing), so that the next groups, of
            # about the same size, fit in it too.
            room = need + need // 4
            self._arrays.append(_fresh(-(-room // BUFFER_STEP) * BUFFER_STEP))
            i = len(self._arrays) - 1
        array = self._arrays[i]
        skip = -array.ctypes.data % ALIGN
        region = array[skip : skip + size]
        return pa.py_buffer(region), memoryview(region.data)

    def __len__(self) -> int:
        return len(self._arrays)


def _fresh(size: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """size bytes of new anonymous memory, in huge pages where the kernel allows: their
    first touch costs a fault per 2 MiB rather than per 4 KiB."""
    area = mmap.mmap(-1, size)
    advise = getattr(mmap, "MADV_HUGEPAGE", None)
    if advise is not None:
        with contextlib.suppress(OSError):  # a kernel without transparent huge pages
            area.madvise(advise)
    return np.frombuffer(area, dtype=np.uint8)


def _read_piece(fd: int, view: memoryview, want: int, at: int, path: Path) -> None:
    """view[:want] from offset at of fd (view may be longer: a direct read's padding)."""
    done = 0
    while done < want:
        got = os.preadv(fd, [view[done:]], at + done)
        if got <= 0:
            raise OSError(errno.EIO, f"spill file {path} ended early")
        done += got


def _read_into(fd: int, view: memoryview, size: int, path: Path) -> None:
    for at in range(0, size, READ_CHUNK):
        piece = view[at : min(len(view), at + READ_CHUNK)]
        _read_piece(fd, piece, min(READ_CHUNK, size - at), at, path)


def _batches(buf: pa.Buffer, size: int, schema: pa.Schema, path: Path) -> Iterator[pa.RecordBatch]:
    at = 0
    while at < size:
        if at + _FRAME.size > size:
            raise OSError(errno.EIO, f"spill file {path} ended early")
        (length,) = _FRAME.unpack_from(memoryview(buf)[at : at + _FRAME.size])
        at += _FRAME.size
        if length < 0 or at + length > size:
            raise OSError(errno.EIO, f"spill file {path} ended early")
        yield pa.ipc.read_record_batch(buf.slice(at, length), schema)
        at += length


def read_ranges(
    ranges: list[list[Path]], schema: pa.Schema, buffers: ReadBuffers | None = None
) -> Generator[list[pa.RecordBatch], None, None]:
    """The batches of each range's spill files, range by range, read (direct where
    allowed) into one buffer; each file is deleted once read.

    The reads run ahead in READERS threads, READ_CHUNK pieces at a time, in range order:
    while the caller works on one range's batches (sorts them), the next ranges come in.
    The batches point into the buffer, which lives as long as any of them; with buffers,
    it is one of theirs, and reused once the batches are gone.
    """
    paths = [p for files in ranges for p in files]
    sizes = [p.stat().st_size for p in paths]
    padded = [-(-n // ALIGN) * ALIGN for n in sizes]
    starts = [sum(padded[:i]) for i in range(len(paths))]
    if buffers is None:
        buffers = ReadBuffers(keep=0)
    buf, view = buffers.take(sum(padded))
    fds: list[int] = []
    pool = ThreadPoolExecutor(max(1, min(READERS, len(paths))), "rawexport-spill-read")
    try:
        for p in paths:
            fds.append(_open(p, os.O_RDONLY)[0])
        # One direct read at a time leaves the disk idle between requests (measured ~1.2
        # GB/s alone here, ~2 GB/s with a few at once): pieces of files are read side by side.
        pending: list[list[Future[None]]] = []
        for i in range(len(paths)):
            pieces = []
            for at in range(0, sizes[i], READ_CHUNK):
                lo = starts[i] + at
                piece = view[lo : min(starts[i] + padded[i], lo + READ_CHUNK)]
                want = min(READ_CHUNK, sizes[i] - at)
                pieces.append(pool.submit(_read_piece, fds[i], piece, want, at, paths[i]))
            pending.append(pieces)
        i = 0
        for files in ranges:
            out: list[pa.RecordBatch] = []
            for path in files:
                for f in pending[i]:
                    f.result()
                out.extend(_batches(buf.slice(starts[i], sizes[i]), sizes[i], schema, path))
                path.unlink()
                i += 1
            yield out
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for fd in fds:
            os.close(fd)
        view.release()


def read_spills(
    paths: list[Path], schema: pa.Schema, buffers: ReadBuffers | None = None
) -> list[pa.RecordBatch]:
    """The batches of spill files (one range of read_ranges), each file deleted once read."""
    return [b for got in read_ranges([paths], schema, buffers) for b in got]


def read_spill(path: Path, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """The batches of one spill file, read in one go (direct where allowed); the file stays.

    The batches point into one buffer from Arrow's pool, which lives as long as any of them.
    """
    size = path.stat().st_size
    fd, _ = _open(path, os.O_RDONLY)
    try:
        padded = -(-size // ALIGN) * ALIGN
        raw = pa.allocate_buffer(padded + ALIGN)
        skip = -raw.address % ALIGN
        buf = raw.slice(skip, padded)
        whole = memoryview(raw)  # a slice of a mutable Buffer is read-only; its view is not
        view = whole[skip : skip + padded]
        try:
            _read_into(fd, view, size, path)
        finally:
            view.release()
            whole.release()
    finally:
        os.close(fd)
    yield from _batches(buf, size, schema, path)
