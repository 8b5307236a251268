"""`rawexport check`: does this deployment's configuration reach what it names?

Each part is probed the way `serve` will use it, and a failure says what to fix: the
catalog (connect, migrations at head), the blob store (S3: the bucket, with a probe
object put, read and deleted; a directory: writable), the event store directory, the
Dask cluster when dask_address is set (reachable, workers connected, a probe task run),
and the npm packages the console and /docs serve (installed at their pinned versions).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import click

from rawexport.api.assets import PINNED, WebAssets
from rawexport.blobs.s3 import BlobStoreError
from rawexport.blobs.stores import open_blob_store
from rawexport.catalog import Catalog, DatabaseError
from rawexport.cli.common import home_option, settings_from, user_errors
from rawexport.errors import RawexportError
from rawexport.export import ondask
from rawexport.settings import Settings


class CheckFailed(RawexportError):
    """A part of the deployment does not work; the message says what to fix."""


def _catalog(settings: Settings) -> str:
    try:
        catalog = Catalog(settings.database_url)
    except DatabaseError as e:
        reason = str(e.__cause__ or e).strip().splitlines()[0]
        raise CheckFailed(f"cannot open the catalog ({reason}); check catalog_url") from None
    try:
        catalog.ping()
        return f"{catalog.engine.dialect.name}, migrations at head"
    finally:
        catalog.close()


def _store(url: str, default_dir: Path, settings: Settings, what: str, setting: str) -> str:
    try:
        store = open_blob_store(
            url, default_dir, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region
        )
    except ValueError as e:
        raise CheckFailed(f"{e}; fix {setting}") from None
    try:
        return store.probe()
    except BlobStoreError as e:
        raise CheckFailed(str(e)) from None
    except OSError as e:
        where = Path(e.filename).parent if e.filename else default_dir
        raise CheckFailed(
            f"{what} {where} is not writable ({e.strerror}); fix its permissions"
        ) from None


def _blobs(settings: Settings) -> str:
    return _store(settings.blobs_url, settings.exports_dir, settings, "exports", "blobs_url")


def _events(settings: Settings) -> str:
    return _store(settings.events_url, settings.events_dir, settings, "events", "events_url")


def _dask(settings: Settings) -> str:
    if not settings.dask_address:
        return "not used (dask_address is empty): `serve` runs export jobs itself"
    try:
        return ondask.probe(settings)
    except ondask.DaskUnusable as e:
        raise CheckFailed(str(e)) from None


def _web(settings: Settings) -> str:
    assets = WebAssets.find(settings.web_assets)
    if assets.problems:
        raise CheckFailed(assets.advice())
    found = ", ".join(f"{name} {version}" for name, version in PINNED.items())
    return f"{found} in {assets.directory}"


@click.command("check")
@home_option
@click.pass_context
@user_errors
def check(ctx: click.Context, /, home: Path | None) -> None:
    """Probe the catalog, stores, Dask cluster and web assets; exit 1 if one fails."""
    settings = settings_from(ctx, home=home)
    probes: list[tuple[str, Callable[[], str]]] = [
        ("catalog", lambda: _catalog(settings)),
        ("blobs", lambda: _blobs(settings)),
        ("events", lambda: _events(settings)),
        ("dask", lambda: _dask(settings)),
        ("web", lambda: _web(settings)),
    ]
    report: dict[str, dict[str, str]] = {}
    for name, probe in probes:
        try:
            report[name] = {"ok": "yes", "detail": probe()}
        except CheckFailed as e:
            report[name] = {"ok": "no", "error": str(e)}
            click.echo(f"rawexport check: {name}: {e}", err=True)
    click.echo(json.dumps(report, indent=2))
    if any(r["ok"] == "no" for r in report.values()):
        sys.exit(1)
