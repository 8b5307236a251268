"""Push delivery's state: destinations, the deliveries of export revisions to them.

A delivery is one (destination, export revision): planned once the revision is the hour's
newest finished one, claimed under a lease like an export job (the attempt count is its
fencing token), delivered or retried; a destination whose deliveries fail `pause_after`
times in a row is paused with the last failure as its reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, exists, insert, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from rawexport.catalog.destinations import ACTIVE, ERROR_CHARS, PAUSED, DestinationStore
from rawexport.catalog.tables import deliveries, destinations, export_jobs
from rawexport.errors import LeaseLost
from rawexport.types import JobStatus


class DeliveryStatus:
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    DELIVERED = "delivered"
    SUPERSEDED = "superseded"

    ALL = (QUEUED, RUNNING, RETRYING, DELIVERED, SUPERSEDED)


@dataclass(frozen=True)
class Delivery:
    """A delivery with what it delivers: the export revision's identity."""

    id: int
    destination_id: int
    job_id: int
    status: str
    attempts: int
    next_attempt_ms: int
    lease_owner: str | None
    lease_expires_ms: int | None
    location: str | None
    files: int | None
    rows: int | None
    bytes: int | None
    error: str | None
    superseded_by: int | None
    created_ms: int
    started_ms: int | None
    delivered_ms: int | None
    # of the export revision
    project_id: int
    version: str
    data_type: str
    hour_ms: int
    revision: int
    finished_ms: int | None


_JOB_COLUMNS = (
    export_jobs.c.project_id,
    export_jobs.c.version,
    export_jobs.c.data_type,
    export_jobs.c.hour_ms,
    export_jobs.c.revision,
    export_jobs.c.finished_ms,
)


def _with_job() -> Any:
    return select(deliveries, *_JOB_COLUMNS).join(
        export_jobs, export_jobs.c.id == deliveries.c.job_id
    )


def _held(d: Delivery, owner: str) -> tuple[ColumnElement[bool], ...]:
    return (
        deliveries.c.id == d.id,
        deliveries.c.status == DeliveryStatus.RUNNING,
        deliveries.c.lease_owner == owner,
        deliveries.c.attempts == d.attempts,
    )


