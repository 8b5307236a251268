"""Wiring: the catalog, event store, blob store and exporter one process uses."""

from __future__ import annotations

from dataclasses import dataclass

from rawexport.blobs import BlobStore
from rawexport.blobs.stores import open_blob_store
from rawexport.catalog import Catalog
from rawexport.catalog.metrics import catalog_metrics
from rawexport.export.ondask import DaskExecutor
from rawexport.export.worker import Exporter
from rawexport.metrics import Metrics
from rawexport.settings import Settings
from rawexport.store import EventStore, open_event_store


@dataclass
class Services:
    settings: Settings
    catalog: Catalog
    store: EventStore
    blobs: BlobStore
    exporter: Exporter
    metrics: Metrics

    def close(self) -> None:
        if self.exporter.dask is not None:
            self.exporter.dask.close()
        self.catalog.close()


def open_services(settings: Settings) -> Services:
    settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)  # the catalog holds secrets
    settings.tmp_dir.mkdir(parents=True, exist_ok=True)
    catalog = Catalog(settings.database_url)
    store = open_event_store(settings)
    blobs = open_blob_store(
        settings.blobs_url,
        settings.exports_dir,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
    )
    metrics = catalog_metrics(catalog)
    dask = DaskExecutor(settings) if settings.dask_address else None
    exporter = Exporter(settings, catalog, store, blobs, metrics=metrics, dask=dask)
    return Services(settings, catalog, store, blobs, exporter, metrics)
