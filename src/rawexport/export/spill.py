"""Spill files of record batches, written and read around the page cache (O_DIRECT).

A big export spills its lines once (range files, see pipeline) and reads them back once. On
these machines the page cache is the slow path: each fresh cache page costs a fault in the
host, so buffered writes ran at ~0.4 GB/s of kernel CPU (7 GB: 16 s of CPU) where O_DIRECT
writes took 1.3 s of CPU for the same bytes, and buffered reads of uncached data 14 s
against 1 s. Batches are framed as [8-byte length][IPC message]. Where O_DIRECT is refused
(tmpfs, some network file systems) the same files are written and read buffered.
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

# Direct I/O needs aligned buffers, offsets and sizes; 4096 covers every common device.
ALIGN = 4096
# Bytes read per system call when loading a file back.
READ_CHUNK = 8 << 20
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


def read_spill(path: Path, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """The batches of one spill file, read in one go (direct where allowed).

    The batches point into one buffer from Arrow's pool (reused, so no fresh pages), which
    lives as long as any of them.
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
            done = 0
            while done < size:
                got = os.preadv(fd, [view[done : min(padded, done + READ_CHUNK)]], done)
                if got <= 0:
                    raise OSError(errno.EIO, f"spill file {path} ended early")
                done += got
        finally:
            view.release()
            whole.release()
    finally:
        os.close(fd)
    at = 0
    while at < size:
        (length,) = _FRAME.unpack_from(memoryview(buf)[at : at + _FRAME.size])
        at += _FRAME.size
        yield pa.ipc.read_record_batch(buf.slice(at, length), schema)
        at += length
