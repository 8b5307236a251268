"""`rawexport destination | deliveries`: push delivery of finished hours to customers'
buckets and directories."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from rawexport.catalog import DeliveryStatus, Destination
from rawexport.cli.common import echo_json, home_option, need_project, settings_from, user_errors
from rawexport.export.actions import OpsError
from rawexport.export.destinations import add_destination, describe, probe, target_of
from rawexport.node import Services, open_services
from rawexport.timeutil import hour_floor, now_ms, parse_hour_arg

F = TypeVar("F", bound=Callable[..., Any])


def _destination(services: Services, ai: str, name: str) -> Destination:
    project = need_project(services, ai)
    dest = services.catalog.destination(project.id, name)
    if dest is None:
        raise OpsError(f"project {ai} has no destination named {name!r}")
    return dest


def _one_destination(f: F) -> F:
    """The options of a command on one destination: --home, --project, --name."""
    g: Any = click.pass_context(user_errors(f))
    g = click.option("--name", required=True, help="the destination's name")(g)
    g = click.option("--project", "ai", required=True, help="project ai")(g)
    return home_option(g)  # type: ignore[no-any-return]


@click.group()
def destination() -> None:
    """Where finished hours are delivered: S3-compatible buckets and directories."""


@destination.command("add")
@home_option
@click.option("--project", "ai", required=True, help="project ai")
@click.option("--name", required=True, help="the destination's name in its project")
@click.option("--s3", "s3_url", default=None, help="s3://bucket/prefix of the bucket")
@click.option("--dir", "dir_path", default=None, help="an absolute directory (local or NFS)")
@click.option("--endpoint-url", default="", help="S3-compatible endpoint (MinIO, Ceph, OSS...)")
@click.option("--region", default="", help="the bucket's region")
@click.option(
    "--access-key-id", default="", envvar="RAWEXPORT_DEST_ACCESS_KEY_ID", help="the bucket's key"
)
@click.option(
    "--secret-access-key",
    default="",
    envvar="RAWEXPORT_DEST_SECRET_ACCESS_KEY",
    help="its secret (better: the RAWEXPORT_DEST_SECRET_ACCESS_KEY variable)",
)
@click.option("--session-token", default="", envvar="RAWEXPORT_DEST_SESSION_TOKEN")
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), default="csv")
@click.option(
    "--template",
    default="default",
    help="key template, or a preset: default ({ai}/{version}/{data_type}/{yyyy}{MM}{dd}/{HH}/"
    "r{revision}/) or hive (data_type=.../dt=yyyy-MM-dd/hour=HH/revision=N/)",
)
@click.option("--types", default=None, help="data types, comma-separated (default: all)")
@click.option("--versions", default="v2", help="v2, v1 or v2,v1 (default v2)")
@click.option("--start", default=None, help="Beijing yyyyMMddHH to deliver from (default now)")
@click.pass_context
@user_errors
def destination_add(ctx: click.Context, /, home: Path | None, **o: Any) -> None:
    """Add a destination; hours from --start on are delivered (a backfill when in the past).
    Prints it as JSON, without its credentials (never shown again)."""
    if (o["s3_url"] is None) == (o["dir_path"] is None):
        raise OpsError("give one of --s3 s3://bucket/prefix and --dir /path")
    services = open_services(settings_from(ctx, home=home))
    try:
        project = need_project(services, o["ai"])
        kind = "s3" if o["s3_url"] else "dir"
        creds = {k: o[k] for k in ("access_key_id", "secret_access_key", "session_token") if o[k]}
        if kind == "s3" and bool(creds.get("access_key_id")) != bool(
            creds.get("secret_access_key")
        ):
            raise OpsError("give both --access-key-id and --secret-access-key, or neither")
        now = now_ms()
        dest = add_destination(
            services.catalog,
            services.box,
            project.id,
            o["name"],
            kind=kind,
            location=o["s3_url"] or o["dir_path"],
            format=o["fmt"],
            template=o["template"],
            versions=tuple(v.strip() for v in o["versions"].split(",") if v.strip()),
            data_types=[t.strip() for t in o["types"].split(",")] if o["types"] else None,
            endpoint_url=o["endpoint_url"],
            region=o["region"],
            credentials=creds or None,
            start_hour_ms=parse_hour_arg(o["start"]) if o["start"] else hour_floor(now),
            now=now,
        )
        echo_json(describe(dest, services.catalog))
    finally:
        services.close()


@destination.command("list")
@home_option
@click.option("--project", "ai", default=None, help="project ai (default: all)")
@click.pass_context
@user_errors
def destination_list(ctx: click.Context, home: Path | None, ai: str | None) -> None:
    """Destinations as JSON: state, why paused, last delivered hour, lag, failures."""
    services = open_services(settings_from(ctx, home=home))
    try:
        project_id = need_project(services, ai).id if ai else None
        echo_json(
            [describe(d, services.catalog) for d in services.catalog.destinations(project_id)]
        )
    finally:
        services.close()


@destination.command("test")
@_one_destination
def destination_test(ctx: click.Context, home: Path | None, ai: str, name: str) -> None:
    """Write, read back and delete a probe object at the destination."""
    services = open_services(settings_from(ctx, home=home))
    try:
        dest = _destination(services, ai, name)
        try:
            said = probe(target_of(dest, services.box))
        except Exception as e:
            raise OpsError(f"destination {name} failed its test: {type(e).__name__}: {e}") from None
        echo_json({"name": name, "ok": True, "probe": said})
    finally:
        services.close()


def _set_state(ctx: click.Context, home: Path | None, ai: str, name: str, pause: bool) -> None:
    services = open_services(settings_from(ctx, home=home))
    try:
        dest = _destination(services, ai, name)
        if pause:
            services.catalog.pause_destination(dest.id, "paused by the operator", now_ms())
        else:
            services.catalog.resume_destination(dest.id, now_ms())
        changed = services.catalog.destination_by_id(dest.id)
        assert changed is not None
        echo_json(describe(changed, services.catalog))
    finally:
        services.close()


@destination.command("pause")
@_one_destination
def destination_pause(ctx: click.Context, home: Path | None, ai: str, name: str) -> None:
    """Stop delivering to a destination (deliveries wait; resume takes them up)."""
    _set_state(ctx, home, ai, name, pause=True)


@destination.command("resume")
@_one_destination
def destination_resume(ctx: click.Context, home: Path | None, ai: str, name: str) -> None:
    """Deliver again (after a pause, its own or an operator's); waiting retries go now."""
    _set_state(ctx, home, ai, name, pause=False)


@destination.command("remove")
@_one_destination
def destination_remove(ctx: click.Context, home: Path | None, ai: str, name: str) -> None:
    """Forget a destination and its deliveries (what it received stays there)."""
    services = open_services(settings_from(ctx, home=home))
    try:
        dest = _destination(services, ai, name)
        services.catalog.delete_destination(dest.id)
        echo_json({"name": name, "removed": True})
    finally:
        services.close()


@click.group()
def deliveries() -> None:
    """Deliveries of hours to destinations: list them, retry them."""


def _row(d: Any, names: dict[int, str]) -> dict[str, Any]:
    from rawexport.timeutil import beijing_hour_label

    return {
        "id": d.id,
        "destination": names.get(d.destination_id, str(d.destination_id)),
        "version": d.version,
        "dataType": d.data_type,
        "hour": beijing_hour_label(d.hour_ms),
        "revision": d.revision,
        "status": d.status,
        "attempts": d.attempts,
        "location": d.location,
        "files": d.files,
        "rows": d.rows,
        "bytes": d.bytes,
        "error": d.error,
        "deliveredMs": d.delivered_ms,
    }


@deliveries.command("list")
@home_option
@click.option("--project", "ai", default=None, help="project ai (default: all)")
@click.option("--status", type=click.Choice(list(DeliveryStatus.ALL)), default=None)
@click.option("--limit", type=int, default=200, show_default=True)
@click.pass_context
@user_errors
def deliveries_list(
    ctx: click.Context, home: Path | None, ai: str | None, status: str | None, limit: int
) -> None:
    """Deliveries as JSON, newest first."""
    services = open_services(settings_from(ctx, home=home))
    try:
        project_id = need_project(services, ai).id if ai else None
        names = {d.id: d.name for d in services.catalog.destinations(project_id)}
        found = services.catalog.deliveries(project_id=project_id, status=status, limit=limit)
        echo_json([_row(d, names) for d in found])
    finally:
        services.close()


@deliveries.command("retry")
@home_option
@click.argument("ids", nargs=-1, type=int)
@click.option("--project", "ai", default=None, help="with --status: every such delivery")
@click.option("--status", type=click.Choice(["retrying", "delivered"]), default=None)
@click.pass_context
@user_errors
def deliveries_retry(
    ctx: click.Context, home: Path | None, ids: tuple[int, ...], ai: str | None, status: str | None
) -> None:
    """Deliver again now: the given ids, or every delivery of --project in --status
    (retrying: do not wait for the backoff; delivered: redeliver)."""
    if bool(ids) == bool(status):
        raise click.ClickException("give delivery ids, or --status (with --project)")
    services = open_services(settings_from(ctx, home=home))
    try:
        chosen = list(ids)
        if status:
            project_id = need_project(services, ai).id if ai else None
            chosen = [
                d.id
                for d in services.catalog.deliveries(
                    project_id=project_id, status=status, limit=100_000
                )
            ]
        echo_json({"queued": services.catalog.redeliver(chosen, now_ms())})
    finally:
        services.close()
