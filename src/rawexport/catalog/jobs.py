"""The catalog's job half: export jobs and their revisions, leases, files, issued links.

Catalog (catalog.py) adds projects and credentials on top; both share one engine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from rawexport.catalog.tables import (
    export_files,
    export_jobs,
)
from rawexport.errors import LeaseLost, RawexportError, TransientError
from rawexport.types import ExportResult, JobStatus


class CatalogError(RawexportError):
    """A catalog operation that cannot be done; the message says why (the CLI and the
    console show it as is)."""


class CatalogBusy(CatalogError, TransientError):
    """Writers raced for the same row too many times in a row; try again later."""

    backend = "the catalog"


@dataclass(frozen=True)
class Job:
    id: int
    project_id: int
    version: str
    data_type: str
    hour_ms: int
    revision: int
    preview: bool
    status: str
    attempts: int
    next_attempt_ms: int
    lease_owner: str | None
    lease_expires_ms: int | None
    rows: int | None
    bytes: int | None
    prefix: str | None
    manifest_key: str | None
    error: str | None
    created_ms: int
    started_ms: int | None
    finished_ms: int | None


ERROR_CHARS = 4000  # the most of a failure's message a job keeps
UNFINISHED = (
    "stopped after {n} attempts, the last without a result (its worker was killed, for "
    "instance out of memory, or lost its lease)"
)


def _held(job: Job, owner: str) -> tuple[ColumnElement[bool], ...]:
    """The job is running under this owner's lease, in the attempt this claim started.

    The attempt count is the fencing token: a claim increments it, so an owner whose lease
    was taken (even by itself, later) no longer matches.
    """
    return (
        export_jobs.c.id == job.id,
        export_jobs.c.status == JobStatus.RUNNING,
        export_jobs.c.lease_owner == owner,
        export_jobs.c.attempts == job.attempts,
    )


def _runnable(now: int, due_only: bool) -> ColumnElement[bool]:
    """Queued or retrying (and due, unless due_only is False), or running on a lost lease."""
    waiting: ColumnElement[bool] = export_jobs.c.status.in_((JobStatus.QUEUED, JobStatus.RETRYING))
    if due_only:
        waiting = waiting & (export_jobs.c.next_attempt_ms <= now)
    lost = (export_jobs.c.status == JobStatus.RUNNING) & (export_jobs.c.lease_expires_ms < now)
    return waiting | lost


def _pk(result: CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


class JobStore:
    """Export jobs, their committed files and the links issued for them."""

    engine: Engine

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    # ---- export jobs -----------------------------------------------------------------

    def plan(
        self,
        project_id: int,
        version: str,
        data_types: Iterable[str],
        hours: Iterable[int],
        now: int,
    ) -> int:
        """Queue revision 1 of each (type, hour) that has no job yet; returns how many."""
        types, hour_list = list(data_types), sorted(hours)
        if not types or not hour_list:
            return 0
        with self.tx() as c:
            have = {
                (str(t), int(h))
                for t, h in c.execute(
                    select(export_jobs.c.data_type, export_jobs.c.hour_ms)
                    .where(
                        export_jobs.c.project_id == project_id,
                        export_jobs.c.version == version,
                        export_jobs.c.hour_ms >= hour_list[0],
                        export_jobs.c.hour_ms <= hour_list[-1],
                    )
                    .distinct()
                )
            }
            missing = [
                self._new_job(project_id, version, t, h, 1, False, now)
                for h in hour_list
                for t in types
                if (t, h) not in have
            ]
            if missing:
                c.execute(insert(export_jobs), missing)
        return len(missing)

    @staticmethod
    def _new_job(
        project_id: int,
        version: str,
        data_type: str,
        hour_ms: int,
        revision: int,
        preview: bool,
        now: int,
    ) -> dict[str, Any]:
        return {
            "project_id": project_id,
            "version": version,
            "data_type": data_type,
            "hour_ms": hour_ms,
            "revision": revision,
            "preview": preview,
            "status": JobStatus.QUEUED,
            "attempts": 0,
            "next_attempt_ms": now,
            "created_ms": now,
        }

    def new_revision(
        self,
        project_id: int,
        version: str,
        data_type: str,
        hour_ms: int,
        *,
        preview: bool,
        now: int,
    ) -> Job:
        """Queue a new revision of (type, hour): a re-export, backfill or preview."""
        for _ in range(5):
            try:
                with self.tx() as c:
                    top = c.execute(
                        select(func.max(export_jobs.c.revision)).where(
                            export_jobs.c.project_id == project_id,
                            export_jobs.c.version == version,
                            export_jobs.c.data_type == data_type,
                            export_jobs.c.hour_ms == hour_ms,
                        )
                    ).scalar()
                    values = self._new_job(
                        project_id, version, data_type, hour_ms, int(top or 0) + 1, preview, now
                    )
                    job_id = _pk(c.execute(insert(export_jobs).values(**values)))
                return self.job(int(job_id))
            except IntegrityError:
                continue
        raise CatalogBusy("could not allocate a revision number")

    def job(self, job_id: int) -> Job:
        with self.tx() as c:
            row = c.execute(select(export_jobs).where(export_jobs.c.id == job_id)).one()
        return Job(**row._asdict())

    def jobs(
        self,
        project_id: int | None = None,
        status: str | None = None,
        since_hour_ms: int | None = None,
        limit: int = 1000,
    ) -> list[Job]:
        q = select(export_jobs)
        if project_id is not None:
            q = q.where(export_jobs.c.project_id == project_id)
        if status is not None:
            q = q.where(export_jobs.c.status == status)
        if since_hour_ms is not None:
            q = q.where(export_jobs.c.hour_ms >= since_hour_ms)
        q = q.order_by(export_jobs.c.hour_ms, export_jobs.c.data_type, export_jobs.c.revision)
        with self.tx() as c:
            rows = c.execute(q.limit(limit)).all()
        return [Job(**r._asdict()) for r in rows]

    def claim(
        self, owner: str, now: int, lease_ms: int, max_attempts: int | None = None
    ) -> Job | None:
        """Take the next runnable job (queued, due retry, or lost lease) under a lease.

        Fair across projects: the project with the fewest running jobs goes first (then the
        one waiting longest), so one huge project or backfill cannot starve the others.

        max_attempts: a job that has had that many attempts is not taken again but ends in
        ERROR (see `_lease`): an attempt that dies without recording its failure (its
        process killed, say out of memory; its lease lost) counts, so such a job ends.
        """
        runnable = _runnable(now, due_only=True)
        with self.tx() as c:
            waiting = c.execute(
                select(export_jobs.c.project_id, func.min(export_jobs.c.next_attempt_ms))
                .where(runnable)
                .group_by(export_jobs.c.project_id)
            ).all()
            running = {
                int(pid): int(n)
                for pid, n in c.execute(
                    select(export_jobs.c.project_id, func.count())
                    .where(
                        export_jobs.c.status == JobStatus.RUNNING,
                        export_jobs.c.lease_expires_ms >= now,
                    )
                    .group_by(export_jobs.c.project_id)
                )
            }
        order = sorted(waiting, key=lambda r: (running.get(int(r[0]), 0), int(r[1]), int(r[0])))
        for project_id, _ in order[:8]:
            job = self._take_next(int(project_id), runnable, owner, now, lease_ms, max_attempts)
            if job is not None:
                return job
        return None

    def _take_next(
        self,
        project_id: int,
        runnable: ColumnElement[bool],
        owner: str,
        now: int,
        lease_ms: int,
        max_attempts: int | None,
    ) -> Job | None:
        """Lease the project's next runnable job, in one transaction.

        PostgreSQL: the candidates are locked `FOR UPDATE SKIP LOCKED`, so claimers on other
        nodes skip them instead of waiting. SQLite has no row locks (the clause is dropped)
        and serializes writers; the conditional update leaves one winner either way.
        """
        with self.tx() as c:
            candidates = (
                c.execute(
                    select(export_jobs.c.id)
                    .where(runnable, export_jobs.c.project_id == project_id)
                    .order_by(
                        export_jobs.c.next_attempt_ms, export_jobs.c.hour_ms, export_jobs.c.id
                    )
                    .limit(4)
                    .with_for_update(skip_locked=True)
                )
                .scalars()
                .all()
            )
            for job_id in candidates:
                job = self._lease(c, job_id, runnable, owner, now, lease_ms, max_attempts)
                if job is not None:
                    return job
        return None

    def claim_id(
        self, job_id: int, owner: str, now: int, lease_ms: int, max_attempts: int | None = None
    ) -> Job | None:
        """Take one given job if it is runnable now, due or not (CLI `export run`)."""
        runnable = _runnable(now, due_only=False)
        with self.tx() as c:  # a conditional update: one winner
            return self._lease(c, job_id, runnable, owner, now, lease_ms, max_attempts)

    @staticmethod
    def _lease(
        c: Connection,
        job_id: int,
        runnable: ColumnElement[bool],
        owner: str,
        now: int,
        lease_ms: int,
        max_attempts: int | None,
    ) -> Job | None:
        """The claimed job, read in the claim's transaction (so its attempt is this claim's).

        A runnable job that had max_attempts attempts already ends in ERROR instead: a
        failed attempt records itself (`fail`) and stops retrying at max_attempts, so this
        is a job whose attempts died unrecorded (the process killed, the lease lost); its
        error says so, then gives the last failure an attempt did record."""
        if max_attempts is not None:
            spent = export_jobs.c.attempts >= max_attempts
            ended = c.execute(
                update(export_jobs)
                .where(export_jobs.c.id == job_id, runnable, spent)
                .values(
                    status=JobStatus.ERROR,
                    error=func.substr(
                        UNFINISHED.format(n=max_attempts)
                        + func.coalesce("; the last failure recorded: " + export_jobs.c.error, ""),
                        1,
                        ERROR_CHARS,
                    ),
                    finished_ms=now,
                    lease_owner=None,
                    lease_expires_ms=None,
                )
            )
            if ended.rowcount:
                return None
        res = c.execute(
            update(export_jobs)
            .where(export_jobs.c.id == job_id, runnable)
            .values(
                status=JobStatus.RUNNING,
                attempts=export_jobs.c.attempts + 1,
                lease_owner=owner,
                lease_expires_ms=now + lease_ms,
                started_ms=now,
            )
        )
        if res.rowcount != 1:
            return None
        row = c.execute(select(export_jobs).where(export_jobs.c.id == job_id)).one()
        return Job(**row._asdict())

    def renew_lease(self, job: Job, owner: str, now: int, lease_ms: int) -> bool:
        with self.tx() as c:
            res = c.execute(
                update(export_jobs)
                .where(*_held(job, owner))
                .values(lease_expires_ms=now + lease_ms)
            )
            return res.rowcount == 1

    def complete(
        self,
        job: Job,
        owner: str,
        result: ExportResult,
        now: int,
        *,
        publish: Callable[[], None] | None = None,
    ) -> None:
        """Commit a revision: its files and FINISHED status, in one transaction.

        Only the attempt that still holds the lease commits (LeaseLost otherwise). publish
        (writing the manifest) runs inside the transaction, after the fenced update: the
        job's row is locked meanwhile (SQLite: the database's write lock), so no other
        attempt can claim the job while it runs, and an error in it rolls the commit back.
        """
        job_id = job.id
        with self.tx() as c:
            res = c.execute(
                update(export_jobs)
                .where(*_held(job, owner))
                .values(
                    status=JobStatus.FINISHED,
                    rows=result.rows,
                    bytes=result.bytes,
                    prefix=result.prefix,
                    manifest_key=result.manifest_key,
                    error=None,
                    finished_ms=now,
                    lease_owner=None,
                    lease_expires_ms=None,
                )
            )
            if res.rowcount != 1:
                raise LeaseLost(f"job {job_id} is no longer held by {owner}")
            c.execute(export_files.delete().where(export_files.c.job_id == job_id))
            if result.files:
                c.execute(
                    insert(export_files),
                    [
                        {
                            "job_id": job_id,
                            "part": f.part,
                            "key": f.key,
                            "rows": f.rows,
                            "bytes": f.bytes,
                            "md5": f.md5,
                            "sha256": f.sha256,
                        }
                        for f in result.files
                    ],
                )
            if publish is not None:
                publish()

    def fail(self, job: Job, owner: str, error: str, *, retry_at: int | None, now: int) -> str:
        """Record a failed attempt: `retrying` until retry_at, or `error` when None."""
        status = JobStatus.ERROR if retry_at is None else JobStatus.RETRYING
        values: dict[str, Any] = {
            "status": status,
            "error": error[:ERROR_CHARS],
            "lease_owner": None,
            "lease_expires_ms": None,
        }
        if retry_at is not None:
            values["next_attempt_ms"] = retry_at
        else:
            values["finished_ms"] = now
        with self.tx() as c:
            res = c.execute(update(export_jobs).where(*_held(job, owner)).values(**values))
            if res.rowcount != 1:
                raise LeaseLost(f"job {job.id} is no longer held by {owner}")
        return status

    def hour_jobs(
        self, project_id: int, version: str, start_ms: int, end_ms: int
    ) -> dict[tuple[str, int], list[Job]]:
        """Every non-preview job of hours in [start, end), by (type, hour), newest first."""
        with self.tx() as c:
            rows = c.execute(
                select(export_jobs)
                .where(
                    export_jobs.c.project_id == project_id,
                    export_jobs.c.version == version,
                    export_jobs.c.hour_ms >= start_ms,
                    export_jobs.c.hour_ms < end_ms,
                    export_jobs.c.preview.is_(False),
                )
                .order_by(export_jobs.c.revision.desc())
            ).all()
        out: dict[tuple[str, int], list[Job]] = {}
        for r in rows:
            job = Job(**r._asdict())
            out.setdefault((job.data_type, job.hour_ms), []).append(job)
        return out
