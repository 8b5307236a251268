"""Operator commands: `export rerun`, `export backfill`, `jobs show`, `sweep`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from rawexport.clikit import (
    echo_json,
    home_option,
    need_project,
    settings_from,
    user_errors,
)
from rawexport.ops import OpsError, job_row, reexport
from rawexport.retention import sweep as sweep_once
from rawexport.schema import DATA_TYPE_NAMES
from rawexport.services import open_services
from rawexport.timeutil import HOUR_MS, now_ms, parse_day_arg, parse_hour_arg, utc


def _run(ctx: click.Context, home: Path | None, ai: str, hours: list[int], **o: Any) -> None:
    services = open_services(settings_from(ctx, home=home))
    try:
        project = need_project(services, ai)
        report = reexport(services, project, hours, o["data_type"], now_ms(), wait=not o["queue"])
        echo_json(report)
        if any(r["status"] == "error" for r in report):
            sys.exit(1)
    finally:
        services.close()


def _common(f: Any) -> Any:
    f = click.option("--queue", is_flag=True, help="only queue; `serve`'s workers run it")(f)
    f = click.option("--data-type", type=click.Choice(DATA_TYPE_NAMES), default=None)(f)
    return click.option("--project", "ai", required=True, help="project ai")(f)


@click.command("rerun")
@home_option
@_common
@click.option("--hour", default=None, help="Beijing hour yyyyMMddHH")
@click.option("--day", default=None, help="Beijing day yyyyMMdd (its 24 hours)")
@click.pass_context
@user_errors
def rerun(ctx: click.Context, /, home: Path | None, ai: str, **o: Any) -> None:
    """Export closed hours again as a new revision; links switch once it is complete."""
    if (o["hour"] is None) == (o["day"] is None):
        raise click.UsageError("give exactly one of --hour or --day")
    if o["hour"] is not None:
        hours = [parse_hour_arg(o["hour"])]
    else:
        start = parse_day_arg(o["day"])
        hours = list(range(start, start + 24 * HOUR_MS, HOUR_MS))
    _run(ctx, home, ai, hours, **o)


@click.command("backfill")
@home_option
@_common
@click.option("--from", "first", required=True, help="first Beijing hour yyyyMMddHH")
@click.option("--to", "last", required=True, help="last Beijing hour yyyyMMddHH (included)")
@click.pass_context
@user_errors
def backfill(ctx: click.Context, /, home: Path | None, ai: str, **o: Any) -> None:
    """Export a range of closed hours as new revisions (after an import, say)."""
    first, last = parse_hour_arg(o["first"]), parse_hour_arg(o["last"])
    if last < first:
        raise OpsError("--to is before --from")
    if (last - first) // HOUR_MS >= 24 * 366:
        raise OpsError("a backfill covers at most 366 days")
    _run(ctx, home, ai, list(range(first, last + 1, HOUR_MS)), **o)


@click.command("show")
@home_option
@click.argument("job_id", type=int)
@click.pass_context
@user_errors
def jobs_show(ctx: click.Context, /, home: Path | None, job_id: int) -> None:
    """One job with its timings and files, as JSON."""
    services = open_services(settings_from(ctx, home=home))
    try:
        try:
            job = services.catalog.job(job_id)
        except Exception:
            raise OpsError(f"no job {job_id}") from None
        project = services.catalog.project_by_id(job.project_id)
        row = job_row(job)
        row.update(
            {
                "ai": project.ai,
                "hour_utc": utc(job.hour_ms).strftime("%Y%m%d%H"),
                "created_ms": job.created_ms,
                "started_ms": job.started_ms,
                "finished_ms": job.finished_ms,
                "next_attempt_ms": job.next_attempt_ms,
                "lease_owner": job.lease_owner,
                "lease_expires_ms": job.lease_expires_ms,
                "prefix": job.prefix,
                "manifest_key": job.manifest_key,
                "files": [f.__dict__ for f in services.catalog.files(job_id)],
            }
        )
        echo_json(row)
    finally:
        services.close()


@click.command("sweep")
@home_option
@click.pass_context
@user_errors
def sweep(ctx: click.Context, /, home: Path | None) -> None:
    """Delete what is past retention and superseded revisions no link needs any more."""
    services = open_services(settings_from(ctx, home=home))
    try:
        report = sweep_once(services.catalog, services.store, services.blobs, now_ms())
        echo_json(report.as_dict())
    finally:
        services.close()
