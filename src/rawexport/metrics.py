"""Prometheus metrics: export lag, rows and bytes, ingest, API latency, rate limits.

The jobs gauge reads the catalog (`catalog.metrics`); request timing is `api.access`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from rawexport.timeutil import HOUR_MS
from rawexport.types import JobStatus

access = logging.getLogger("rawexport.access")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
JOB_STATUSES = tuple(JobStatus)


class Metrics:
    """One registry per process (tests build their own)."""

    def __init__(self) -> None:
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
        self.background_failures = Counter(
            "rawexport_background_failures",
            "Failed passes of a background thread (it logs, backs off and goes on)",
            ["thread"],
            registry=r,
        )
        self.deliveries = Counter(
            "rawexport_delivery_attempts",
            "Attempts at delivering an hour to a destination, by outcome",
            ["outcome"],
            registry=r,
        )
        self.webhook_attempts = Counter(
            "rawexport_webhook_attempts",
            "Attempts at sending a webhook message, by outcome (sent: a 2xx; failed: none)",
            ["outcome"],
            registry=r,
        )
        self.rate_delayed = Counter(
            "rawexport_rate_delayed",
            "Requests delayed until the rate limit allowed them",
            registry=r,
        )

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
        self.job_runs.labels(JobStatus.FINISHED).inc()
        self.duration.observe(seconds)
        if not preview:
            self.lag.observe(max(0.0, (now - (hour_ms + HOUR_MS)) / 1000))

    def failed(self, thread: str) -> Callable[[], None]:
        """What a background loop calls on a failed pass: counted under its thread."""
        counter = self.background_failures.labels(thread)
        return lambda: counter.inc()

    def job_failed(self, outcome: str, seconds: float) -> None:
        self.job_runs.labels(outcome).inc()
        self.duration.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
