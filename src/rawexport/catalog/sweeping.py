"""The catalog's queries for the sweeper (export/retention.py): jobs past retention, the
revisions of an hour, superseded and failed ones, the links that still point into a prefix.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sqlalchemy import ColumnElement, Engine, and_, delete, select

from rawexport.catalog.jobs import Job
from rawexport.catalog.tables import export_files, export_jobs, issued_links
from rawexport.types import PENDING, JobStatus


class SweepStore:
    """What the sweeper reads and deletes; mixed into Catalog."""

    engine: Engine

    def manifest_keys(self, job_ids: Iterable[int]) -> dict[int, str]:
        """The manifest key of each of these jobs that wrote one."""
        ids = list(job_ids)
        with self.engine.begin() as c:
            rows = c.execute(
                select(export_jobs.c.id, export_jobs.c.manifest_key).where(
                    export_jobs.c.id.in_(ids)
                )
            ).all()
        return {int(job_id): str(key) for job_id, key in rows if key}

    def slot_jobs(self, job: Job) -> list[Job]:
        """Every job (revision) of the job's (project, version, type, hour)."""
        return self._jobs(
            export_jobs.c.project_id == job.project_id,
            export_jobs.c.version == job.version,
            export_jobs.c.data_type == job.data_type,
            export_jobs.c.hour_ms == job.hour_ms,
        )

    def retried_or_failed_jobs(self, project_id: int) -> list[Job]:
        """Jobs that ended in ERROR, or finished after more than one attempt: those whose
        failed attempts may have left files no row names."""
        return self._jobs(
            export_jobs.c.project_id == project_id,
            (export_jobs.c.status == JobStatus.ERROR)
            | ((export_jobs.c.status == JobStatus.FINISHED) & (export_jobs.c.attempts > 1)),
        )

    def pending_jobs(self, project_id: int) -> list[Job]:
        """The project's queued, running and retrying jobs."""
        return self._jobs(export_jobs.c.project_id == project_id, export_jobs.c.status.in_(PENDING))

    def _jobs(self, *where: ColumnElement[bool]) -> list[Job]:
        with self.engine.begin() as c:
            rows = c.execute(select(export_jobs).where(*where)).all()
        return [Job(**r._asdict()) for r in rows]

    def jobs_through(self, project_id: int, last_hour_ms: int) -> list[tuple[int, int]]:
        """(job id, hour) of the project's jobs of hours up to last_hour_ms."""
        with self.engine.begin() as c:
            rows = c.execute(
                select(export_jobs.c.id, export_jobs.c.hour_ms).where(
                    export_jobs.c.project_id == project_id,
                    export_jobs.c.hour_ms <= last_hour_ms,
                )
            ).all()
        return [(int(job_id), int(hour)) for job_id, hour in rows]

    def delete_jobs(self, job_ids: list[int]) -> None:
        """These jobs and their file rows (their files are gone)."""
        with self.engine.begin() as c:
            c.execute(delete(export_files).where(export_files.c.job_id.in_(job_ids)))
            c.execute(delete(export_jobs).where(export_jobs.c.id.in_(job_ids)))

    def delete_expired_links(self, now: int) -> int:
        with self.engine.begin() as c:
            return int(
                c.execute(delete(issued_links).where(issued_links.c.expires_ms <= now)).rowcount
            )

    def finished_revisions(self, project_id: int) -> Iterator[tuple[int, str, str, int, str]]:
        """(job id, version, type, hour, prefix) of the project's finished exports (no
        previews), the newest revision of each hour first."""
        with self.engine.begin() as c:
            rows = c.execute(
                select(
                    export_jobs.c.id,
                    export_jobs.c.version,
                    export_jobs.c.data_type,
                    export_jobs.c.hour_ms,
                    export_jobs.c.prefix,
                )
                .where(
                    export_jobs.c.project_id == project_id,
                    export_jobs.c.status == JobStatus.FINISHED,
                    export_jobs.c.preview.is_(False),
                )
                .order_by(export_jobs.c.revision.desc())
            ).all()
        for job_id, version, data_type, hour_ms, prefix in rows:
            yield int(job_id), str(version), str(data_type), int(hour_ms), str(prefix or "")

    def links_point_into(self, project_id: int, prefix: str, now: int) -> bool:
        """Whether an unexpired link issued for the project points into that prefix."""
        with self.engine.begin() as c:
            hit = c.execute(
                select(issued_links.c.id)
                .where(
                    and_(
                        issued_links.c.project_id == project_id,
                        issued_links.c.expires_ms > now,
                        issued_links.c.links.contains(f"/{prefix}/", autoescape=True),
                    )
                )
                .limit(1)
            ).first()
        return hit is not None

    def supersede(self, job_id: int) -> None:
        """A finished revision whose files are deleted: no file rows, status superseded."""
        with self.engine.begin() as c:
            c.execute(delete(export_files).where(export_files.c.job_id == job_id))
            c.execute(
                export_jobs.update()
                .where(export_jobs.c.id == job_id)
                .values(status=JobStatus.SUPERSEDED)
            )
