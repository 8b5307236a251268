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

import json
import logging
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq

from rawexport.blobs import BlobStore
from rawexport.blobs.stores import open_blob_store
from rawexport.schema import DATA_TYPES
from rawexport.settings import Settings
from rawexport.store.events import (
    _SAFE_NAME,
    JOURNAL_SUFFIX,
    EventStore,
    _partition_hour,
    arrow_schema,
    by_hour,
    conform,
    write_event_file,
)
from rawexport.timeutil import HOUR_MS, utc_partition

log = logging.getLogger("rawexport.events")

ROW_GROUP_ROWS = 262_144
_EVENT_NAME = re.compile(r"(compact-)?[0-9a-f]{32}\.parquet")


class ObjectEventStore:
    """Events as Parquet objects (write_event_file) in a blob store (see the module's docstring)."""

    def __init__(self, blobs: BlobStore, tmp_dir: Path) -> None:
        self.blobs = blobs
        self.tmp_dir = Path(tmp_dir)

    def _hour_prefix(self, ai: str, data_type: str, hour_ms: int) -> str:
        if not _SAFE_NAME.fullmatch(ai):
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

    def _journals(self, prefix: str, names: set[str]) -> list[tuple[str, str, list[str]]]:
        """(journal name, merged name, input names) of the hour's journals."""
        out = []
        for name in sorted(n for n in names if n.endswith(JOURNAL_SUFFIX)):
            work = self._work()
            try:
                self.blobs.fetch(prefix + name, work / "j")
                data = json.loads((work / "j").read_text(encoding="utf-8"))
                out.append((name, str(data["merged"]), [str(n) for n in data["inputs"]]))
            except (FileNotFoundError, ValueError, KeyError, TypeError):
                continue
            finally:
                shutil.rmtree(work, ignore_errors=True)
        return out

    def _names(self, prefix: str) -> set[str]:
        return {b.key[len(prefix) :] for b in self.blobs.list(prefix)}

    def hour_keys(self, ai: str, data_type: str, hour_ms: int) -> list[str]:
        """The hour's event objects; inputs of a finished compaction are left out."""
        prefix = self._hour_prefix(ai, data_type, hour_ms)
        names = self._names(prefix)
        merged_away: set[str] = set()
        for _, merged, inputs in self._journals(prefix, names):
            if merged in names:
                merged_away.update(inputs)
        return [
            prefix + n for n in sorted(names) if _EVENT_NAME.fullmatch(n) and n not in merged_away
        ]

    @contextmanager
    def fetched_hour(
        self, ai: str, data_type: str, hour_ms: int
    ) -> Iterator[list[tuple[str, Path]]]:
        """(key, local copy) of each of the hour's objects; the copies go afterwards."""
        work = self._work()
        try:
            got = []
            for i, key in enumerate(self.hour_keys(ai, data_type, hour_ms)):
                dest = work / f"{i:05d}.parquet"
                self.blobs.fetch(key, dest)
                got.append((key, dest))
            yield got
        finally:
            shutil.rmtree(work, ignore_errors=True)

    @contextmanager
    def open_hour(self, ai: str, data_type: str, hour_ms: int) -> Iterator[list[Path]]:
        """The hour's objects downloaded into a temporary directory, removed afterwards."""
        with self.fetched_hour(ai, data_type, hour_ms) as got:
            yield [path for _, path in got]

    def hours(self, ai: str, data_type: str) -> list[int]:
        if not _SAFE_NAME.fullmatch(ai) or data_type not in DATA_TYPES:
            raise ValueError(f"bad project id or data type: {ai!r}, {data_type!r}")
        found: set[int] = set()
        prefix = f"{ai}/{data_type}/"
        for b in self.blobs.list(prefix):
            partition, _, name = b.key[len(prefix) :].partition("/")
            hour = _partition_hour(partition)
            if hour is not None and _EVENT_NAME.fullmatch(name):
                found.add(hour)
        return sorted(found)

    def projects(self) -> list[str]:
        """Project ids with objects in the store."""
        return sorted({b.key.split("/", 1)[0] for b in self.blobs.list("")})

    def delete_hour(self, ai: str, data_type: str, hour_ms: int) -> None:
        """Remove the hour's objects (retention: the hour already answers NOT_EXISTS)."""
        for b in self.blobs.list(self._hour_prefix(ai, data_type, hour_ms)):
            self.blobs.delete(b.key)

    def compact_hour(
        self, ai: str, data_type: str, hour_ms: int, *, small_bytes: int, min_files: int = 2
    ) -> int:
        """Merge the hour's objects smaller than small_bytes when there are min_files of
        them, finishing first what an interrupted compaction left; returns how many merged.
        The caller makes sure no other process compacts this store at the same time."""
        prefix = self._hour_prefix(ai, data_type, hour_ms)
        names = self._names(prefix)
        for journal, merged, inputs in self._journals(prefix, names):
            if merged in names:  # finish: the merged object holds the inputs' rows
                for n in inputs:
                    self.blobs.delete(prefix + n)
            self.blobs.delete(prefix + journal)
        sizes = {b.key: b.size for b in self.blobs.list(prefix)}
        small = [k for k in self.hour_keys(ai, data_type, hour_ms) if sizes[k] < small_bytes]
        if len(small) < max(2, min_files):
            return 0
        u = uuid.uuid4().hex
        merged_name = f"compact-{u}.parquet"
        work = self._work()
        try:
            target = work / "merged.parquet"
            self._write_merged(data_type, small, work, target)
            self.blobs.put_bytes(
                f"{prefix}.compact-{u}{JOURNAL_SUFFIX}",
                json.dumps(
                    {"merged": merged_name, "inputs": [k[len(prefix) :] for k in small]}
                ).encode(),
            )
            self.blobs.put(prefix + merged_name, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        for k in small:
            self.blobs.delete(k)
        self.blobs.delete(f"{prefix}.compact-{u}{JOURNAL_SUFFIX}")
        return len(small)

    def _write_merged(self, data_type: str, keys: list[str], work: Path, target: Path) -> None:
        schema = arrow_schema(data_type)
        stats = [f.name for f in schema if f.type != pa.string()]
        with pq.ParquetWriter(
            target, schema, compression="zstd", compression_level=1, write_statistics=stats
        ) as writer:
            for i, key in enumerate(keys):
                path = work / f"in-{i:05d}.parquet"
                self.blobs.fetch(key, path)
                writer.write_table(conform(data_type, pq.read_table(path)), ROW_GROUP_ROWS)
                path.unlink()


Events = EventStore | ObjectEventStore


def open_event_store(settings: Settings) -> Events:
    """The event store of events_url: the directory HOME/events (default), file:///DIR, or
    s3://bucket/prefix (with the S3 settings of the blob store)."""
    url = settings.events_url
    if not url:
        return EventStore(settings.events_dir)
    if url.startswith("file://"):
        return EventStore(Path(unquote(urlsplit(url).path)))
    blobs = open_blob_store(
        url, settings.events_dir, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region
    )
    return ObjectEventStore(blobs, settings.tmp_dir)