class DeliveryStore(DestinationStore):
    """The catalog's destinations and their deliveries (mixed into Catalog)."""

    engine: Engine

    # ---- deliveries ------------------------------------------------------------------

    def plan_deliveries(self, now: int) -> int:
        """Queue a delivery of each hour's newest finished revision that an active
        destination takes and has not had yet; returns how many."""
        newer = export_jobs.alias("newer")
        queued = 0
        for dest in self.destinations():
            if dest.state != ACTIVE:
                continue
            where = [
                export_jobs.c.project_id == dest.project_id,
                export_jobs.c.status == JobStatus.FINISHED,
                export_jobs.c.preview.is_(False),
                export_jobs.c.hour_ms >= dest.start_hour_ms,
                export_jobs.c.version.in_(dest.versions),
                ~exists().where(
                    deliveries.c.destination_id == dest.id,
                    deliveries.c.job_id == export_jobs.c.id,
                ),
                ~exists().where(
                    newer.c.project_id == export_jobs.c.project_id,
                    newer.c.version == export_jobs.c.version,
                    newer.c.data_type == export_jobs.c.data_type,
                    newer.c.hour_ms == export_jobs.c.hour_ms,
                    newer.c.status == JobStatus.FINISHED,
                    newer.c.revision > export_jobs.c.revision,
                ),
            ]
            if dest.data_types is not None:
                where.append(export_jobs.c.data_type.in_(dest.data_types))
            with self.engine.begin() as c:
                jobs = [int(r[0]) for r in c.execute(select(export_jobs.c.id).where(*where))]
                if not jobs:
                    continue
                try:
                    c.execute(
                        insert(deliveries),
                        [
                            {
                                "destination_id": dest.id,
                                "job_id": j,
                                "status": DeliveryStatus.QUEUED,
                                "attempts": 0,
                                "next_attempt_ms": now,
                                "created_ms": now,
                            }
                            for j in jobs
                        ],
                    )
                except IntegrityError:  # another node planned them first
                    continue
            queued += len(jobs)
        return queued

    def delivery(self, delivery_id: int) -> Delivery | None:
        with self.engine.begin() as c:
            row = c.execute(_with_job().where(deliveries.c.id == delivery_id)).first()
        return None if row is None else Delivery(**row._mapping)

    def deliveries(
        self,
        *,
        project_id: int | None = None,
        destination_id: int | None = None,
        status: str | None = None,
        hour_ms: int | None = None,
        limit: int = 200,
    ) -> list[Delivery]:
        """Newest first."""
        q = _with_job().order_by(deliveries.c.id.desc()).limit(limit)
        if project_id is not None:
            q = q.where(export_jobs.c.project_id == project_id)
        if destination_id is not None:
            q = q.where(deliveries.c.destination_id == destination_id)
        if status is not None:
            q = q.where(deliveries.c.status == status)
        if hour_ms is not None:
            q = q.where(export_jobs.c.hour_ms == hour_ms)
        with self.engine.begin() as c:
            return [Delivery(**r._mapping) for r in c.execute(q)]

    def claim_delivery(self, owner: str, now: int, lease_ms: int) -> Delivery | None:
        """Take the next due delivery of an active destination (queued, a due retry, or a
        lost lease) under a lease."""
        due = or_(
            and_(
                deliveries.c.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.RETRYING]),
                deliveries.c.next_attempt_ms <= now,
            ),
            and_(
                deliveries.c.status == DeliveryStatus.RUNNING,
                deliveries.c.lease_expires_ms < now,
            ),
        )
        active = exists().where(
            destinations.c.id == deliveries.c.destination_id, destinations.c.state == ACTIVE
        )
        with self.engine.begin() as c:
            candidates = [
                (int(r[0]), int(r[1]))
                for r in c.execute(
                    select(deliveries.c.id, deliveries.c.attempts)
                    .where(due, active)
                    .order_by(deliveries.c.next_attempt_ms, deliveries.c.id)
                    .limit(4)
                    .with_for_update(skip_locked=True)
                )
            ]
            for delivery_id, attempts in candidates:
                res = c.execute(
                    update(deliveries)
                    .where(deliveries.c.id == delivery_id, deliveries.c.attempts == attempts, due)
                    .values(
                        status=DeliveryStatus.RUNNING,
                        attempts=attempts + 1,
                        lease_owner=owner,
                        lease_expires_ms=now + lease_ms,
                        started_ms=now,
                    )
                )
                if res.rowcount == 1:
                    row = c.execute(_with_job().where(deliveries.c.id == delivery_id)).one()
                    return Delivery(**row._mapping)
        return None

    def renew_delivery(self, d: Delivery, owner: str, now: int, lease_ms: int) -> bool:
        with self.engine.begin() as c:
            res = c.execute(
                update(deliveries).where(*_held(d, owner)).values(lease_expires_ms=now + lease_ms)
            )
        return res.rowcount == 1

    def delivered_before(self, d: Delivery) -> list[Delivery]:
        """The destination's delivered older revisions of d's hour (to mark superseded)."""
        with self.engine.begin() as c:
            rows = c.execute(
                _with_job().where(
                    deliveries.c.destination_id == d.destination_id,
                    deliveries.c.status == DeliveryStatus.DELIVERED,
                    export_jobs.c.project_id == d.project_id,
                    export_jobs.c.version == d.version,
                    export_jobs.c.data_type == d.data_type,
                    export_jobs.c.hour_ms == d.hour_ms,
                    export_jobs.c.revision < d.revision,
                )
            )
            return [Delivery(**r._mapping) for r in rows]

    def complete_delivery(
        self,
        d: Delivery,
        owner: str,
        *,
        location: str,
        files: int,
        rows: int,
        size: int,
        superseded: Sequence[int],
        now: int,
    ) -> None:
        """Record d delivered (LeaseLost if this attempt no longer holds it), the deliveries
        in superseded marked so, and the destination's failure count cleared."""
        with self.engine.begin() as c:
            res = c.execute(
                update(deliveries)
                .where(*_held(d, owner))
                .values(
                    status=DeliveryStatus.DELIVERED,
                    location=location,
                    files=files,
                    rows=rows,
                    bytes=size,
                    error=None,
                    delivered_ms=now,
                    lease_owner=None,
                    lease_expires_ms=None,
                )
            )
            if res.rowcount != 1:
                raise LeaseLost(f"delivery {d.id} is no longer held by {owner}")
            if superseded:
                c.execute(
                    update(deliveries)
                    .where(deliveries.c.id.in_(list(superseded)))
                    .values(status=DeliveryStatus.SUPERSEDED, superseded_by=d.id)
                )
            c.execute(
                update(destinations)
                .where(destinations.c.id == d.destination_id)
                .values(failures=0, updated_ms=now)
            )

    def fail_delivery(
        self, d: Delivery, owner: str, error: str, *, retry_at: int, pause_after: int, now: int
    ) -> bool:
        """Record a failed attempt (retried at retry_at); True when it paused the
        destination (its pause_after-th failure in a row)."""
        with self.engine.begin() as c:
            res = c.execute(
                update(deliveries)
                .where(*_held(d, owner))
                .values(
                    status=DeliveryStatus.RETRYING,
                    error=error[:ERROR_CHARS],
                    next_attempt_ms=retry_at,
                    lease_owner=None,
                    lease_expires_ms=None,
                )
            )
            if res.rowcount != 1:
                raise LeaseLost(f"delivery {d.id} is no longer held by {owner}")
            failures = c.execute(
                update(destinations)
                .where(destinations.c.id == d.destination_id)
                .values(failures=destinations.c.failures + 1, updated_ms=now)
                .returning(destinations.c.failures)
            ).scalar_one()
            if failures < pause_after:
                return False
            reason = f"{failures} deliveries failed in a row; the last: {error}"
            c.execute(
                update(destinations)
                .where(destinations.c.id == d.destination_id, destinations.c.state == ACTIVE)
                .values(state=PAUSED, paused_reason=reason[:ERROR_CHARS])
            )
            return True

    def supersede_delivery(self, d: Delivery, owner: str, now: int) -> None:
        """d is not delivered: a newer revision of its hour is (or will be) instead."""
        with self.engine.begin() as c:
            res = c.execute(
                update(deliveries)
                .where(*_held(d, owner))
                .values(
                    status=DeliveryStatus.SUPERSEDED,
                    error=None,
                    lease_owner=None,
                    lease_expires_ms=None,
                    delivered_ms=None,
                )
            )
            if res.rowcount != 1:
                raise LeaseLost(f"delivery {d.id} is no longer held by {owner}")

    def redeliver(self, delivery_ids: Sequence[int], now: int) -> int:
        """Queue deliveries again (delivered or waiting ones); returns how many. A running
        one is left to its attempt; a superseded one stays so (its hour has a newer one)."""
        with self.engine.begin() as c:
            res = c.execute(
                update(deliveries)
                .where(
                    deliveries.c.id.in_(list(delivery_ids)),
                    deliveries.c.status.not_in([DeliveryStatus.RUNNING, DeliveryStatus.SUPERSEDED]),
                )
                .values(status=DeliveryStatus.QUEUED, next_attempt_ms=now, error=None)
            )
        return int(res.rowcount)
