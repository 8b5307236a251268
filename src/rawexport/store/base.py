"""What an event store is, whatever holds its files: the protocols both stores implement
(local.LocalEventStore on a directory, s3.S3EventStore on an object store), and the rule
both read an hour by.

An hour of one project's data type is a flat set of named files (`HourFiles`): event files
(`{uuid4 hex}.parquet`, `compact-{uuid4 hex}.parquet`), compaction journals
(`.compact-{uuid}.journal`) and, on a directory, staged files (`.{name}.tmp`). A journal
names a merged file and its inputs: once the merged file exists, its inputs are no longer
read (`live_names`), so a compaction interrupted anywhere reads every row exactly once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import NamedTuple, Protocol

import pyarrow as pa

JOURNAL_SUFFIX = ".journal"


def is_event_name(name: str) -> bool:
    """A committed event file: staged and journal names start with a dot."""
    return name.endswith(".parquet") and not name.startswith(".")


class EventFile(NamedTuple):
    """One of an hour's event files as a reader holds it: a local path, and its object key
    when it lives in an object store (a Dask worker fetches it by that key)."""

    path: Path
    key: str | None = None


class HourFiles(Protocol):
    """One hour of one project's data type, as compaction and readers see it."""

    def sizes(self) -> dict[str, int]:
        """Every file of the hour (journals and staged files too): name -> bytes."""
        ...

    def journal(self, name: str) -> tuple[str, list[str]] | None:
        """(merged name, input names) of a journal; None when it cannot be read."""
        ...

    def stage(self, name: str) -> Path:
        """A local path to write the file `name` at, before `publish` makes it the hour's."""
        ...

    def publish(self, name: str, staged: Path) -> None:
        """The staged file becomes the hour's file `name`: durably, all at once."""
        ...

    def delete(self, names: Iterable[str]) -> None:
        """Remove these files, durably (a name already gone is not an error)."""
        ...

    def fetch(self, names: list[str]) -> AbstractContextManager[list[EventFile]]:
        """Readable local copies (or the files themselves) of these names, while open."""
        ...

    def drop_staged(self, names: Iterable[str]) -> None:
        """Remove what a crashed writer left staged among these names (a compaction's
        staged file; an append staged long ago)."""
        ...


class EventStore(Protocol):
    """Events as Parquet files per project / data type / UTC hour."""

    # True when only one node may compact the store at a time (objects have no locks:
    # `serve` elects one); False when compaction locks each hour itself (a directory).
    single_compactor: bool

    def append(self, ai: str, data_type: str, table: pa.Table) -> dict[int, int]:
        """Store rows durably, one new file per sendTime hour; returns {hour_ms: rows}."""
        ...

    def hour(self, ai: str, data_type: str, hour_ms: int) -> AbstractContextManager[HourFiles]:
        """The hour's files, for compaction (the caller holds hour_lock exclusively)."""
        ...

    def hour_lock(
        self, ai: str, data_type: str, hour_ms: int, *, exclusive: bool
    ) -> AbstractContextManager[None]:
        """Readers share it, compaction holds it alone (a no-op where single_compactor)."""
        ...

    def open_hour(
        self, ai: str, data_type: str, hour_ms: int
    ) -> AbstractContextManager[list[EventFile]]:
        """The hour's event files as local paths, kept while open."""
        ...

    def hours(self, ai: str, data_type: str) -> list[int]:
        """The hours (ms) of the project's type that hold event files."""
        ...

    def projects(self) -> list[str]:
        """The project ids with files in the store."""
        ...

    def delete_hour(self, ai: str, data_type: str, hour_ms: int) -> None:
        """Remove an hour's files (retention)."""
        ...


def live_names(files: HourFiles, sizes: Mapping[str, int] | None = None) -> list[str]:
    """The hour's event files a reader reads: the inputs of a compaction whose merged file
    exists are left out (their rows are in it)."""
    names = set(files.sizes() if sizes is None else sizes)
    merged_away: set[str] = set()
    for name in names:
        if name.endswith(JOURNAL_SUFFIX):
            journal = files.journal(name)
            if journal is not None and journal[0] in names:
                merged_away.update(journal[1])
    return sorted(n for n in names if is_event_name(n) and n not in merged_away)


def paths(files: Iterable[EventFile]) -> list[Path]:
    return [f.path for f in files]


def keys(files: list[EventFile]) -> list[str] | None:
    """The object keys of the files, when every one has one (an object store)."""
    found = [f.key for f in files]
    return None if any(k is None for k in found) else [k for k in found if k is not None]
