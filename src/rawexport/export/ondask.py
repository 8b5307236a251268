"""Export attempts on a Dask cluster (`dask_address`): the pipeline's executor adapter.

`DaskRunner` gives `pipeline.run_attempt` an executor on the cluster
(`Client.get_executor()`) and a picklable `Place` from which each worker process opens
what tasks need: the blob store (its URL and the usual AWS variables), a temp directory,
and the hour's event files, read by the paths the coordinator lists (one host, or a file
system shared by all) or fetched from the event object store. Scratch between an attempt's
tasks is kept in the blob store under `_work/`, so any worker can read what another wrote.

The export's steps are `pipeline`'s, the same as in one process: the parts are the same
bytes. Every task is a function of its arguments: a task lost with its worker is run again
by Dask on another worker and writes the same keys with the same bytes, and nothing is
linked before the coordinator's commit, which needs the lease.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rawexport.blobs import BlobStore
from rawexport.blobs.stores import open_blob_store
from rawexport.errors import RawexportError
from rawexport.export.keys import SCRATCH
from rawexport.settings import Settings

# Tasks of each kind per worker thread of the cluster, and the fewest rows a split task
# reads (whole row groups; v1 reads whole files).
TASKS_PER_THREAD = 2
MIN_SLICE_ROWS = 250_000


@dataclass(frozen=True)
class Place:
    """Where a worker finds an export's storage: picklable, opened once per process."""

    blobs_url: str
    exports_dir: str
    s3_endpoint_url: str
    s3_region: str
    tmp_dir: str
    events_url: str = ""

    @classmethod
    def of(cls, settings: Settings) -> Place:
        return cls(
            events_url=settings.events_url if settings.events_url.startswith("s3://") else "",
            blobs_url=settings.blobs_url,
            exports_dir=str(settings.exports_dir),
            s3_endpoint_url=settings.s3_endpoint_url,
            s3_region=settings.s3_region,
            tmp_dir=str(settings.tmp_dir),
        )

    def workspace(self) -> StoreWorkspace:
        with _opened_lock:
            if self not in _opened:
                _opened[self] = StoreWorkspace(self)
            return _opened[self]


_opened: dict[Place, StoreWorkspace] = {}
_opened_lock = threading.Lock()


class StoreWorkspace:
    """A worker's workspace: scratch objects in the blob store, inputs by path or fetched
    from the event object store."""

    def __init__(self, place: Place) -> None:
        self.place = place
        self.tmp_dir = Path(place.tmp_dir)
        self.blobs: BlobStore = open_blob_store(
            place.blobs_url,
            Path(place.exports_dir),
            endpoint_url=place.s3_endpoint_url,
            region=place.s3_region,
        )
        self._events: BlobStore | None = None
        if place.events_url:
            self._events = open_blob_store(
                place.events_url,
                self.tmp_dir,
                endpoint_url=place.s3_endpoint_url,
                region=place.s3_region,
            )

    def inputs(self, work: Path, names: Sequence[str]) -> list[Path]:
        """The paths themselves, or, with events in an object store (names are then keys),
        copies fetched into work."""
        if self._events is None:
            return [Path(n) for n in names]
        out = []
        for i, key in enumerate(names):
            dest = work / f"event-{i:05d}.parquet"
            self._events.fetch(key, dest)
            out.append(dest)
        return out

    def put_scratch(self, key: str, src: Path) -> None:
        """Keep src as scratch: on a local blob store (one host or a shared file system) a
        rename, without the fsyncs of a durable put (scratch outlives no crash: a killed
        attempt is run again from its event files); elsewhere an upload."""
        if self.blobs.local:
            dest = self.blobs.local_path(key)
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(src, dest)
                return
            except OSError as e:
                if e.errno != errno.EXDEV:
                    raise
        self.blobs.put(key, src)

    def fetch_scratch(self, key: str, dest: Path) -> None:
        self.blobs.fetch(key, dest)

    def clear_scratch(self, prefix: str) -> None:
        for info in self.blobs.list(prefix):
            self.blobs.delete(info.key)


