"""The event store on a local directory (the default `events_url`).

Layout: {root}/{ai}/{data_type}/{UTC yyyyMMddHH}/{uuid4 hex}.parquet. A file is written as
.{name}.tmp in its hour's directory, fsynced, and renamed into place, so a reader listing
the hour never sees a partial file. Readers share a lock on the hour; compaction holds it
alone, so any process of this host may compact (`single_compactor` is False).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa

from rawexport.schema import DATA_TYPES
from rawexport.store.base import JOURNAL_SUFFIX, EventFile, is_event_name, live_names
from rawexport.store.events import (
    SAFE_NAME,
    by_hour,
    fsync_dir,
    partition_hour,
    read_journal,
    write_event_file,
)
from rawexport.timeutil import HOUR_MS, utc_partition

STALE_APPEND_SECONDS = 3600  # no append stays staged this long unless its process died


def _makedirs(path: Path) -> None:
    """mkdir -p that fsyncs each new directory's parent, so the entry survives a crash."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir(exist_ok=True)
        fsync_dir(d.parent)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


class LocalHour:
    """An hour's directory as HourFiles."""

    def __init__(self, d: Path) -> None:
        self.d = d

    def sizes(self) -> dict[str, int]:
        out: dict[str, int] = {}
        if not self.d.is_dir():
            return out
        for p in self.d.iterdir():
            try:
                out[p.name] = p.stat().st_size
            except FileNotFoundError:
                continue
        return out

    def journal(self, name: str) -> tuple[str, list[str]] | None:
        return read_journal(self.d / name)

    def stage(self, name: str) -> Path:
        return self.d / (f"{name}.tmp" if name.startswith(".") else f".{name}.tmp")

    def publish(self, name: str, staged: Path) -> None:
        fd = os.open(staged, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(staged, self.d / name)
        fsync_dir(self.d)

    def delete(self, names: Iterable[str]) -> None:
        gone = False
        for name in names:
            (self.d / name).unlink(missing_ok=True)
            gone = True
        if gone:
            fsync_dir(self.d)

    @contextmanager
    def fetch(self, names: list[str]) -> Iterator[list[EventFile]]:
        yield [EventFile(self.d / n) for n in names]

    def drop_staged(self, names: Iterable[str]) -> None:
        stale = time.time() - STALE_APPEND_SECONDS
        for name in names:
            # A compaction's staged file never got in place; an append crashed before its
            # rename (one staged recently may still be written).
            if name.endswith(".tmp") and (
                name.startswith(".compact-") or _mtime(self.d / name) < stale
            ):
                (self.d / name).unlink(missing_ok=True)


class LocalEventStore:
    """Events as Parquet files under a directory (see the module's docstring)."""

    single_compactor = False

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def type_dir(self, ai: str, data_type: str) -> Path:
        if not SAFE_NAME.fullmatch(ai):
            raise ValueError(f"bad project id {ai!r}")
        if data_type not in DATA_TYPES:
            raise ValueError(f"unknown data type {data_type!r}")
        return self.root / ai / data_type

    def hour_dir(self, ai: str, data_type: str, hour_ms: int) -> Path:
        if hour_ms % HOUR_MS:
            raise ValueError(f"{hour_ms} is not the start of an hour")
        return self.type_dir(ai, data_type) / utc_partition(hour_ms)

    def append(self, ai: str, data_type: str, table: pa.Table) -> dict[int, int]:
        """Store the rows durably, one new file per sendTime hour; returns {hour_ms: rows}.

        Every file is staged and fsynced before any is renamed into place, so an error
        (bad data, full disk) before the renames leaves nothing visible.
        """
        type_dir = self.type_dir(ai, data_type)
        groups = by_hour(data_type, table)
        staged: list[tuple[Path, Path]] = []
        try:
            for hour, group in groups.items():
                d = type_dir / utc_partition(hour)
                _makedirs(d)
                name = f"{uuid.uuid4().hex}.parquet"
                tmp = d / f".{name}.tmp"
                staged.append((tmp, d / name))
                write_event_file(group, tmp)
        except BaseException:
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)
            raise
        for tmp, final in staged:
            os.replace(tmp, final)
            fsync_dir(final.parent)
        return {hour: group.num_rows for hour, group in groups.items()}

    @contextmanager
    def hour(self, ai: str, data_type: str, hour_ms: int) -> Iterator[LocalHour]:
        yield LocalHour(self.hour_dir(ai, data_type, hour_ms))

    def hour_files(self, ai: str, data_type: str, hour_ms: int) -> list[Path]:
        """The hour's committed files; inputs of a finished compaction are left out."""
        d = self.hour_dir(ai, data_type, hour_ms)
        if not d.is_dir():
            return []
        return [d / n for n in live_names(LocalHour(d))]

    @contextmanager
    def hour_lock(
        self, ai: str, data_type: str, hour_ms: int, *, exclusive: bool
    ) -> Iterator[None]:
        """Readers share it, compaction holds it alone (across processes of this host)."""
        d = self.hour_dir(ai, data_type, hour_ms)
        if not d.is_dir():
            yield
            return
        fd = os.open(d / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    @contextmanager
    def open_hour(self, ai: str, data_type: str, hour_ms: int) -> Iterator[list[EventFile]]:
        """The hour's files as local paths, kept (no compaction removes them) while open."""
        with self.hour_lock(ai, data_type, hour_ms, exclusive=False):
            yield [EventFile(p) for p in self.hour_files(ai, data_type, hour_ms)]

    def hours(self, ai: str, data_type: str) -> list[int]:
        d = self.type_dir(ai, data_type)
        if not d.is_dir():
            return []
        found = []
        for sub in d.iterdir():
            hour = partition_hour(sub.name)
            if (
                hour is not None
                and sub.is_dir()
                and any(is_event_name(p.name) for p in sub.iterdir())
            ):
                found.append(hour)
        return sorted(found)

    def projects(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if SAFE_NAME.fullmatch(p.name))

    def delete_hour(self, ai: str, data_type: str, hour_ms: int) -> None:
        """Remove an hour's files; a crash midway leaves the hour either whole or gone."""
        d = self.hour_dir(ai, data_type, hour_ms)
        if not d.is_dir():
            return
        doomed = d.with_name(f".{d.name}.{uuid.uuid4().hex}.deleting")
        os.replace(d, doomed)
        fsync_dir(d.parent)
        shutil.rmtree(doomed)


__all__ = ["JOURNAL_SUFFIX", "LocalEventStore", "LocalHour"]
