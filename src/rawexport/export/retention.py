"""The sweeper: drops what is past retention, superseded revisions once no link needs them,
the orphan parts of attempts that never committed, and expired issued links."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from rawexport.blobs import BlobStore
from rawexport.catalog import PENDING, Catalog, Job, JobStatus
from rawexport.export.keys import SCRATCH, export_prefix
from rawexport.metrics import Metrics
from rawexport.periodic import Periodic
from rawexport.schema import DATA_TYPE_NAMES
from rawexport.store import EventStore
from rawexport.timeutil import DAY_MS, now_ms

log = logging.getLogger("rawexport.retention")


@dataclass
class SweepReport:
    expired_hours: int = 0
    deleted_files: int = 0
    deleted_jobs: int = 0
    superseded_revisions: int = 0
    expired_links: int = 0
    dead_auth_codes: int = 0
    orphan_files: int = 0
    store_hours: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def _delete_blobs(blobs: BlobStore, keys: list[str], report: SweepReport) -> bool:
    ok = True
    for key in keys:
        try:
            blobs.delete(key)
            report.deleted_files += 1
        except OSError as e:
            report.errors.append(f"{key}: {e}")
            ok = False
    return ok


def _keys_of(catalog: Catalog, job_ids: list[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for job_id, rows in catalog.files_of(job_ids).items():
        out[job_id] = [f.key for f in rows]
    for job_id, manifest in catalog.manifest_keys(job_ids).items():
        out.setdefault(job_id, []).append(manifest)
    return out


def _prefix(ai: str, job: Job) -> str:
    """Where the job's attempts wrote (a job that never committed has no prefix row)."""
    return job.prefix or export_prefix(ai, job.version, job.data_type, job.hour_ms, job.revision)


def _drop_strays(
    catalog: Catalog,
    blobs: BlobStore,
    ai: str,
    job: Job,
    keep_ids: set[int],
    before_ms: int,
    report: SweepReport,
) -> None:
    """Delete the files under the job's prefix that no job of keep_ids names, once older
    than before_ms: the parts of attempts that lost their lease or failed (and of a dropped
    revision). Two revisions of an hour may share a prefix (4 hex digits); one still running
    there may be writing, so such a prefix waits."""
    prefix = _prefix(ai, job)
    slot = catalog.slot_jobs(job)
    if any(j.status in PENDING and _prefix(ai, j) == prefix for j in slot):
        return
    kept = [j.id for j in slot if j.id in keep_ids]
    named = {k for keys in _keys_of(catalog, kept).values() for k in keys} if kept else set()
    stray = [
        b.key for b in blobs.list(f"{prefix}/") if b.key not in named and b.mtime_ms <= before_ms
    ]
    if stray and _delete_blobs(blobs, stray, report):
        report.orphan_files += len(stray)
        log.info("deleted %d orphan files under %s", len(stray), prefix)


def _drop_orphans(
    catalog: Catalog,
    blobs: BlobStore,
    ai: str,
    project_id: int,
    before_ms: int,
    report: SweepReport,
) -> None:
    """Orphans of finished or failed jobs in which some attempt did not commit (a job
    retried or taken over after a lost lease, or one that ended in ERROR)."""
    for job in catalog.retried_or_failed_jobs(project_id):
        keep = {j.id for j in catalog.slot_jobs(job) if j.status == JobStatus.FINISHED}
        _drop_strays(catalog, blobs, ai, job, keep, before_ms, report)


