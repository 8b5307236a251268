"""The catalog: projects, credentials, export jobs, revisions, files and issued links.

`tables` holds the SQLAlchemy Core tables (evolved by `migrations/`), `engine` opens a
catalog database by URL (and says which of its errors are outages), `jobs` keeps export
jobs (revisions, leases, commits), `files` their committed parts and the links issued for
them, `sweeping` the sweeper's queries, `links` and `sessions` the collectors' links and the
console's sessions, `destinations` and `deliveries` push delivery's state, `webhooks` the
webhooks' messages and attempts, and `projects` is the face (`Catalog`) that adds projects
and credentials. Only this package touches SQL (an import-linter contract). The names below
are the package's public face.
"""

from rawexport.catalog.deliveries import Delivery, DeliveryStatus
from rawexport.catalog.destinations import ACTIVE, PAUSED, Destination, DestinationError
from rawexport.catalog.engine import DatabaseError, catalog_unavailable, make_engine, migrate
from rawexport.catalog.files import FileRow
from rawexport.catalog.jobs import CatalogBusy, CatalogError, Job
from rawexport.catalog.links import Link
from rawexport.catalog.projects import Catalog, Credential, KeyPair, Project
from rawexport.errors import LeaseLost
from rawexport.types import PENDING, WAITING, JobStatus

__all__ = [
    "ACTIVE",
    "PAUSED",
    "PENDING",
    "Delivery",
    "DeliveryStatus",
    "Destination",
    "DestinationError",
    "Catalog",
    "CatalogBusy",
    "CatalogError",
    "Credential",
    "DatabaseError",
    "FileRow",
    "Job",
    "JobStatus",
    "KeyPair",
    "LeaseLost",
    "Link",
    "Project",
    "WAITING",
    "catalog_unavailable",
    "make_engine",
    "migrate",
]
