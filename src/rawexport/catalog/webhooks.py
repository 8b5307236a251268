"""Webhooks' state: the endpoints of a project, the messages planned for them, each attempt.

A message is planned once per event (`dedupe_key`, unique per webhook), however many nodes
plan. Sending claims it by pushing its `next_attempt_ms` past the send's timeout, so one
node sends it at a time and a node that dies mid-send leaves it due again soon after.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from rawexport.catalog.tables import (
    deliveries,
    destinations,
    export_jobs,
    webhook_attempts,
    webhook_messages,
    webhooks,
)
from rawexport.types import JobStatus

PENDING, SENT, FAILED = "pending", "sent", "failed"


@dataclass(frozen=True)
class Webhook:
    id: int
    project_id: int
    url: str
    secret: str  # sealed
    events: list[str]
    lag_seconds: int | None
    created_ms: int


@dataclass(frozen=True)
class Message:
    id: int
    webhook_id: int
    msg_id: str
    event: str
    dedupe_key: str
    payload: str
    status: str
    attempts: int
    next_attempt_ms: int
    created_ms: int
    delivered_ms: int | None


@dataclass(frozen=True)
class Attempt:
    id: int
    message_id: int
    attempt: int
    at_ms: int
    status_code: int | None
    error: str | None
    duration_ms: int


def _webhook(row: Any) -> Webhook:
    values = dict(row._mapping)
    values["events"] = json.loads(values["events"])
    return Webhook(**values)


class WebhookStore:
    """The catalog's webhook tables (mixed into Catalog)."""

    engine: Engine

    def create_webhook(
        self,
        project_id: int,
        url: str,
        secret: str,
        events: list[str],
        lag_seconds: int | None,
        now: int,
    ) -> Webhook:
        with self.engine.begin() as c:
            res = c.execute(
                insert(webhooks).values(
                    project_id=project_id,
                    url=url,
                    secret=secret,
                    events=json.dumps(events),
                    lag_seconds=lag_seconds,
                    created_ms=now,
                )
            )
            key = res.inserted_primary_key
            assert key is not None
            row = c.execute(select(webhooks).where(webhooks.c.id == int(key[0]))).one()
        return _webhook(row)

    def webhooks(self, project_id: int | None = None) -> list[Webhook]:
        q = select(webhooks).order_by(webhooks.c.id)
        if project_id is not None:
            q = q.where(webhooks.c.project_id == project_id)
        with self.engine.begin() as c:
            return [_webhook(r) for r in c.execute(q)]

    def webhook(self, webhook_id: int) -> Webhook | None:
        with self.engine.begin() as c:
            row = c.execute(select(webhooks).where(webhooks.c.id == webhook_id)).first()
        return None if row is None else _webhook(row)

    def delete_webhook(self, webhook_id: int) -> bool:
        with self.engine.begin() as c:
            ids = select(webhook_messages.c.id).where(webhook_messages.c.webhook_id == webhook_id)
            c.execute(webhook_attempts.delete().where(webhook_attempts.c.message_id.in_(ids)))
            c.execute(webhook_messages.delete().where(webhook_messages.c.webhook_id == webhook_id))
            return c.execute(webhooks.delete().where(webhooks.c.id == webhook_id)).rowcount == 1

    # ---- what happened (the events webhooks tell) ----------------------------------------

    def jobs_ended_since(self, project_id: int, since_ms: int) -> list[Any]:
        """Non-preview export jobs of the project that finished or ended in ERROR since."""
        with self.engine.begin() as c:
            return list(
                c.execute(
                    select(export_jobs).where(
                        export_jobs.c.project_id == project_id,
                        export_jobs.c.preview.is_(False),
                        export_jobs.c.status.in_([JobStatus.FINISHED, JobStatus.ERROR]),
                        export_jobs.c.finished_ms >= since_ms,
                    )
                )
            )

    def failed_deliveries_since(self, project_id: int, since_ms: int) -> list[Any]:
        """Deliveries of the project's destinations whose last attempt failed since."""
        with self.engine.begin() as c:
            return list(
                c.execute(
                    select(
                        deliveries,
                        destinations.c.name,
                        destinations.c.state,
                        destinations.c.paused_reason,
                        export_jobs.c.version,
                        export_jobs.c.data_type,
                        export_jobs.c.hour_ms,
                        export_jobs.c.revision,
                    )
                    .join(destinations, destinations.c.id == deliveries.c.destination_id)
                    .join(export_jobs, export_jobs.c.id == deliveries.c.job_id)
                    .where(
                        destinations.c.project_id == project_id,
                        deliveries.c.status == "retrying",
                        deliveries.c.error.is_not(None),
                        deliveries.c.started_ms >= since_ms,
                    )
                )
            )

    def unfinished_hours(self, project_id: int, before_ms: int, since_ms: int) -> list[int]:
        """Hours in [since, before) with a non-preview job not finished (lag)."""
        with self.engine.begin() as c:
            rows = c.execute(
                select(export_jobs.c.hour_ms)
                .where(
                    export_jobs.c.project_id == project_id,
                    export_jobs.c.preview.is_(False),
                    export_jobs.c.hour_ms >= since_ms,
                    export_jobs.c.hour_ms < before_ms,
                    export_jobs.c.status != JobStatus.FINISHED,
                )
                .distinct()
            )
            return sorted(int(r[0]) for r in rows)

    # ---- messages ----------------------------------------------------------------------

    def add_messages(
        self, webhook_id: int, planned: Iterable[tuple[str, str, str, str]], now: int
    ) -> int:
        """Plan messages (msg_id, event, dedupe_key, payload) not planned before; how many."""
        rows = list(planned)
        if not rows:
            return 0
        with self.engine.begin() as c:
            known = {
                str(k)
                for (k,) in c.execute(
                    select(webhook_messages.c.dedupe_key).where(
                        webhook_messages.c.webhook_id == webhook_id,
                        webhook_messages.c.dedupe_key.in_([r[2] for r in rows]),
                    )
                )
            }
        added = 0
        for msg_id, event, key, payload in rows:
            if key in known:
                continue
            try:
                with self.engine.begin() as c:
                    c.execute(
                        insert(webhook_messages).values(
                            webhook_id=webhook_id,
                            msg_id=msg_id,
                            event=event,
                            dedupe_key=key,
                            payload=payload,
                            status=PENDING,
                            attempts=0,
                            next_attempt_ms=0,
                            created_ms=now,
                        )
                    )
                added += 1
            except IntegrityError:  # planned by another node meanwhile
                continue
        return added

    def claim_message(self, now: int, hold_ms: int) -> Message | None:
        """The next due message, held for hold_ms (its send's timeout) by pushing its next
        attempt time past it; its attempt count is raised."""
        with self.engine.begin() as c:
            rows = c.execute(
                select(webhook_messages.c.id, webhook_messages.c.attempts)
                .where(
                    webhook_messages.c.status == PENDING,
                    webhook_messages.c.next_attempt_ms <= now,
                )
                .order_by(webhook_messages.c.next_attempt_ms, webhook_messages.c.id)
                .limit(4)
                .with_for_update(skip_locked=True)
            ).all()
            for message_id, attempts in rows:
                res = c.execute(
                    update(webhook_messages)
                    .where(
                        webhook_messages.c.id == message_id,
                        webhook_messages.c.attempts == attempts,
                        webhook_messages.c.status == PENDING,
                    )
                    .values(attempts=attempts + 1, next_attempt_ms=now + hold_ms)
                )
                if res.rowcount == 1:
                    row = c.execute(
                        select(webhook_messages).where(webhook_messages.c.id == message_id)
                    ).one()
                    return Message(**row._mapping)
        return None

    def record_attempt(
        self,
        message: Message,
        *,
        at_ms: int,
        status_code: int | None,
        error: str | None,
        duration_ms: int,
        outcome: str,
        retry_at: int | None,
    ) -> None:
        """Log an attempt at sending message; outcome SENT, FAILED, or PENDING (retry_at)."""
        values: dict[str, Any] = {"status": outcome}
        if outcome == SENT:
            values["delivered_ms"] = at_ms + duration_ms
        if retry_at is not None:
            values["next_attempt_ms"] = retry_at
        with self.engine.begin() as c:
            c.execute(
                insert(webhook_attempts).values(
                    message_id=message.id,
                    attempt=message.attempts,
                    at_ms=at_ms,
                    status_code=status_code,
                    error=None if error is None else error[:1000],
                    duration_ms=duration_ms,
                )
            )
            c.execute(
                update(webhook_messages)
                .where(
                    webhook_messages.c.id == message.id,
                    webhook_messages.c.attempts == message.attempts,
                )
                .values(**values)
            )

    def messages(self, webhook_id: int, limit: int = 100) -> list[Message]:
        """Newest first."""
        with self.engine.begin() as c:
            rows = c.execute(
                select(webhook_messages)
                .where(webhook_messages.c.webhook_id == webhook_id)
                .order_by(webhook_messages.c.id.desc())
                .limit(limit)
            )
            return [Message(**r._mapping) for r in rows]

    def attempts(self, message_ids: list[int]) -> list[Attempt]:
        with self.engine.begin() as c:
            rows = c.execute(
                select(webhook_attempts)
                .where(webhook_attempts.c.message_id.in_(message_ids))
                .order_by(webhook_attempts.c.id)
            )
            return [Attempt(**r._mapping) for r in rows]
