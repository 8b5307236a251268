"""One node of rawexport, assembled: its services (catalog, event store, blob store,
exporter, deliverer, metrics), its background loops (scheduler, compactor, retention
sweeper, export workers, delivery) and its ASGI app. `rawexport serve` runs a Node's app
under uvicorn, `demo` the same, and the tests assemble what they need through the same two
entry points (`open_services`, `Node`), so what runs is what is tested.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from rawexport.api.app import create_app
from rawexport.blobs import BlobStore
from rawexport.blobs.stores import open_blob_store
from rawexport.catalog import Catalog
from rawexport.catalog.leader import Leadership
from rawexport.catalog.metrics import catalog_metrics
from rawexport.export.delivery import Deliverer, DeliveryLoops
from rawexport.export.ondask import DaskRunner
from rawexport.export.retention import Sweeper
from rawexport.export.scheduler import Scheduler
from rawexport.export.webhooks import Notifier, WebhookLoops
from rawexport.export.worker import Exporter, WorkerPool
from rawexport.metrics import Metrics
from rawexport.secretbox import SecretBox, open_box
from rawexport.settings import Settings
from rawexport.store import EventStore, open_event_store
from rawexport.store.compaction import Compactor


@dataclass
class Services:
    """What one process works with; `close` when done."""

    settings: Settings
    catalog: Catalog
    store: EventStore
    blobs: BlobStore
    exporter: Exporter
    metrics: Metrics
    box: SecretBox  # seals destination credentials and webhook secrets
    deliverer: Deliverer
    notifier: Notifier

    def close(self) -> None:
        self.notifier.close()
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
    dask = DaskRunner(settings) if settings.dask_address else None
    exporter = Exporter(settings, catalog, store, blobs, metrics=metrics, dask=dask)
    box = open_box(settings.secrets_key, settings.home)
    deliverer = Deliverer(settings, catalog, blobs, box, exporter.runner, metrics=metrics)
    notifier = Notifier(catalog, box, metrics=metrics)
    return Services(settings, catalog, store, blobs, exporter, metrics, box, deliverer, notifier)


class Loop(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class Node:
    """A node's services, loops and app. `start` starts the loops (the app serves once an
    ASGI server runs it); `stop` stops them and closes the services."""

    services: Services
    app: Any
    loops: list[Loop] = field(default_factory=list)

    @classmethod
    def open(cls, settings: Settings) -> Node:
        services = open_services(settings)
        catalog, store, metrics = services.catalog, services.store, services.metrics
        # On an object store only the node holding the compactor's lock compacts.
        compacts = (
            Leadership(catalog.engine, "rawexport.compactor", "the compactor")
            if store.single_compactor
            else None
        )
        loops: list[Loop] = [
            Scheduler(catalog, settings, metrics=metrics),
            Compactor(store, settings, metrics=metrics, leadership=compacts),
            Sweeper(
                catalog,
                store,
                services.blobs,
                settings.sweep_interval,
                orphan_age_ms=int(settings.lease_seconds * 1000),
                metrics=metrics,
            ),
            WorkerPool(services.exporter, settings.workers),
            DeliveryLoops(services.deliverer, settings),
            WebhookLoops(services.notifier, settings),
        ]
        app = create_app(settings, catalog, services.blobs, metrics=metrics)
        return cls(services, app, loops)

    def start(self) -> None:
        for loop in self.loops:
            loop.start()

    def stop(self) -> None:
        try:
            for loop in self.loops:
                loop.stop()
        finally:
            self.services.close()

    def __enter__(self) -> Node:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
