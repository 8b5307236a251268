"""`rawexport ingest` (event files into a project) and `rawexport generate` (synthetic events)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from rawexport.cli.common import echo_json, home_option, need_project, settings_from, user_errors
from rawexport.demo.generate import generate as gen
from rawexport.ingest.files import BadFile, load_file
from rawexport.ingest.group_commit import commit
from rawexport.node import open_services
from rawexport.schema import DATA_TYPE_NAMES, DATA_TYPES
from rawexport.settings import SettingsError, load_settings
from rawexport.timeutil import now_ms, parse_hour_arg


@click.command()
@click.option(
    "--home",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="data directory (env RAWEXPORT_HOME, default ./rawexport-data)",
)
@click.option("--project", "ai", required=True, help="project ai")
@click.option("--data-type", type=click.Choice(list(DATA_TYPES)), default=None)
@click.option(
    "--keep-send-time", is_flag=True, help="keep the files' sendTime (backfill into past hours)"
)
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.pass_context
def ingest(
    ctx: click.Context,
    home: Path | None,
    ai: str,
    data_type: str | None,
    keep_send_time: bool,
    files: tuple[Path, ...],
) -> None:
    """Import event files: NDJSON (native events), Parquet or GrowingIO CSV(.gz) parts.

    Without --keep-send-time every row gets now as sendTime, like a live event. With it,
    rows land in their own hours, and hours already exported are exported again.
    """
    overrides = dict(ctx.obj or {}) | ({"home": home} if home else {})
    try:
        services = open_services(load_settings(overrides))
    except SettingsError as e:
        raise click.ClickException(str(e)) from None
    started = time.perf_counter()
    summary: dict[str, Any] = {"ai": ai, "files": 0, "rows": {}}
    try:
        project = services.catalog.project(ai)
        if project is None:
            raise click.ClickException(f"no project with ai {ai!r} in {services.settings.home}")
        for path in files:
            if not path.is_file():
                raise click.ClickException(f"{path}: no such file")
            now = now_ms()
            try:
                tables = load_file(path, data_type, None if keep_send_time else now)
            except BadFile as e:
                raise click.ClickException(str(e)) from None
            commit(services.store, services.catalog, project.id, ai, tables, now)
            summary["files"] += 1
            for t, table in tables.items():
                summary["rows"][t] = summary["rows"].get(t, 0) + table.num_rows
    finally:
        services.close()
    summary["total"] = sum(summary["rows"].values())
    summary["seconds"] = round(time.perf_counter() - started, 3)
    click.echo(json.dumps(summary, ensure_ascii=False))


@click.command()
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
