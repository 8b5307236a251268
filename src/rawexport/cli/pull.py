"""`rawexport pull`: credentials from flags, env or a profile; progress; distinct exit codes."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import tomllib
from pathlib import Path
from typing import Any

import click
import httpx

from rawexport.client.client import GROWINGIO_URL, ClientError, DownloadError, ExportClient
from rawexport.client.pull import Part, PullOptions
from rawexport.client.pull import pull as run_pull
from rawexport.schema import DATA_TYPE_NAMES
from rawexport.timeutil import BadDate, parse_export_date

CREDENTIAL_FIELDS = ("base_url", "ai", "project_uid", "public_key", "private_key", "token")
ENV_PREFIX = "RAWEXPORT_CLIENT_"
EXIT_LOAD = 1


def config_path() -> Path:
    raw = os.environ.get(ENV_PREFIX + "CONFIG")
    return Path(raw) if raw else Path.home() / ".config" / "rawexport" / "client.toml"


def credentials(profile: str | None, flags: dict[str, str | None]) -> dict[str, str]:
    """Flags over RAWEXPORT_CLIENT_* env vars over the profile's [profiles.NAME] section."""
    values: dict[str, str] = {}
    if profile is not None:
        path = config_path()
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise click.UsageError(f"cannot read profile file {path}: {e}") from None
        section = data.get("profiles", {}).get(profile)
        if not isinstance(section, dict):
            raise click.UsageError(f"no [profiles.{profile}] in {path}")
        unknown = set(section) - set(CREDENTIAL_FIELDS)
        if unknown:
            raise click.UsageError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
        values.update({k: str(v) for k, v in section.items()})
    for name in CREDENTIAL_FIELDS:
        raw = os.environ.get(ENV_PREFIX + name.upper())
        if raw:
            values[name] = raw
    values.update({k: v for k, v in flags.items() if v})
    values.setdefault("base_url", GROWINGIO_URL)
    if not values.get("ai"):
        raise click.UsageError("no project ai: give --ai, RAWEXPORT_CLIENT_AI or a profile")
    keys = [values.get(k) for k in ("project_uid", "public_key", "private_key")]
    if not values.get("token") and not all(keys):
        raise click.UsageError(
            "no credentials: give --token, or --project-uid, --public-key and --private-key"
        )
    return values


