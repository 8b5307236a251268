"""Operator actions: export hours now, export them again (rerun, backfill), drain the queue.

The CLI, the demo and the console call these, so every action takes one path.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rawexport.catalog import Catalog, Job, JobStatus, Project
from rawexport.errors import UserError
from rawexport.export.scheduler import versions
from rawexport.export.worker import Exporter, owner_id
from rawexport.schema import DATA_TYPES, V1_TYPES, types_for
from rawexport.timeutil import HOUR_MS, beijing_hour_label, hour_floor


class OpsError(UserError):
    """A user mistake in an operator command; the message is shown as is."""


@dataclass(frozen=True)
class Target:
    version: str
    data_type: str


def targets(project: Project, data_type: str | None) -> list[Target]:
    """The (version, type) pairs an export of `data_type` (or of all types) covers."""
    if data_type is None:
        return [Target(v, t) for v in versions(project) for t in types_for(v)]
    if data_type not in DATA_TYPES:
        raise OpsError(f"unknown data type {data_type!r}; one of {', '.join(DATA_TYPES)}")
    out = [Target("v2", data_type)]
    if project.v1_enabled:
        out += [Target("v1", n) for n, t in V1_TYPES.items() if t.source == data_type]
    return out


def export_now(
    exporter: Exporter, project: Project, hours: list[int], data_type: str | None, now: int
) -> list[dict[str, Any]]:
    """Export these hours synchronously.

    A closed hour runs its pending job (planning it first); an already exported hour is
    left as it is; a failed one gets a new revision. The open hour gets a preview revision,
    which the API does not link: it keeps answering RUNNING until the hour closes.
    """
    catalog = exporter.catalog
    owner = owner_id()
    report: list[dict[str, Any]] = []
    current = hour_floor(now)
    for hour in hours:
        if hour > current:
            raise OpsError(f"hour {beijing_hour_label(hour)} is in the future")
        for target in targets(project, data_type):
            if hour == current:
                job = catalog.new_revision(
                    project.id, target.version, target.data_type, hour, preview=True, now=now
                )
            else:
                catalog.plan(project.id, target.version, [target.data_type], [hour], now)
                jobs = catalog.hour_jobs(project.id, target.version, hour, hour + 1)
                job = jobs[(target.data_type, hour)][0]
                if job.status == JobStatus.ERROR:
                    job = catalog.new_revision(
                        project.id, target.version, target.data_type, hour, preview=False, now=now
                    )
            if job.status != JobStatus.FINISHED:
                exporter.run_job_now(job.id, owner)
            report.append(job_row(catalog.job(job.id)))
    return report


def job_row(job: Job) -> dict[str, Any]:
    """The JSON shape the CLI prints for a job."""
    return {
        "id": job.id,
        "hour": beijing_hour_label(job.hour_ms),
        "version": job.version,
        "data_type": job.data_type,
        "revision": job.revision,
        "preview": job.preview,
        "status": job.status,
        "attempts": job.attempts,
        "rows": job.rows,
        "bytes": job.bytes,
        "error": job.error,
    }


def day_hours(day_start_ms: int) -> list[int]:
    """The 24 hours of the Beijing day starting at day_start_ms (a rerun of a day)."""
    return list(range(day_start_ms, day_start_ms + 24 * HOUR_MS, HOUR_MS))


def backfill_hours(first_ms: int, last_ms: int) -> list[int]:
    """The hours first..last (both included) of a backfill, at most 366 days of them."""
    if last_ms < first_ms:
        raise OpsError("--to is before --from")
    if (last_ms - first_ms) // HOUR_MS >= 24 * 366:
        raise OpsError("a backfill covers at most 366 days")
    return list(range(first_ms, last_ms + 1, HOUR_MS))


def _new_revisions(
    catalog: Catalog, project: Project, hours: list[int], data_type: str | None, now: int
) -> Iterator[Job]:
    """Queue a new revision of each closed hour and target, yielding each once queued."""
    current = hour_floor(now)
    if any(h >= current for h in hours):
        raise OpsError("only closed hours can be exported again; the open hour is still running")
    chosen = targets(project, data_type)
    for hour in hours:
        for target in chosen:
            yield catalog.new_revision(
                project.id, target.version, target.data_type, hour, preview=False, now=now
            )


def reexport(
    exporter: Exporter,
    project: Project,
    hours: list[int],
    data_type: str | None,
    now: int,
    *,
    wait: bool = True,
) -> list[dict[str, Any]]:
    """A new revision of each closed hour (rerun and backfill share this path).

    The API keeps linking the previous revision until the new one has committed. With
    wait=False the revisions are only queued, for the workers of `rawexport serve`.
    """
    if not wait:
        return queue_reexport(exporter.catalog, project, hours, data_type, now)
    owner = owner_id()
    report: list[dict[str, Any]] = []
    for job in _new_revisions(exporter.catalog, project, hours, data_type, now):
        exporter.run_job_now(job.id, owner)
        report.append(job_row(exporter.catalog.job(job.id)))
    return report


def queue_reexport(
    catalog: Catalog, project: Project, hours: list[int], data_type: str | None, now: int
) -> list[dict[str, Any]]:
    """reexport(wait=False): queue the new revisions for `serve`'s workers (`--queue`, the
    console's rerun and backfill)."""
    return [job_row(job) for job in _new_revisions(catalog, project, hours, data_type, now)]


def drain_parallel(exporter: Exporter, workers: int) -> int:
    """Run every runnable job with `workers` threads; returns how many ran."""
    counts = [0] * workers

    def work(i: int) -> None:
        counts[i] = exporter.drain(owner_id())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts)
