"""Push delivery's destinations: where a project's finished hours go, and their state.

A destination is active or paused; paused (by an operator, or by `delivery_pause_after`
failed deliveries in a row) it keeps its reason until resumed. Its deliveries live in
`deliveries`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from rawexport.catalog.tables import deliveries, destinations, export_jobs
from rawexport.errors import UserError

ACTIVE, PAUSED = "active", "paused"
ERROR_CHARS = 2000
# Delivery statuses of work still to do (deliveries.DeliveryStatus).
PENDING = ("queued", "running", "retrying")
DELIVERED = "delivered"


class DestinationError(UserError, ValueError):
    """A destination cannot be added or changed as asked; the message says why."""


@dataclass(frozen=True)
class Destination:
    id: int
    project_id: int
    name: str
    kind: str
    format: str
    key_template: str
    config: dict[str, Any]
    credentials: str | None  # sealed
    start_hour_ms: int
    state: str
    paused_reason: str | None
    failures: int
    created_ms: int
    updated_ms: int

    @property
    def data_types(self) -> list[str] | None:
        """The data types delivered (None: every type of the versions)."""
        types = self.config.get("data_types")
        return None if types is None else [str(t) for t in types]

    @property
    def versions(self) -> list[str]:
        return [str(v) for v in self.config.get("versions", ["v2"])]


@dataclass(frozen=True)
class DeliverySummary:
    counts: dict[str, int]  # deliveries by status
    last_hour_ms: int | None  # the newest hour delivered
    oldest_pending_ms: int | None  # when the oldest delivery still to do was planned


def _destination(row: Any) -> Destination:
    values = dict(row._mapping)
    values["config"] = json.loads(values["config"])
    return Destination(**values)


class DestinationStore:
    """The catalog's destinations (mixed into Catalog)."""

    engine: Engine

    def create_destination(
        self,
        project_id: int,
        name: str,
        *,
        kind: str,
        format: str,
        key_template: str,
        config: dict[str, Any],
        credentials: str | None,
        start_hour_ms: int,
        now: int,
    ) -> Destination:
        try:
            with self.engine.begin() as c:
                c.execute(
                    insert(destinations).values(
                        project_id=project_id,
                        name=name,
                        kind=kind,
                        format=format,
                        key_template=key_template,
                        config=json.dumps(config, sort_keys=True),
                        credentials=credentials,
                        start_hour_ms=start_hour_ms,
                        state=ACTIVE,
                        failures=0,
                        created_ms=now,
                        updated_ms=now,
                    )
                )
        except IntegrityError:
            raise DestinationError(f"the project has a destination named {name!r}") from None
        found = self.destination(project_id, name)
        assert found is not None
        return found

    def destination(self, project_id: int, name: str) -> Destination | None:
        with self.engine.begin() as c:
            row = c.execute(
                select(destinations).where(
                    destinations.c.project_id == project_id, destinations.c.name == name
                )
            ).first()
        return None if row is None else _destination(row)

    def destination_by_id(self, destination_id: int) -> Destination | None:
        with self.engine.begin() as c:
            row = c.execute(select(destinations).where(destinations.c.id == destination_id)).first()
        return None if row is None else _destination(row)

    def destinations(self, project_id: int | None = None) -> list[Destination]:
        q = select(destinations).order_by(destinations.c.project_id, destinations.c.name)
        if project_id is not None:
            q = q.where(destinations.c.project_id == project_id)
        with self.engine.begin() as c:
            return [_destination(r) for r in c.execute(q)]

    def pause_destination(self, destination_id: int, reason: str, now: int) -> None:
        with self.engine.begin() as c:
            c.execute(
                update(destinations)
                .where(destinations.c.id == destination_id)
                .values(state=PAUSED, paused_reason=reason[:ERROR_CHARS], updated_ms=now)
            )

    def resume_destination(self, destination_id: int, now: int) -> None:
        """Active again, its failure count cleared and its waiting retries due now."""
        with self.engine.begin() as c:
            c.execute(
                update(destinations)
                .where(destinations.c.id == destination_id)
                .values(state=ACTIVE, paused_reason=None, failures=0, updated_ms=now)
            )
            c.execute(
                update(deliveries)
                .where(
                    deliveries.c.destination_id == destination_id,
                    deliveries.c.status == "retrying",
                )
                .values(next_attempt_ms=now)
            )

    def delete_destination(self, destination_id: int) -> None:
        with self.engine.begin() as c:
            c.execute(deliveries.delete().where(deliveries.c.destination_id == destination_id))
            c.execute(destinations.delete().where(destinations.c.id == destination_id))

    def delivery_summary(self, destination_id: int) -> DeliverySummary:
        """What a destination's page and `destination list` show."""
        with self.engine.begin() as c:
            counts = {
                str(status): int(n)
                for status, n in c.execute(
                    select(deliveries.c.status, func.count())
                    .where(deliveries.c.destination_id == destination_id)
                    .group_by(deliveries.c.status)
                )
            }
            last = c.execute(
                select(func.max(export_jobs.c.hour_ms))
                .join(deliveries, deliveries.c.job_id == export_jobs.c.id)
                .where(
                    deliveries.c.destination_id == destination_id,
                    deliveries.c.status == DELIVERED,
                )
            ).scalar()
            oldest = c.execute(
                select(func.min(deliveries.c.created_ms)).where(
                    deliveries.c.destination_id == destination_id,
                    deliveries.c.status.in_(PENDING),
                )
            ).scalar()
        return DeliverySummary(
            counts,
            None if last is None else int(last),
            None if oldest is None else int(oldest),
        )
