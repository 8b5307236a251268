"""rawexport_jobs{status}: a Prometheus collector that reads the catalog at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from rawexport.catalog.deliveries import DeliveryStatus
from rawexport.catalog.projects import Catalog
from rawexport.catalog.tables import export_jobs
from rawexport.metrics import Metrics
from rawexport.timeutil import now_ms
from rawexport.types import JobStatus

JOB_STATUSES = tuple(JobStatus)


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


class DeliveriesCollector(Collector):
    """rawexport_deliveries{status} and rawexport_delivery_lag_seconds{destination} (how long
    the oldest delivery still to do has waited), read from the catalog at scrape time."""

    def __init__(self, catalog: Catalog, clock: Callable[[], int] = now_ms) -> None:
        self.catalog = catalog
        self.clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        by_status = GaugeMetricFamily(
            "rawexport_deliveries", "Deliveries to destinations by status", labels=["status"]
        )
        lag = GaugeMetricFamily(
            "rawexport_delivery_lag_seconds",
            "Seconds the oldest delivery still to do of a destination has waited (0: none)",
            labels=["destination"],
        )
        totals: dict[str, int] = {}
        now = self.clock()
        names = {p.id: p.ai for p in self.catalog.projects()}
        for dest in self.catalog.destinations():
            summary = self.catalog.delivery_summary(dest.id)
            for status, n in summary.counts.items():
                totals[status] = totals.get(status, 0) + n
            waited = 0 if summary.oldest_pending_ms is None else now - summary.oldest_pending_ms
            label = f"{names.get(dest.project_id, dest.project_id)}/{dest.name}"
            lag.add_metric([label], max(0, waited) / 1000)
        for status in DeliveryStatus.ALL:
            by_status.add_metric([status], float(totals.get(status, 0)))
        yield by_status
        yield lag


def catalog_metrics(catalog: Catalog) -> Metrics:
    """A process's Metrics with the catalog's gauges (jobs, deliveries) registered."""
    metrics = Metrics()
    metrics.registry.register(JobsCollector(catalog))
    metrics.registry.register(DeliveriesCollector(catalog))
    return metrics