class LogProgress:
    """Plain lines on stderr: one per part, for logs and pipes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.parts = self.done = 0

    def start(self, parts: int, total_bytes: int | None) -> None:
        self.parts = parts
        size = f", {total_bytes} bytes" if total_bytes is not None else ""
        click.echo(f"pull: {parts} parts{size}", err=True)

    def advance(self, nbytes: int) -> None:
        pass

    def part_done(self, part: Part, skipped: bool) -> None:
        what = "already verified" if skipped else "verified"
        with self._lock:
            self.done += 1
            click.echo(
                f"pull: [{self.done}/{self.parts}] {part.data_type} {part.hour} "
                f"part {part.number:05d} {what}",
                err=True,
            )


class RichProgress:
    """A rich progress bar on a terminal: bytes, parts, rate."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.bar = Progress(
            TextColumn("{task.fields[parts]}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self.task = self.bar.add_task("pull", total=None, parts="parts 0/0")
        self._lock = threading.Lock()
        self.parts = self.done = 0

    def start(self, parts: int, total_bytes: int | None) -> None:
        self.parts = parts
        self.bar.update(self.task, total=total_bytes, parts=f"parts 0/{parts}")
        self.bar.start()

    def advance(self, nbytes: int) -> None:
        self.bar.advance(self.task, nbytes)

    def part_done(self, part: Part, skipped: bool) -> None:
        with self._lock:
            self.done += 1
            self.bar.update(self.task, parts=f"parts {self.done}/{self.parts}")

    def stop(self) -> None:
        self.bar.stop()


@click.command("pull")
@click.option("--type", "export_type", type=click.Choice(["hour", "day"]), required=True)
@click.option(
    "--data-type", type=click.Choice([*DATA_TYPE_NAMES, "all"]), default="all", show_default=True
)
@click.option("--date", "export_date", required=True, help="Beijing yyyyMMdd (day) or yyyyMMddHH")
@click.option(
    "--version",
    "api_version",
    type=click.Choice(["v2", "v1"]),
    default="v2",
    show_default=True,
    help="v1: the /insights/{ai}/{date}.json export (all 7 v1 types; --data-type is ignored)",
)
@click.option(
    "--to",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("gio-data"),
    show_default=True,
    help="download directory",
)
@click.option("--parquet", is_flag=True, help="also write TO/parquet/{data_type}/{date}.parquet")
@click.option(
    "--duckdb",
    "duckdb_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="load into this DuckDB file, one table per data type (replacing the pulled hours)",
)
@click.option("--wait", type=click.FloatRange(0), default=0.0, help="seconds to wait on RUNNING")
@click.option("--jobs", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option(
    "--expire", type=click.IntRange(1, 10080), default=60, show_default=True, help="link minutes"
)
@click.option("--profile", default=None, help="[profiles.NAME] of the client TOML file")
@click.option("--base-url", default=None, help=f"API host (default {GROWINGIO_URL})")
@click.option("--ai", default=None, help="project ai (env RAWEXPORT_CLIENT_AI)")
@click.option("--project-uid", default=None, help="project UID, for the HMAC flow")
@click.option("--public-key", default=None, help="X-Client-Id, for the HMAC flow")
@click.option("--private-key", default=None, help="HMAC key (env RAWEXPORT_CLIENT_PRIVATE_KEY)")
@click.option("--token", default=None, help="static API token (env RAWEXPORT_CLIENT_TOKEN)")
def pull(
    export_type: str,
    data_type: str,
    export_date: str,
    api_version: str,
    to: Path,
    parquet: bool,
    duckdb_file: Path | None,
    wait: float,
    jobs: int,
    expire: int,
    profile: str | None,
    **flags: str | None,
) -> None:
    """Download an export, verified, into TO/{data_type}/{yyyyMMdd}/{HH}/ (Beijing time).

    Exit codes: 0 ok, 1 API unreachable or load failed, 2 usage, 3 auth refused,
    4 NOT_EXISTS, 5 export ERROR, 6 download/verification failed, 7 still RUNNING.
    """
    want = 8 if export_type == "day" else 10
    try:
        if len(export_date) != want:
            raise BadDate(export_date)
        parse_export_date(export_type, export_date)
    except BadDate:
        raise click.BadParameter(f"{export_type} needs a {want}-digit Beijing date") from None
    if api_version == "v1" and (parquet or duckdb_file is not None):
        raise click.BadParameter(
            "--parquet and --duckdb load v2 exports only", param_hint="--version"
        )
    creds = credentials(profile, flags)
    logging.basicConfig(level=logging.WARNING, format="pull: %(message)s", stream=sys.stderr)
    logging.getLogger("rawexport.pull").setLevel(logging.INFO)
    client = ExportClient(
        creds["base_url"],
        creds["ai"],
        creds.get("project_uid"),
        creds.get("public_key"),
        creds.get("private_key"),
        token=creds.get("token"),
    )
    progress: LogProgress | RichProgress = RichProgress() if sys.stderr.isatty() else LogProgress()
    wanted = None if data_type == "all" else data_type
    try:
        result = run_pull(
            client,
            export_type,
            wanted,
            export_date,
            to,
            expire=expire,
            wait=wait,
            options=PullOptions(jobs=jobs),
            progress=progress,
            version=api_version,
        )
    except ClientError as e:
        click.echo(f"rawexport pull: {e}", err=True)
        sys.exit(e.exit_code)
    except (httpx.HTTPError, OSError) as e:
        click.echo(f"rawexport pull: download failed: {e}", err=True)
        sys.exit(DownloadError.exit_code)
    finally:
        if isinstance(progress, RichProgress):
            progress.stop()
        client.close()
    summary: dict[str, Any] = {
        "to": str(to),
        "downloaded_bytes": result.downloaded_bytes,
        "skipped_parts": result.skipped,
        "types": {
            t: {"parts": len(files), "rows": result.rows(t)} for t, files in result.files.items()
        },
    }
    try:
        if parquet:
            from rawexport.client.load import to_parquet

            for t, (path, rows) in to_parquet(result.files, to / "parquet", export_date).items():
                summary["types"][t] |= {"parquet": str(path), "parquet_rows": rows}
        if duckdb_file is not None:
            from rawexport.client.load import to_duckdb

            for t, rows in to_duckdb(result.files, duckdb_file, result.hours).items():
                summary["types"][t]["duckdb_rows"] = rows
    except Exception as e:  # duckdb raises many error classes; all end the same way
        click.echo(f"rawexport pull: loading failed: {e}", err=True)
        sys.exit(EXIT_LOAD)
    click.echo(json.dumps(summary, indent=2))
