"""The `rawexport` command group; each command group lives in its own module here."""

from __future__ import annotations

from pathlib import Path

import click

from rawexport.cli.check import check
from rawexport.cli.common import home_option
from rawexport.cli.delivery import deliveries, destination
from rawexport.cli.demo import demo
from rawexport.cli.export import export, sweep
from rawexport.cli.ingest import generate, ingest
from rawexport.cli.jobs import jobs
from rawexport.cli.projects import key, project, token
from rawexport.cli.pull import pull
from rawexport.cli.serve import serve
from rawexport.cli.webhooks import webhook


@click.group()
@click.version_option(package_name="rawexport")
@home_option
@click.pass_context
def main(ctx: click.Context, home: Path | None) -> None:
    """rawexport: a self-hostable, GrowingIO-compatible raw-data export service."""
    ctx.obj = {"home": home} if home else {}


main.add_command(serve)
main.add_command(demo)
main.add_command(project)
main.add_command(key)
main.add_command(token)
main.add_command(generate)
main.add_command(ingest)
main.add_command(export)
main.add_command(jobs)
main.add_command(sweep)
main.add_command(pull)
main.add_command(check)
main.add_command(destination)
main.add_command(deliveries)
main.add_command(webhook)
