"""The event store on an object store (S3): `events_url = s3://bucket/prefix`.

Same layout and rules as the local store: `{ai}/{data_type}/{UTC yyyyMMddHH}/{uuid}.parquet`,
one object per append and hour. An object exists only once its PUT (or multipart upload)
has completed, so an append is acknowledged after its objects are stored, and a reader
never sees a partial file. Compaction follows the local store's journal protocol with
objects: merged object written under its final name only after a journal object naming it
and its inputs; readers leave out the inputs of a journal whose merged object exists; the
inputs, then the journal, are deleted. Objects have no locks: only one process compacts an
object store at a time (in `serve`, the node holding the compactor's advisory lock), and a
reader whose input was compacted away meanwhile fails and is retried.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import pyarrow as pa

from rawexport.blobs import BlobStore
from rawexport.schema import DATA_TYPES
from rawexport.store.base import EventFile, is_event_name, live_names
from rawexport.store.events import (
    SAFE_NAME,
    by_hour,
    partition_hour,
    read_journal,
    write_event_file,
)
from rawexport.timeutil import HOUR_MS, utc_partition

log = logging.getLogger("rawexport.events")


class S3Hour:
    """An hour's prefix as HourFiles; files are staged in a work directory of its own."""

    def __init__(self, blobs: BlobStore, prefix: str, work: Path) -> None:
        self.blobs, self.prefix, self.work = blobs, prefix, work

    def sizes(self) -> dict[str, int]:
        return {b.key[len(self.prefix) :]: b.size for b in self.blobs.list(self.prefix)}

    def journal(self, name: str) -> tuple[str, list[str]] | None:
        local = self.work / f"journal-{uuid.uuid4().hex}"
        try:
            self.blobs.fetch(self.prefix + name, local)
        except FileNotFoundError:
            return None
        try:
            return read_journal(local)
        finally:
            local.unlink(missing_ok=True)

    def stage(self, name: str) -> Path:
        return self.work / f"staged-{uuid.uuid4().hex}-{name}"

    def publish(self, name: str, staged: Path) -> None:
        self.blobs.put(self.prefix + name, staged)
        staged.unlink(missing_ok=True)

    def delete(self, names: Iterable[str]) -> None:
        for name in names:
            self.blobs.delete(self.prefix + name)

    @contextmanager
    def fetch(self, names: list[str]) -> Iterator[list[EventFile]]:
        d = Path(tempfile.mkdtemp(prefix="fetched-", dir=self.work))
        try:
            got = []
            for i, name in enumerate(names):
                dest = d / f"{i:05d}.parquet"
                self.blobs.fetch(self.prefix + name, dest)
                got.append(EventFile(dest, self.prefix + name))
            yield got
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def drop_staged(self, names: Iterable[str]) -> None:
        return None  # objects are stored whole or not at all: nothing is left staged


class S3EventStore:
    """Events as Parquet objects in a blob store (see the module's docstring)."""

    single_compactor = True

    def __init__(self, blobs: BlobStore, tmp_dir: Path) -> None:
        self.blobs = blobs
        self.tmp_dir = Path(tmp_dir)

    def _hour_prefix(self, ai: str, data_type: str, hour_ms: int) -> str:
        if not SAFE_NAME.fullmatch(ai):
            raise ValueError(f"bad project id {ai!r}")
        if data_type not in DATA_TYPES:
            raise ValueError(f"unknown data type {data_type!r}")
        if hour_ms % HOUR_MS:
            raise ValueError(f"{hour_ms} is not the start of an hour")
        return f"{ai}/{data_type}/{utc_partition(hour_ms)}/"

    def _work(self) -> Path:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="events-", dir=self.tmp_dir))

    def append(self, ai: str, data_type: str, table: pa.Table) -> dict[int, int]:
        """Store the rows, one new object per sendTime hour; returns {hour_ms: rows}.

        Returns once every object is stored. If one fails, those already stored are deleted
        again before the error is raised, so a failed append leaves nothing behind (unless
        that delete fails too).
        """
        groups = by_hour(data_type, table)
        work = self._work()
        stored: list[str] = []
        try:
            for hour, group in groups.items():
                key = f"{self._hour_prefix(ai, data_type, hour)}{uuid.uuid4().hex}.parquet"
                path = work / "staged.parquet"
                write_event_file(group, path)
                self.blobs.put(key, path)
                stored.append(key)
        except BaseException:
            for key in stored:
                try:
                    self.blobs.delete(key)
                except Exception:
                    log.exception("could not delete %s after a failed append", key)
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return {hour: group.num_rows for hour, group in groups.items()}

    @contextmanager
    def hour(self, ai: str, data_type: str, hour_ms: int) -> Iterator[S3Hour]:
        work = self._work()
        try:
            yield S3Hour(self.blobs, self._hour_prefix(ai, data_type, hour_ms), work)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def hour_keys(self, ai: str, data_type: str, hour_ms: int) -> list[str]:
        """The hour's event objects; inputs of a finished compaction are left out."""
        with self.hour(ai, data_type, hour_ms) as files:
            return [files.prefix + n for n in live_names(files)]

    def hour_lock(
        self, ai: str, data_type: str, hour_ms: int, *, exclusive: bool
    ) -> AbstractContextManager[None]:
        """No locks on objects: one node compacts (single_compactor), and a reader whose
        input was compacted away meanwhile fails and is retried."""
        return nullcontext()

    @contextmanager
    def open_hour(self, ai: str, data_type: str, hour_ms: int) -> Iterator[list[EventFile]]:
        """The hour's objects downloaded into a temporary directory (with their keys),
        removed afterwards."""
        with self.hour(ai, data_type, hour_ms) as files, files.fetch(live_names(files)) as got:
            yield got

    def hours(self, ai: str, data_type: str) -> list[int]:
        if not SAFE_NAME.fullmatch(ai) or data_type not in DATA_TYPES:
            raise ValueError(f"bad project id or data type: {ai!r}, {data_type!r}")
        found: set[int] = set()
        prefix = f"{ai}/{data_type}/"
        for b in self.blobs.list(prefix):
            partition, _, name = b.key[len(prefix) :].partition("/")
            hour = partition_hour(partition)
            if hour is not None and is_event_name(name):
                found.add(hour)
        return sorted(found)

    def projects(self) -> list[str]:
        """Project ids with objects in the store."""
        return sorted({b.key.split("/", 1)[0] for b in self.blobs.list("")})

    def delete_hour(self, ai: str, data_type: str, hour_ms: int) -> None:
        """Remove the hour's objects (retention: the hour already answers NOT_EXISTS)."""
        for b in self.blobs.list(self._hour_prefix(ai, data_type, hour_ms)):
            self.blobs.delete(b.key)
