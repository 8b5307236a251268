"""The catalog: projects, credentials, export jobs, revisions, files and issued links.

`tables` holds the SQLAlchemy Core tables (evolved by `migrations/`), `engine` opens a
catalog database by URL, `jobs` is the job half (leases, revisions, files, links) and
`projects` the face that adds projects and credentials. The names below are the package's
public face.
"""

from rawexport.catalog.engine import DatabaseError, catalog_unavailable, make_engine, migrate
from rawexport.catalog.files import FileRow
from rawexport.catalog.jobs import CatalogBusy, CatalogError, Job, LeaseLost
from rawexport.catalog.links import Link
from rawexport.catalog.projects import Catalog, Credential, KeyPair, Project
from rawexport.types import PENDING, WAITING, JobStatus

__all__ = [
    "PENDING",
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
