"""rawexport_jobs{status}: a Prometheus collector that reads the catalog at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from rawexport.catalog.projects import Catalog
from rawexport.catalog.tables import export_jobs
from rawexport.metrics import Metrics
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


def catalog_metrics(catalog: Catalog) -> Metrics:
    """A process's Metrics with the jobs gauge of this catalog registered."""
    metrics = Metrics()
    metrics.registry.register(JobsCollector(catalog))
    return metrics
