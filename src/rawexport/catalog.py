"""The catalog: projects, credentials, export jobs and their files, issued links.

SQLite (WAL) is the embedded default; PostgreSQL is chosen by URL. Every write that must
be all-or-nothing (committing an export revision) runs in one transaction.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import string
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from rawexport.tables import (
    api_tokens,
    auth_codes,
    export_files,
    export_jobs,
    issued_links,
    key_pairs,
    meta,
    projects,
)
from rawexport.timeutil import DAY_MS, now_ms
from rawexport.types import ExportResult, PartInfo

ALNUM = string.ascii_letters + string.digits


def random_alnum(n: int) -> str:
    return "".join(secrets.choice(ALNUM) for _ in range(n))


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class CatalogError(Exception):
    """A catalog operation that cannot be done; the message says why."""


class LeaseLost(CatalogError):
    """The job's lease expired and another worker may own it now."""


@dataclass(frozen=True)
class Project:
    id: int
    ai: str
    uid: str
    name: str
    export_enabled: bool
    export_since_ms: int | None
    retention_days: int
    v1_enabled: bool
    created_ms: int

    def public(self) -> dict[str, Any]:
        return {
            "ai": self.ai,
            "uid": self.uid,
            "name": self.name,
            "export_enabled": self.export_enabled,
            "export_since_ms": self.export_since_ms,
            "retention_days": self.retention_days,
            "v1_enabled": self.v1_enabled,
        }


@dataclass(frozen=True)
class KeyPair:
    id: int
    project_id: int
    public_key: str
    private_key: str


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


FileRow = PartInfo  # a committed part, as the catalog lists it


PENDING = ("queued", "running", "retrying")


def _held(job_id: int, owner: str) -> tuple[ColumnElement[bool], ...]:
    """The job is running under this owner's lease."""
    return (
        export_jobs.c.id == job_id,
        export_jobs.c.status == "running",
        export_jobs.c.lease_owner == owner,
    )


def _runnable(now: int, due_only: bool) -> ColumnElement[bool]:
    """Queued or retrying (and due, unless due_only is False), or running on a lost lease."""
    waiting: ColumnElement[bool] = export_jobs.c.status.in_(("queued", "retrying"))
    if due_only:
        waiting = waiting & (export_jobs.c.next_attempt_ms <= now)
    lost = (export_jobs.c.status == "running") & (export_jobs.c.lease_expires_ms < now)
    return waiting | lost


