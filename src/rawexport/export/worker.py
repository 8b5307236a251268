"""Running export jobs: one job under a lease, retries with capped backoff, a worker pool."""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from rawexport.blobs import BlobStore
from rawexport.catalog import Catalog, Job, LeaseLost, catalog_unavailable
from rawexport.catalog.jobs import ERROR_CHARS
from rawexport.errors import PermanentError, TransientError
from rawexport.export.lease import LeaseKeeper
from rawexport.export.manifest import manifest_bytes
from rawexport.export.ondask import DaskRunner
from rawexport.export.pipeline import Attempt, run_attempt
from rawexport.export.runners import LocalRunner, LocalWorkspace, Runner
from rawexport.fsutil import hide_paths
from rawexport.metrics import Metrics
from rawexport.periodic import Periodic
from rawexport.schema import DATA_TYPES, V1_TYPES
from rawexport.settings import Settings
from rawexport.store import EventStore
from rawexport.store.base import keys, paths
from rawexport.store.compaction import compact_hour
from rawexport.timeutil import now_ms
from rawexport.types import ExportResult, JobStatus

log = logging.getLogger("rawexport.worker")


def log_job(job: Job, status: str, level: int = logging.INFO, **fields: object) -> None:
    """One structured log line per job state change."""
    log.log(
        level,
        "job %s %s",
        job.id,
        status,
        extra={
            "event": "job",
            "job_id": job.id,
            "project_id": job.project_id,
            "version": job.version,
            "data_type": job.data_type,
            "hour_ms": job.hour_ms,
            "revision": job.revision,
            "attempt": job.attempts,
            "status": status,
            **fields,
        },
    )


class PermanentExportError(PermanentError):
    """A failure that retrying cannot fix; the job ends in ERROR at once."""


def check_readable(files: list[Path]) -> None:
    """PermanentExportError naming the first file that is not Parquet (footer unreadable).

    A stored file is renamed into place only once whole and fsynced, so one that does not
    parse is damaged: reading it again cannot help, the job fails at once and says which.
    """
    for path in files:
        try:
            pq.read_metadata(path)
        except FileNotFoundError:
            continue  # compacted away meanwhile: the export lists the hour again
        except pa.ArrowInvalid as e:
            raise PermanentExportError(
                f"event file {path} is not readable Parquet ({e}); "
                "restore or remove it, then rerun the hour"
            ) from None


PERMANENT, TRANSIENT, UNKNOWN = "permanent", "transient", "unknown"
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def failure_kind(e: BaseException) -> str:
    """PERMANENT, TRANSIENT or UNKNOWN: the branch of the error tree (rawexport.errors), and
    for errors of libraries what they mean here. ArrowInvalid: data the export cannot parse
    or convert (the same bytes fail again); the catalog database unreachable or locked, or a
    connection that broke or timed out: an outage."""
    if isinstance(e, PermanentError | pa.ArrowInvalid):
        return PERMANENT
    if isinstance(e, TransientError | ConnectionError | TimeoutError) or catalog_unavailable(e):
        return TRANSIENT
    return UNKNOWN


def same_failure(previous: str | None, e: BaseException, error: str) -> bool:
    """Whether e, recorded as `error`, fails as the attempt before did (`previous`, its
    recorded error): the same message but for its numbers (two runs of one failure may
    count differently), or for running out of memory, the same type whatever the message
    (DuckDB's names the allocation that tripped the budget: its size, its wording)."""
    if previous is None:
        return False
    if isinstance(e, duckdb.OutOfMemoryException | MemoryError):
        return previous.startswith(f"{type(e).__name__}:") or previous == type(e).__name__
    return _NUMBER.sub("#", previous) == _NUMBER.sub("#", error[:ERROR_CHARS])


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def backoff_ms(attempt: int, base_s: float, cap_s: float) -> int:
    """Delay before retry number `attempt` (1-based): base * 2^(attempt-1), capped."""
    return int(min(cap_s, base_s * 2 ** max(0, attempt - 1)) * 1000)


