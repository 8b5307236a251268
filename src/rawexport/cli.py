"""The `rawexport` command: serve, demo, project, key, token, generate, export, jobs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from rawexport.clikit import echo_json, home_option, need_project, settings_from, user_errors
from rawexport.export_cli import backfill, jobs_show, rerun, sweep
from rawexport.ingest_cli import ingest
from rawexport.logs import setup_logging
from rawexport.ops import export_now, job_row
from rawexport.pull_cli import pull
from rawexport.schema import DATA_TYPE_NAMES
from rawexport.services import open_services
from rawexport.settings import Settings
from rawexport.timeutil import (
    HOUR_MS,
    now_ms,
    parse_day_arg,
    parse_hour_arg,
    utc,
)


@click.group()
@click.version_option(package_name="rawexport")
@home_option
@click.pass_context
def main(ctx: click.Context, home: Path | None) -> None:
    """rawexport: a self-hostable, GrowingIO-compatible raw-data export service."""
    ctx.obj = {"home": home} if home else {}


@main.command()
@home_option
@click.option("--host", default=None, help="bind address (env RAWEXPORT_HOST)")
@click.option("--port", type=int, default=None, help="port (env RAWEXPORT_PORT)")
@click.option("--public-url", default=None, help="base URL of links (env RAWEXPORT_PUBLIC_URL)")
@click.option("--workers", type=int, default=None, help="export jobs run at once")
@click.pass_context
@user_errors
def serve(ctx: click.Context, /, **opts: Any) -> None:
    """Run the API, the scheduler and the export workers."""
    settings = settings_from(ctx, **opts)
    run_server(settings)


def run_server(settings: Settings) -> None:
    import uvicorn

    from rawexport.api import create_app
    from rawexport.compaction import Compactor
    from rawexport.retention import Sweeper
    from rawexport.scheduler import Scheduler
    from rawexport.worker import WorkerPool

    setup_logging(settings.log_level)
    services = open_services(settings)
    scheduler = Scheduler(services.catalog, settings)
    compactor = Compactor(services.store, settings)
    sweeper = Sweeper(services.catalog, services.store, services.blobs, settings.sweep_interval)
    pool = WorkerPool(services.exporter, settings.workers)
    app = create_app(settings, services.catalog, services.blobs, metrics=services.metrics)
    scheduler.start()
    compactor.start()
    sweeper.start()
    pool.start()
    try:
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level.lower(),
            access_log=False,  # RequestMetrics writes one JSON line per request instead
            log_config=None,
        )
    finally:
        scheduler.stop()
        compactor.stop()
        sweeper.stop()
        pool.stop()
        services.close()


@main.command()
@home_option
@click.option("--port", type=int, default=None, help="port to serve on (default 8080)")
@click.option("--host", default=None, help="bind address (default 127.0.0.1)")
@click.option("--events-per-hour", type=int, default=20_000, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--no-serve", is_flag=True, help="set up and export, then exit")
@click.pass_context
@user_errors
def demo(
    ctx: click.Context,
    home: Path | None,
    port: int | None,
    host: str | None,
    events_per_hour: int,
    seed: int,
    no_serve: bool,
) -> None:
    """Create a demo project with a day of events, export it, print how to call it, serve."""
    from rawexport.demo import setup_demo, usage_text

    settings = settings_from(ctx, home=home, port=port, host=host)
    services = open_services(settings)
    try:
        click.echo(f"setting up the demo in {settings.home} ...", err=True)
        creds = setup_demo(services, now_ms(), events_per_hour=events_per_hour, seed=seed)
    finally:
        services.close()
    click.echo(usage_text(creds, str(settings.home)))
    sys.stdout.flush()
    if not no_serve:
        run_server(settings)


@main.group()
def project() -> None:
    """Create, list and configure projects."""


@project.command("create")
@home_option
@click.option("--name", required=True)
@click.option("--ai", default=None, help="project id (default: 16 random hex)")
@click.option("--uid", default=None, help="project UID (default: 8 random alphanumerics)")
@click.option("--export-since", default=None, help="Beijing yyyyMMddHH export starts (default now)")
@click.option("--retention-days", type=int, default=None)
@click.option("--no-export", is_flag=True, help="create with export disabled")
@click.option("--no-v1", is_flag=True, help="do not produce v1 files")
@click.pass_context
@user_errors
def project_create(ctx: click.Context, /, home: Path | None, **o: Any) -> None:
    """Create a project; prints its ai and uid as JSON."""
    settings = settings_from(ctx, home=home)
    since = parse_hour_arg(o["export_since"]) if o["export_since"] else None
    services = open_services(settings)
    try:
        p = services.catalog.create_project(
            o["name"],
            ai=o["ai"],
            uid=o["uid"],
            export_enabled=not o["no_export"],
            export_since_ms=since,
            retention_days=o["retention_days"] or settings.retention_days,
            v1_enabled=not o["no_v1"],
        )
        echo_json(p.public())
    finally:
        services.close()


@project.command("list")
@home_option
@click.pass_context
@user_errors
def project_list(ctx: click.Context, home: Path | None) -> None:
    """List projects as JSON."""
    services = open_services(settings_from(ctx, home=home))
    try:
        echo_json([p.public() for p in services.catalog.projects()])
    finally:
        services.close()


def _set_export(
    ctx: click.Context, home: Path | None, ai: str, on: bool, since: str | None
) -> None:
    services = open_services(settings_from(ctx, home=home))
    try:
        need_project(services, ai)
        since_ms = parse_hour_arg(since) if since else None
        echo_json(services.catalog.set_export(ai, on, since_ms).public())
    finally:
        services.close()


@project.command("enable-export")
@home_option
@click.option("--project", "ai", required=True, help="project ai")
@click.option("--since", default=None, help="Beijing yyyyMMddHH export starts (default now)")
@click.pass_context
@user_errors
def project_enable(ctx: click.Context, home: Path | None, ai: str, since: str | None) -> None:
    """Turn export on."""
    _set_export(ctx, home, ai, True, since)


@project.command("disable-export")
@home_option
@click.option("--project", "ai", required=True, help="project ai")
@click.pass_context
@user_errors
def project_disable(ctx: click.Context, home: Path | None, ai: str) -> None:
    """Turn export off: the API answers NOT_EXISTS and nothing new is exported."""
    _set_export(ctx, home, ai, False, None)


@main.group()
def key() -> None:
    """Public/private key pairs (X-Client-Id and the HMAC key)."""


@key.command("create")
@home_option
@click.option("--project", "ai", required=True, help="project ai")
@click.pass_context
@user_errors
def key_create(ctx: click.Context, home: Path | None, ai: str) -> None:
    """Create a key pair; the private key is shown only this once."""
    services = open_services(settings_from(ctx, home=home))
    try:
        p = need_project(services, ai)
        kp = services.catalog.create_key_pair(p.id)
        echo_json({"ai": p.ai, "public_key": kp.public_key, "private_key": kp.private_key})
    finally:
        services.close()


@main.group()
def token() -> None:
    """Static API tokens (work alone in Authorization)."""


@token.command("create")
@home_option
@click.option("--project", "ai", required=True, help="project ai")
@click.option("--description", default="", help="what the token is for")
@click.pass_context
@user_errors
def token_create(ctx: click.Context, home: Path | None, ai: str, description: str) -> None:
    """Create an API token; it is shown only this once."""
    services = open_services(settings_from(ctx, home=home))
    try:
        p = need_project(services, ai)
        echo_json({"ai": p.ai, "token": services.catalog.create_api_token(p.id, description)})
    finally:
        services.close()


@main.command()
@home_option
@click.option("--project", "ai", required=True, help="project ai")
@click.option("--start", required=True, help="first Beijing hour, yyyyMMddHH")
@click.option("--hours", type=click.IntRange(1, 24 * 31), default=1, show_default=True)
@click.option("--events-per-hour", type=click.IntRange(1), default=20_000, show_default=True)
@click.option("--data-type", type=click.Choice(DATA_TYPE_NAMES), default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@click.pass_context
@user_errors
def generate(ctx: click.Context, /, home: Path | None, ai: str, **o: Any) -> None:
    """Write synthetic events whose sendTime falls in the given Beijing hours."""
    from rawexport.generate import generate as gen

    start = parse_hour_arg(o["start"])
    services = open_services(settings_from(ctx, home=home))
    try:
        need_project(services, ai)
        types = [o["data_type"]] if o["data_type"] else None
        counts = gen(
            services.store, ai, start, o["hours"], o["events_per_hour"], types, seed=o["seed"]
        )
        echo_json({"ai": ai, "rows": counts, "total": sum(counts.values())})
    finally:
        services.close()


@main.group()
def export() -> None:
    """Run exports by hand."""


@export.command("run")
@home_option
@click.option("--project", "ai", required=True, help="project ai")
@click.option("--hour", default=None, help="Beijing hour yyyyMMddHH")
@click.option("--day", default=None, help="Beijing day yyyyMMdd (its 24 hours)")
@click.option("--data-type", type=click.Choice(DATA_TYPE_NAMES), default=None)
@click.pass_context
@user_errors
def export_run(
    ctx: click.Context,
    home: Path | None,
    ai: str,
    hour: str | None,
    day: str | None,
    data_type: str | None,
) -> None:
    """Export an hour or a day now, synchronously; prints one JSON row per file set."""
    if (hour is None) == (day is None):
        raise click.UsageError("give exactly one of --hour or --day")
    now = now_ms()
    if hour is not None:
        hours = [parse_hour_arg(hour)]
    else:
        start = parse_day_arg(str(day))
        hours = [h for h in range(start, start + 24 * HOUR_MS, HOUR_MS) if h <= now]
    services = open_services(settings_from(ctx, home=home))
    try:
        p = need_project(services, ai)
        report = export_now(services, p, hours, data_type, now)
        echo_json(report)
        if any(r["status"] == "error" for r in report):
            sys.exit(1)
    finally:
        services.close()


@main.group()
def jobs() -> None:
    """Inspect export jobs."""


@jobs.command("list")
@home_option
@click.option("--project", "ai", default=None, help="project ai")
@click.option(
    "--status",
    type=click.Choice(["queued", "running", "retrying", "finished", "error", "superseded"]),
    default=None,
)
@click.option("--since", default=None, help="first Beijing hour yyyyMMddHH")
@click.option("--limit", type=int, default=1000, show_default=True)
@click.pass_context
@user_errors
def jobs_list(
    ctx: click.Context,
    home: Path | None,
    ai: str | None,
    status: str | None,
    since: str | None,
    limit: int,
) -> None:
    """List export jobs as JSON: status, attempts, rows, bytes, errors."""
    since_ms = parse_hour_arg(since) if since else None
    services = open_services(settings_from(ctx, home=home))
    try:
        pid = need_project(services, ai).id if ai else None
        rows = [
            {**job_row(j), "hour_utc": utc(j.hour_ms).strftime("%Y%m%d%H")}
            for j in services.catalog.jobs(pid, status, since_ms, limit)
        ]
        echo_json(rows)
    finally:
        services.close()


export.add_command(rerun)
export.add_command(backfill)
jobs.add_command(jobs_show)
main.add_command(sweep)
main.add_command(ingest)
main.add_command(pull)

if __name__ == "__main__":
    main()
