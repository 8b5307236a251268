"""The planner: queues the export of every closed hour of every export-enabled project."""

from __future__ import annotations

import logging
from collections.abc import Callable

from rawexport.catalog import Catalog, Project
from rawexport.catalog.leader import Leadership
from rawexport.metrics import Metrics
from rawexport.periodic import Periodic
from rawexport.schema import types_for
from rawexport.settings import Settings
from rawexport.timeutil import DAY_MS, HOUR_MS, hour_ceil, hour_floor, now_ms

log = logging.getLogger("rawexport.scheduler")


def due_hours(project: Project, now: int, grace_ms: int) -> list[int]:
    """Closed hours (closed at least grace_ms ago) inside enablement and retention.

    An hour h is retained while now < h + retention, the same rule the API applies.
    """
    if not project.export_enabled or project.export_since_ms is None:
        return []
    first = max(
        hour_ceil(project.export_since_ms),
        hour_floor(now - project.retention_days * DAY_MS) + HOUR_MS,
    )
    last_closed = hour_floor(now - grace_ms) - HOUR_MS
    return list(range(first, last_closed + 1, HOUR_MS))


def versions(project: Project) -> tuple[str, ...]:
    return ("v2", "v1") if project.v1_enabled else ("v2",)


def plan_project(catalog: Catalog, project: Project, hours: list[int], now: int) -> int:
    return sum(catalog.plan(project.id, v, types_for(v), hours, now) for v in versions(project))


def plan_due(catalog: Catalog, settings: Settings, now: int) -> int:
    """Queue every due (project, version, type, hour) that has no job yet."""
    grace_ms = int(settings.grace_seconds * 1000)
    planned = 0
    for project in catalog.projects():
        hours = due_hours(project, now, grace_ms)
        if hours:
            planned += plan_project(catalog, project, hours, now)
    if planned:
        log.info("planned %d export jobs", planned)
    return planned


class Scheduler:
    """Runs plan_due every plan_interval seconds in a thread, catching up at start.

    With several nodes on one PostgreSQL catalog only the node holding the scheduler lock
    plans (`catalog.leader`); the others ask for it on every tick and take over within
    plan_interval when its holder dies.
    """

    def __init__(
        self,
        catalog: Catalog,
        settings: Settings,
        clock: Callable[[], int] = now_ms,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics
        self.catalog = catalog
        self.settings = settings
        self.clock = clock
        self.leadership = Leadership(catalog.engine)
        self.loop = Periodic(
            "export-scheduler",
            self.tick,
            settings.plan_interval,
            on_error=None if metrics is None else metrics.failed("scheduler"),
        )

    def tick(self) -> int | None:
        """One pass: the jobs planned, or None when another node runs the scheduler."""
        if not self.leadership.lead():
            return None
        return plan_due(self.catalog, self.settings, self.clock())

    def start(self) -> None:
        self.loop.start()

    def stop(self) -> None:
        self.loop.stop(10)
        self.leadership.release()