@dataclass
class Exporter:
    """Runs claimed jobs: store partition -> runner -> catalog commit."""

    settings: Settings
    catalog: Catalog
    store: EventStore
    blobs: BlobStore
    clock: Callable[[], int] = now_ms
    metrics: Metrics | None = None
    # Set: jobs' tasks run on this Dask cluster (their lease and commit stay here).
    dask: DaskRunner | None = None

    def __post_init__(self) -> None:
        self.runner: Runner = (
            self.dask
            if self.dask is not None
            else LocalRunner(LocalWorkspace(self.blobs, self.settings.tmp_dir))
        )

    def source_type(self, job: Job) -> str:
        if job.version == "v2":
            if job.data_type not in DATA_TYPES:
                raise PermanentExportError(f"unknown data type {job.data_type!r}")
            return job.data_type
        if job.data_type not in V1_TYPES:
            raise PermanentExportError(f"unknown v1 data type {job.data_type!r}")
        return V1_TYPES[job.data_type].source

    def execute(self, job: Job, owner: str) -> str:
        """Run a job this owner has claimed; returns its new status.

        Fencing (docs/design.md, decision 9): the attempt writes its parts under keys of its own
        (the job's attempt count is in their uuid), and commits them, with the manifest, only
        if it still holds the lease. An attempt that lost it leaves orphans at most, which
        the sweeper deletes; it can never change a byte of what another attempt committed.
        """
        lease_ms = int(self.settings.lease_seconds * 1000)
        keeper = LeaseKeeper(
            lambda: self.catalog.renew_lease(job, owner, self.clock(), lease_ms),
            lease_ms,
            f"job {job.id}",
        )
        with keeper:
            return self._execute(job, owner, keeper)

    def _execute(self, job: Job, owner: str, keeper: LeaseKeeper) -> str:
        lost = keeper.lost
        started = time.monotonic()
        log_job(job, JobStatus.RUNNING, owner=owner)
        try:
            project = self.catalog.project_by_id(job.project_id)
            source = self.source_type(job)
            if not self.store.single_compactor:
                with self.store.open_hour(project.ai, source, job.hour_ms) as files:
                    check_readable(paths(files))
                # Many small files read slowly; merge them first, then keep them while
                # reading. (An object store is compacted by one node's compactor alone.)
                compact_hour(
                    self.store,
                    project.ai,
                    source,
                    job.hour_ms,
                    small_bytes=self.settings.compact_small_bytes,
                )
            with self.store.open_hour(project.ai, source, job.hour_ms) as files:
                check_readable(paths(files))
                result = self._run(job, project.ai, paths(files), lost, keys(files))
            keeper.stop()
            done = self.clock()
            manifest = manifest_bytes(
                result,
                ai=project.ai,
                version=job.version,
                name=job.data_type,
                hour_ms=job.hour_ms,
                revision=job.revision,
                created_ms=done,
            )
            # Parts are durable (put fsyncs them); the manifest is written last, inside the
            # fenced commit, so only the committing attempt ever writes it.
            self.catalog.complete(
                job,
                owner,
                result,
                done,
                publish=lambda: self.blobs.put_bytes(result.manifest_key, manifest),
            )
            seconds = time.monotonic() - started
            if self.metrics is not None:
                self.metrics.job_finished(
                    job.version,
                    job.data_type,
                    job.hour_ms,
                    result.rows,
                    result.bytes,
                    done,
                    seconds,
                    job.preview,
                )
            log_job(job, JobStatus.FINISHED, rows=result.rows, bytes=result.bytes, seconds=seconds)
            return JobStatus.FINISHED
        except LeaseLost:
            log_job(job, "lost", level=logging.WARNING)
            return "lost"
        except Exception as e:  # every failure is recorded on the job, none kills the pool
            status = self._record_failure(job, owner, e)
            if self.metrics is not None:
                self.metrics.job_failed(status, time.monotonic() - started)
            return status

    def _run(
        self,
        job: Job,
        ai: str,
        files: list[Path],
        lost: threading.Event,
        keys: list[str] | None = None,
    ) -> ExportResult:
        """Write the attempt's parts with the node's runner (on the Dask cluster if there is
        one, else here). keys: the files' objects in the event store, which Dask workers
        read themselves."""
        at = Attempt.of(
            self.settings, ai, job.version, job.data_type, job.hour_ms, job.revision, job.attempts
        )
        return run_attempt(at, files, self.runner, lost, keys)

    def _record_failure(self, job: Job, owner: str, e: Exception) -> str:
        """Record the attempt's failure: retried later (`retrying`) or for good (`error`).

        Its kind decides (failure_kind): permanent ends the job; transient retries until
        max_attempts; unknown too, unless it repeats the previous attempt's failure (then
        the next attempt would only fail the same way again: an hour too big for the
        memory budget fails with DuckDB's out-of-memory error on every attempt)."""
        message = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        # The job's error is shown to API clients (errorMsg) and project visitors of the
        # console: without the server's paths. The log keeps the whole message.
        shown = hide_paths(message)
        kind = failure_kind(e)
        repeated = kind == UNKNOWN and same_failure(job.error, e, shown)
        now = self.clock()
        retry_at = None
        if kind != PERMANENT and not repeated and job.attempts < self.settings.max_attempts:
            retry_at = now + backoff_ms(
                job.attempts, self.settings.retry_base_seconds, self.settings.retry_max_seconds
            )
        try:
            status = self.catalog.fail(job, owner, shown, retry_at=retry_at, now=now)
        except LeaseLost:
            status = "lost"
        log_job(
            job,
            status,
            level=logging.WARNING,
            error=message,
            retry_at_ms=retry_at,
            failure=kind,
            repeated=repeated,
        )
        return status

    def run_one(self, owner: str) -> bool:
        """Claim and run the next runnable job; False when there was none."""
        lease_ms = int(self.settings.lease_seconds * 1000)
        job = self.catalog.claim(owner, self.clock(), lease_ms, self.settings.max_attempts)
        if job is None:
            return False
        self.execute(job, owner)
        return True

    def run_job_now(self, job_id: int, owner: str) -> str:
        """Claim one given job and run it synchronously (CLI `export run`)."""
        lease_ms = int(self.settings.lease_seconds * 1000)
        job = self.catalog.claim_id(
            job_id, owner, self.clock(), lease_ms, self.settings.max_attempts
        )
        if job is None:
            return self.catalog.job(job_id).status
        return self.execute(job, owner)

    def drain(self, owner: str, max_jobs: int | None = None) -> int:
        """Run runnable jobs until none is left (or max_jobs); returns how many ran."""
        ran = 0
        while (max_jobs is None or ran < max_jobs) and self.run_one(owner):
            ran += 1
        return ran


class WorkerPool:
    """N threads claiming and running jobs until stopped."""

    def __init__(self, exporter: Exporter, size: int, poll_seconds: float = 0.5) -> None:
        self.exporter = exporter
        self.size = size
        self.poll_seconds = poll_seconds
        self._owner = threading.local()  # each thread leases jobs as an owner of its own
        metrics = exporter.metrics
        # a job run, the next is claimed at once; none, the pool polls again
        self.loop = Periodic(
            "export-worker",
            self._run_one,
            poll_seconds,
            threads=size,
            on_error=None if metrics is None else metrics.failed("worker"),
        )

    def _run_one(self) -> bool:
        owner = getattr(self._owner, "id", None)
        if owner is None:
            owner = self._owner.id = owner_id()
        return self.exporter.run_one(owner)

    def start(self) -> None:
        self.loop.start()

    def stop(self, timeout: float = 30.0) -> None:
        self.loop.stop(timeout)
