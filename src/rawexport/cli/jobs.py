"""`rawexport jobs list | show`: export jobs, their attempts, rows, bytes and errors."""

from __future__ import annotations

from pathlib import Path

import click

from rawexport.catalog import JobStatus
from rawexport.cli.common import echo_json, home_option, need_project, settings_from, user_errors
from rawexport.export.actions import OpsError, job_row
from rawexport.node import open_services
from rawexport.timeutil import parse_hour_arg, utc


@click.group()
def jobs() -> None:
    """Inspect export jobs."""


@jobs.command("list")
@home_option
@click.option("--project", "ai", default=None, help="project ai")
@click.option(
    "--status",
    type=click.Choice([s.value for s in JobStatus]),
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


jobs.add_command(jobs_show)