def _pk(result: CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def migrate(engine: Engine) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", "rawexport:migrations")
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Catalog:
    def __init__(self, url: str, *, run_migrations: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url)
        if run_migrations:
            migrate(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    # ---- meta ------------------------------------------------------------------------

    def secret(self, name: str) -> str:
        """A server-wide secret (created once, shared by every node using this catalog)."""
        with self.tx() as c:
            row = c.execute(select(meta.c.value).where(meta.c.key == name)).first()
            if row:
                return str(row[0])
        value = secrets.token_hex(32)
        try:
            with self.tx() as c:
                c.execute(insert(meta).values(key=name, value=value))
            return value
        except IntegrityError:
            with self.tx() as c:
                return str(c.execute(select(meta.c.value).where(meta.c.key == name)).scalar_one())

    # ---- projects --------------------------------------------------------------------

    def create_project(
        self,
        name: str,
        *,
        ai: str | None = None,
        uid: str | None = None,
        export_enabled: bool = True,
        export_since_ms: int | None = None,
        retention_days: int = 15,
        v1_enabled: bool = True,
    ) -> Project:
        now = now_ms()
        values = {
            "ai": ai or secrets.token_hex(8),
            "uid": uid or random_alnum(8),
            "name": name,
            "export_enabled": export_enabled,
            "export_since_ms": (now if export_since_ms is None else export_since_ms)
            if export_enabled
            else None,
            "retention_days": retention_days,
            "v1_enabled": v1_enabled,
            "created_ms": now,
        }
        try:
            with self.tx() as c:
                c.execute(insert(projects).values(**values))
        except IntegrityError:
            raise CatalogError(f"a project with ai {values['ai']} or uid exists") from None
        project = self.project(str(values["ai"]))
        assert project is not None
        return project

    def project(self, ai: str) -> Project | None:
        with self.tx() as c:
            row = c.execute(select(projects).where(projects.c.ai == ai)).first()
        return Project(**row._asdict()) if row else None

    def project_by_id(self, project_id: int) -> Project:
        with self.tx() as c:
            row = c.execute(select(projects).where(projects.c.id == project_id)).one()
        return Project(**row._asdict())

    def projects(self) -> list[Project]:
        with self.tx() as c:
            rows = c.execute(select(projects).order_by(projects.c.id)).all()
        return [Project(**r._asdict()) for r in rows]

    def set_export(self, ai: str, enabled: bool, since_ms: int | None = None) -> Project:
        project = self.project(ai)
        if project is None:
            raise CatalogError(f"no project {ai}")
        values: dict[str, Any] = {"export_enabled": enabled}
        if enabled and (since_ms is not None or project.export_since_ms is None):
            values["export_since_ms"] = now_ms() if since_ms is None else since_ms
        with self.tx() as c:
            c.execute(update(projects).where(projects.c.id == project.id).values(**values))
        result = self.project(ai)
        assert result is not None
        return result

    # ---- credentials -----------------------------------------------------------------

    def create_key_pair(self, project_id: int) -> KeyPair:
        public, private = random_alnum(32), random_alnum(32)
        with self.tx() as c:
            res = c.execute(
                insert(key_pairs).values(
                    project_id=project_id,
                    public_key=public,
                    private_key=private,
                    created_ms=now_ms(),
                    revoked=False,
                )
            )
            key_id = _pk(res)
        return KeyPair(key_id, project_id, public, private)

    def key_pair(self, public_key: str) -> KeyPair | None:
        with self.tx() as c:
            row = c.execute(
                select(key_pairs).where(
                    key_pairs.c.public_key == public_key, key_pairs.c.revoked.is_(False)
                )
            ).first()
        if row is None:
            return None
        return KeyPair(row.id, row.project_id, row.public_key, row.private_key)

    def create_api_token(self, project_id: int, description: str = "") -> str:
        token = random_alnum(48)
        with self.tx() as c:
            c.execute(
                insert(api_tokens).values(
                    project_id=project_id,
                    token_sha256=sha256_hex(token),
                    display=f"{token[:5]}*{token[-5:]}",
                    description=description,
                    created_ms=now_ms(),
                    revoked=False,
                )
            )
        return token

    def project_for_token(self, token: str) -> int | None:
        with self.tx() as c:
            row = c.execute(
                select(api_tokens.c.project_id).where(
                    api_tokens.c.token_sha256 == sha256_hex(token),
                    api_tokens.c.revoked.is_(False),
                )
            ).first()
        return int(row[0]) if row else None

    def issue_auth_code(self, key_pair_id: int, *, days: int, strict: bool) -> str:
        code = random_alnum(64)
        now = now_ms()
        with self.tx() as c:
            if strict:
                c.execute(
                    update(auth_codes)
                    .where(auth_codes.c.key_pair_id == key_pair_id)
                    .values(revoked=True)
                )
            c.execute(
                insert(auth_codes).values(
                    key_pair_id=key_pair_id,
                    code_sha256=sha256_hex(code),
                    created_ms=now,
                    expires_ms=now + days * DAY_MS,
                    revoked=False,
                )
            )
        return code

    def auth_code_key(self, code: str, now: int) -> KeyPair | None:
        """The key pair an unexpired, unrevoked auth code was issued to."""
        with self.tx() as c:
            row = c.execute(
                select(key_pairs)
                .join(auth_codes, auth_codes.c.key_pair_id == key_pairs.c.id)
                .where(
                    auth_codes.c.code_sha256 == sha256_hex(code),
                    auth_codes.c.revoked.is_(False),
                    auth_codes.c.expires_ms > now,
                    key_pairs.c.revoked.is_(False),
                )
            ).first()
        if row is None:
            return None
        return KeyPair(row.id, row.project_id, row.public_key, row.private_key)

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
            "status": "queued",
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
        raise CatalogError("could not allocate a revision number")

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

    def claim(self, owner: str, now: int, lease_ms: int) -> Job | None:
        """Take the next runnable job (queued, due retry, or lost lease) under a lease.

        Fair across projects: the project with the fewest running jobs goes first (then the
        one waiting longest), so one huge project or backfill cannot starve the others.
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
                        export_jobs.c.status == "running",
                        export_jobs.c.lease_expires_ms >= now,
                    )
                    .group_by(export_jobs.c.project_id)
                )
            }
        order = sorted(waiting, key=lambda r: (running.get(int(r[0]), 0), int(r[1]), int(r[0])))
        for project_id, _ in order[:8]:
            with self.tx() as c:
                candidates = (
                    c.execute(
                        select(export_jobs.c.id)
                        .where(runnable, export_jobs.c.project_id == project_id)
                        .order_by(
                            export_jobs.c.next_attempt_ms,
                            export_jobs.c.hour_ms,
                            export_jobs.c.id,
                        )
                        .limit(4)
                    )
                    .scalars()
                    .all()
                )
            for job_id in candidates:
                job = self._take(job_id, runnable, owner, now, lease_ms)
                if job is not None:
                    return job
        return None

    def claim_id(self, job_id: int, owner: str, now: int, lease_ms: int) -> Job | None:
        """Take one given job if it is runnable now, due or not (CLI `export run`)."""
        runnable = _runnable(now, due_only=False)
        return self._take(job_id, runnable, owner, now, lease_ms)

    def _take(
        self, job_id: int, runnable: ColumnElement[bool], owner: str, now: int, lease_ms: int
    ) -> Job | None:
        """Lease a job if it still matches `runnable` (a conditional update: one winner)."""
        with self.tx() as c:
            res = c.execute(
                update(export_jobs)
                .where(export_jobs.c.id == job_id, runnable)
                .values(
                    status="running",
                    attempts=export_jobs.c.attempts + 1,
                    lease_owner=owner,
                    lease_expires_ms=now + lease_ms,
                    started_ms=now,
                )
            )
            claimed = res.rowcount == 1
        return self.job(job_id) if claimed else None

    def renew_lease(self, job_id: int, owner: str, now: int, lease_ms: int) -> bool:
        with self.tx() as c:
            res = c.execute(
                update(export_jobs)
                .where(*_held(job_id, owner))
                .values(lease_expires_ms=now + lease_ms)
            )
            return res.rowcount == 1

    def complete(self, job_id: int, owner: str, result: ExportResult, now: int) -> None:
        """Commit a revision: its files and FINISHED status, in one transaction."""
        with self.tx() as c:
            res = c.execute(
                update(export_jobs)
                .where(*_held(job_id, owner))
                .values(
                    status="finished",
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

    def fail(self, job_id: int, owner: str, error: str, *, retry_at: int | None, now: int) -> str:
        """Record a failed attempt: `retrying` until retry_at, or `error` when None."""
        status = "error" if retry_at is None else "retrying"
        values: dict[str, Any] = {
            "status": status,
            "error": error[:4000],
            "lease_owner": None,
            "lease_expires_ms": None,
        }
        if retry_at is not None:
            values["next_attempt_ms"] = retry_at
        else:
            values["finished_ms"] = now
        with self.tx() as c:
            res = c.execute(
                update(export_jobs)
                .where(export_jobs.c.id == job_id, export_jobs.c.lease_owner == owner)
                .values(**values)
            )
            if res.rowcount != 1:
                raise LeaseLost(f"job {job_id} is no longer held by {owner}")
        return status

    def files(self, job_id: int) -> list[FileRow]:
        with self.tx() as c:
            rows = c.execute(
                select(export_files)
                .where(export_files.c.job_id == job_id)
                .order_by(export_files.c.part)
            ).all()
        return [FileRow(r.part, r.key, r.rows, r.bytes, r.md5, r.sha256) for r in rows]

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

    def files_of(self, job_ids: Iterable[int]) -> dict[int, list[FileRow]]:
        ids = list(job_ids)
        out: dict[int, list[FileRow]] = {i: [] for i in ids}
        if not ids:
            return out
        with self.tx() as c:
            rows = c.execute(
                select(export_files)
                .where(export_files.c.job_id.in_(ids))
                .order_by(export_files.c.job_id, export_files.c.part)
            ).all()
        for r in rows:
            out[r.job_id].append(FileRow(r.part, r.key, r.rows, r.bytes, r.md5, r.sha256))
        return out

    # ---- issued links ----------------------------------------------------------------

    def issued(
        self, project_id: int, scope: str, fingerprint: str, now: int
    ) -> tuple[Any, int] | None:
        with self.tx() as c:
            row = c.execute(
                select(issued_links.c.links, issued_links.c.expires_ms)
                .where(
                    issued_links.c.project_id == project_id,
                    issued_links.c.scope == scope,
                    issued_links.c.fingerprint == fingerprint,
                    issued_links.c.expires_ms > now,
                )
                .order_by(issued_links.c.id.desc())
                .limit(1)
            ).first()
        return (json.loads(row[0]), int(row[1])) if row else None

    def save_issued(
        self, project_id: int, scope: str, fingerprint: str, links: Any, expires_ms: int, now: int
    ) -> None:
        with self.tx() as c:
            c.execute(
                insert(issued_links).values(
                    project_id=project_id,
                    scope=scope,
                    fingerprint=fingerprint,
                    links=json.dumps(links, separators=(",", ":")),
                    expires_ms=expires_ms,
                    created_ms=now,
                )
            )
