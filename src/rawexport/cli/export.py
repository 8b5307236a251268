"""`rawexport export run | rerun | backfill` and `rawexport sweep`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from rawexport.catalog import JobStatus
from rawexport.cli.common import (
    echo_json,
    home_option,
    need_project,
    settings_from,
    user_errors,
)
from rawexport.export.actions import backfill_hours, day_hours, export_now, reexport
from rawexport.export.retention import sweep as sweep_once
from rawexport.node import open_services
from rawexport.schema import DATA_TYPE_NAMES
from rawexport.timeutil import HOUR_MS, now_ms, parse_day_arg, parse_hour_arg


def _run(ctx: click.Context, home: Path | None, ai: str, hours: list[int], **o: Any) -> None:
    services = open_services(settings_from(ctx, home=home))
    try:
        project = need_project(services, ai)
        report = reexport(
            services.exporter, project, hours, o["data_type"], now_ms(), wait=not o["queue"]
        )
        echo_json(report)
        if any(r["status"] == JobStatus.ERROR for r in report):
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
        hours = day_hours(parse_day_arg(o["day"]))
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
    hours = backfill_hours(parse_hour_arg(o["first"]), parse_hour_arg(o["last"]))
    _run(ctx, home, ai, hours, **o)


@click.command("sweep")
@home_option
@click.pass_context
@user_errors
def sweep(ctx: click.Context, /, home: Path | None) -> None:
    """Delete what is past retention, superseded revisions no link needs any more, orphan
    parts of attempts that never committed, and expired link records."""
    settings = settings_from(ctx, home=home)
    services = open_services(settings)
    try:
        report = sweep_once(
            services.catalog,
            services.store,
            services.blobs,
            now_ms(),
            orphan_age_ms=int(settings.lease_seconds * 1000),
        )
        echo_json(report.as_dict())
    finally:
        services.close()


@click.group()
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
        report = export_now(services.exporter, p, hours, data_type, now)
        echo_json(report)
        if any(r["status"] == JobStatus.ERROR for r in report):
            sys.exit(1)
    finally:
        services.close()


export.add_command(rerun)
export.add_command(backfill)
