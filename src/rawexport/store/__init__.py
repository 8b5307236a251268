"""The event store: partitioned Parquet per project / data type / UTC hour, and its compaction.

`base` says what a store is (the `EventStore` protocol, an hour's files, how an hour is
read); `local` keeps the files in a directory, `s3` in an object store (named as `blobs/`
names its stores); `events` is the file format; `compaction` merges an hour's small files
crash-safely, the same steps for both. Ingest writes here, export reads here.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from rawexport.blobs.stores import open_blob_store
from rawexport.settings import Settings
from rawexport.store.base import EventFile, EventStore, HourFiles
from rawexport.store.local import LocalEventStore
from rawexport.store.s3 import S3EventStore

__all__ = [
    "EventFile",
    "EventStore",
    "HourFiles",
    "LocalEventStore",
    "S3EventStore",
    "open_event_store",
]


def open_event_store(settings: Settings) -> EventStore:
    """The event store of events_url: the directory HOME/events (default), file:///DIR, or
    s3://bucket/prefix (with the S3 settings of the blob store)."""
    url = settings.events_url
    if not url:
        return LocalEventStore(settings.events_dir)
    if url.startswith("file://"):
        return LocalEventStore(Path(unquote(urlsplit(url).path)))
    blobs = open_blob_store(
        url, settings.events_dir, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region
    )
    return S3EventStore(blobs, settings.tmp_dir)