class DaskRunner:
    """Runs export attempts' tasks on the Dask cluster at `address` (one client per
    process). An hour's work is cut into TASKS_PER_THREAD split tasks and as many group
    tasks per worker thread of the cluster: enough to balance the load, few enough that a
    task's own costs (a DuckDB, its files) stay small and that a group task still reads
    its next group while it sorts one, as in one process."""

    fetches_inputs = True

    def __init__(self, settings: Settings, address: str | None = None) -> None:
        self.settings = settings
        self.address = address or settings.dask_address
        self.where = Place.of(settings)
        self.slice_size: int | None = None  # rows per split task; None: by the cluster
        self._client: Any = None
        self._lock = threading.Lock()

    def _threads(self) -> int:
        workers = self.client().scheduler_info().get("workers", {})
        return max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))

    def slice_rows(self, rows: int) -> int | None:
        if self.slice_size is not None:
            return self.slice_size
        tasks = TASKS_PER_THREAD * self._threads()
        return max(MIN_SLICE_ROWS, -(-rows // tasks))

    def groups_per_task(self, groups: int) -> int | None:
        return max(1, -(-groups // (TASKS_PER_THREAD * self._threads())))

    def client(self) -> Any:
        from distributed import Client

        with self._lock:
            if self._client is None:
                self._client = Client(  # type: ignore[no-untyped-call]
                    self.address, timeout=self.settings.dask_timeout, set_as_default=False
                )
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def executor(self) -> AbstractContextManager[Executor]:
        return self._executor()

    @contextmanager
    def _executor(self) -> Iterator[Executor]:
        pool: Executor = self.client().get_executor(pure=False)
        try:
            yield pool
        finally:
            pool.shutdown(wait=False)  # every task is done or cancelled by now


class DaskUnusable(RawexportError):
    """The Dask cluster of dask_address cannot run exports; the message says what to fix."""


def worker_probe(place: Place, events_dir: str) -> str:
    """Run on a worker: can it import this rawexport, open the blob store, see the events?"""
    import rawexport

    place.workspace().blobs.list(f"{SCRATCH}/probe/")
    if not place.events_url and not Path(events_dir).is_dir():
        raise DaskUnusable(
            f"a Dask worker cannot see the event directory {events_dir}; run workers on "
            "the same host or a shared file system"
        )
    return str(getattr(rawexport, "__version__", "?"))


def probe(settings: Settings, timeout: float = 10.0) -> str:
    """What `rawexport check` says of the Dask cluster; DaskUnusable when it cannot work."""
    from distributed import Client

    address = settings.dask_address
    try:
        client = Client(  # type: ignore[no-untyped-call]
            address, timeout=min(timeout, settings.dask_timeout), set_as_default=False
        )
    except (OSError, TimeoutError, ValueError) as e:
        raise DaskUnusable(
            f"cannot reach the Dask scheduler at {address} ({type(e).__name__}: {e}); "
            f"start `dask scheduler` there or fix dask_address"
        ) from None
    try:
        workers = client.scheduler_info().get("workers", {})
        if not workers:
            raise DaskUnusable(
                f"no Dask workers are connected to {address}; start `dask worker {address}`"
            )
        run = client.submit(worker_probe, Place.of(settings), str(settings.events_dir), pure=False)
        try:
            version = run.result(timeout=timeout * 3)
        except DaskUnusable:
            raise
        except Exception as e:
            raise DaskUnusable(
                f"a probe task failed on a Dask worker ({type(e).__name__}: {e}); the "
                "workers need this rawexport installed and the storage settings' access"
            ) from None
        return f"scheduler {address}, {len(workers)} workers, probe task ran (rawexport {version})"
    finally:
        client.close()  # type: ignore[no-untyped-call]