def sweep(
    catalog: Catalog, store: EventStore, blobs: BlobStore, now: int, *, orphan_age_ms: int
) -> SweepReport:
    """One pass. Files go before their catalog rows, so a crash leaves rows to retry with.

    orphan_age_ms (the lease) is how old a file no committed row names must be before it
    goes: an attempt that lost its lease may still be writing it.
    """
    report = SweepReport()
    pending_prefixes: set[str] = set()
    for project in catalog.projects():
        # Hours whose retention has ended: now >= hour + retention (the API's rule).
        cutoff = now - project.retention_days * DAY_MS
        rows = catalog.jobs_through(project.id, cutoff)
        old = [job_id for job_id, _ in rows]
        report.expired_hours += len({hour for _, hour in rows})
        if old:
            keys = _keys_of(catalog, old)
            done = [j for j in old if _delete_blobs(blobs, keys.get(j, []), report)]
            for job_id in done:  # and what failed attempts left under the prefix
                _drop_strays(catalog, blobs, project.ai, catalog.job(job_id), set(), now, report)
            catalog.delete_jobs(done)
            report.deleted_jobs += len(done)
        for data_type in DATA_TYPE_NAMES:
            for hour in store.hours(project.ai, data_type):
                if hour <= cutoff:
                    store.delete_hour(project.ai, data_type, hour)
                    report.store_hours += 1
        before = now - orphan_age_ms
        report.superseded_revisions += _drop_superseded(
            catalog, blobs, project.ai, project.id, now, before, report
        )
        _drop_orphans(catalog, blobs, project.ai, project.id, before, report)
        pending_prefixes |= _pending_prefixes(catalog, project.ai, project.id)
    _drop_scratch(blobs, pending_prefixes, now - orphan_age_ms, report)
    report.expired_links = catalog.delete_expired_links(now)
    report.dead_auth_codes = catalog.delete_dead_auth_codes(now)
    return report


def _pending_prefixes(catalog: Catalog, ai: str, project_id: int) -> set[str]:
    return {_prefix(ai, job) for job in catalog.pending_jobs(project_id)}


def _drop_scratch(
    blobs: BlobStore, pending_prefixes: set[str], before_ms: int, report: SweepReport
) -> None:
    """Scratch objects of Dask exports (`_work/{prefix}/...`) whose coordinator died: those
    older than before_ms of prefixes no queued or running job writes."""
    stray = [
        b.key
        for b in blobs.list(f"{SCRATCH}/")
        if b.mtime_ms <= before_ms and b.key.split("/")[1] not in pending_prefixes
    ]
    if stray and _delete_blobs(blobs, stray, report):
        report.orphan_files += len(stray)
        log.info("deleted %d scratch files of interrupted exports", len(stray))


def _drop_superseded(
    catalog: Catalog,
    blobs: BlobStore,
    ai: str,
    project_id: int,
    now: int,
    before_ms: int,
    report: SweepReport,
) -> int:
    """Delete the files of finished revisions that a newer finished revision replaced, once
    no unexpired issued link points into them (a link handed out stays valid to its end)."""
    newest: set[tuple[str, str, int]] = set()
    stale: list[tuple[int, str]] = []
    for job_id, version, data_type, hour_ms, prefix in catalog.finished_revisions(project_id):
        slot = (version, data_type, hour_ms)
        if slot in newest:
            stale.append((job_id, prefix))
        else:
            newest.add(slot)
    dropped = 0
    for job_id, prefix in stale:
        if not prefix or catalog.links_point_into(project_id, prefix, now):
            continue
        keys = _keys_of(catalog, [job_id]).get(job_id, [])
        if _delete_blobs(blobs, keys, report):
            job = catalog.job(job_id)
            keep = {
                j.id
                for j in catalog.slot_jobs(job)
                if j.status == JobStatus.FINISHED and j.id != job_id
            }
            _drop_strays(catalog, blobs, ai, job, keep, before_ms, report)
            catalog.supersede(job_id)
            dropped += 1
    return dropped


class Sweeper:
    """Runs sweep() every interval seconds in a thread."""

    def __init__(
        self,
        catalog: Catalog,
        store: EventStore,
        blobs: BlobStore,
        interval: float,
        orphan_age_ms: int,
        clock: Callable[[], int] = now_ms,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics
        self.catalog, self.store, self.blobs = catalog, store, blobs
        self.interval, self.orphan_age_ms, self.clock = interval, orphan_age_ms, clock
        self.loop = Periodic(
            "retention-sweeper",
            self.tick,
            interval,
            first_wait=True,
            on_error=None if metrics is None else metrics.failed("sweeper"),
        )

    def tick(self) -> None:
        report = sweep(
            self.catalog, self.store, self.blobs, self.clock(), orphan_age_ms=self.orphan_age_ms
        )
        if (
            report.deleted_jobs
            or report.superseded_revisions
            or report.store_hours
            or report.orphan_files
        ):
            log.info("retention sweep: %s", report.as_dict())

    def start(self) -> None:
        self.loop.start()

    def stop(self) -> None:
        self.loop.stop(10)
