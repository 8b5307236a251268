"""Prometheus metrics: jobs, export lag, rows and bytes, ingest, API latency, rate limits."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rawexport.catalog import Catalog
from rawexport.tables import export_jobs
from rawexport.timeutil import HOUR_MS

access = logging.getLogger("rawexport.access")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
JOB_STATUSES = ("queued", "running", "retrying", "finished", "error", "superseded")


class JobsCollector(Collector):
    """rawexport_jobs{status}: read from the catalog at scrape time, so every node agrees."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("rawexport_jobs", "Export jobs by status", labels=["status"])
        with self.catalog.tx() as c:
            counts: dict[str, int] = {
                str(status): int(n)
                for status, n in c.execute(
                    select(export_jobs.c.status, func.count()).group_by(export_jobs.c.status)
                )
            }
        for status in JOB_STATUSES:
            family.add_metric([status], float(counts.get(status, 0)))
        yield family


class Metrics:
    """One registry per process (tests build their own)."""

    def __init__(self, catalog: Catalog | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        labels = ["version", "data_type"]
        self.rows = Counter("rawexport_export_rows", "Rows exported", labels, registry=r)
        self.bytes = Counter("rawexport_export_bytes", "Gzip bytes exported", labels, registry=r)
        self.job_runs = Counter(
            "rawexport_job_runs", "Job attempts by outcome", ["outcome"], registry=r
        )
        self.duration = Histogram(
            "rawexport_job_duration_seconds",
            "Duration of one export attempt",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=r,
        )
        self.lag = Histogram(
            "rawexport_export_lag_seconds",
            "Seconds from an hour's close to its export FINISHED",
            buckets=(5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 86400),
            registry=r,
        )
        self.ingest = Counter(
            "rawexport_ingest_events", "Events received by outcome", ["outcome"], registry=r
        )
        self.requests = Histogram(
            "rawexport_http_request_duration_seconds",
            "API request latency",
            ["route", "method", "status"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=r,
        )
        self.rate_limited = Counter("rawexport_rate_limited", "Requests answered 429", registry=r)
        if catalog is not None:
            r.register(JobsCollector(catalog))

    def job_finished(
        self,
        version: str,
        data_type: str,
        hour_ms: int,
        rows: int,
        size: int,
        now: int,
        seconds: float,
        preview: bool,
    ) -> None:
        self.rows.labels(version, data_type).inc(rows)
        self.bytes.labels(version, data_type).inc(size)
        self.job_runs.labels("finished").inc()
        self.duration.observe(seconds)
        if not preview:
            self.lag.observe(max(0.0, (now - (hour_ms + HOUR_MS)) / 1000))

    def job_failed(self, outcome: str, seconds: float) -> None:
        self.job_runs.labels(outcome).inc()
        self.duration.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetrics:
    """ASGI middleware timing every HTTP request by route template, method and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            seconds = time.perf_counter() - start
            if status[0] == 429:
                self.metrics.rate_limited.inc()
            self.metrics.requests.labels(template, scope["method"], str(status[0])).observe(seconds)
            access.info(
                "%s %s %s",
                scope["method"],
                scope.get("path", ""),
                status[0],
                extra={
                    "event": "request",
                    "method": scope["method"],
                    "route": template,
                    "path": scope.get("path", ""),
                    "status": status[0],
                    "ms": round(seconds * 1000, 3),
                },
            )
