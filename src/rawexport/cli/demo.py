"""`rawexport demo`: a project, credentials, a day of synthetic events, exported."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from secrets import token_urlsafe
from typing import Any

import click

from rawexport.cli.common import home_option, settings_from, user_errors
from rawexport.cli.serve import run_server
from rawexport.demo.generate import generate
from rawexport.export.actions import drain_parallel
from rawexport.export.scheduler import plan_due
from rawexport.fsutil import write_private
from rawexport.node import Services, open_services
from rawexport.timeutil import DAY_MS, HOUR_MS, beijing, beijing_day_start, hour_floor, now_ms

CREDENTIALS_FILE = "demo-credentials.json"


def setup_demo(
    services: Services, now: int, events_per_hour: int = 20_000, seed: int = 1
) -> dict[str, Any]:
    """Create (or reuse) the demo project, fill the previous Beijing day and today's closed
    hours with events, export every due hour, and write demo-credentials.json."""
    settings, catalog = services.settings, services.catalog
    cred_path = settings.home / CREDENTIALS_FILE
    creds: dict[str, Any] | None = None
    if cred_path.is_file():
        saved = json.loads(cred_path.read_text(encoding="utf-8"))
        if catalog.project(saved.get("ai", "")) is not None:
            creds = saved
    first_hour = beijing_day_start(now) - DAY_MS
    last_hour = hour_floor(now)  # exclusive: the open hour is not generated
    if creds is None:
        project = catalog.create_project("demo", export_since_ms=first_hour)
        key = catalog.create_key_pair(project.id)
        token = catalog.create_api_token(project.id, "demo")
        creds = {
            "base_url": settings.base_url,
            "ai": project.ai,
            "project_uid": project.uid,
            "public_key": key.public_key,
            "private_key": key.private_key,
            "api_token": token,
            "generated_until_ms": first_hour,
        }
    start = max(first_hour, int(creds.get("generated_until_ms", first_hour)))
    hours = (last_hour - start) // HOUR_MS
    if hours > 0:
        generate(services.store, creds["ai"], start, hours, events_per_hour, seed=seed + start)
    creds["generated_until_ms"] = max(start, last_hour)
    # The console's operator sign-in: the admin_token setting, else one made for the demo.
    creds["admin_token"] = settings.admin_token or creds.get("admin_token") or token_urlsafe(24)
    creds["base_url"] = settings.base_url
    creds["example_day"] = beijing(first_hour).strftime("%Y%m%d")
    write_private(cred_path, (json.dumps(creds, indent=2) + "\n").encode())  # holds secrets
    plan_due(catalog, settings.replace(grace_seconds=0), now)
    drain_parallel(services.exporter, settings.workers)
    return creds


def usage_text(creds: dict[str, Any], home: str) -> str:
    base, ai, uid = creds["base_url"], creds["ai"], creds["project_uid"]
    pub, priv, token, day = (
        creds["public_key"],
        creds["private_key"],
        creds["api_token"],
        creds["example_day"],
    )
    q = shlex.quote
    return f"""
rawexport demo is ready.
  base URL     {base}
  ai           {ai}
  project UID  {uid}
  public key   {pub}   (X-Client-Id)
  private key  {priv}
  API token    {token}
  (saved in {home}/{CREDENTIALS_FILE})

GrowingIO's flow with curl (HMAC auth code, then the day's links for `page`):
  TM=$(($(date +%s)*1000))
  AUTH=$(printf 'POST\\n/auth/token\\nproject={uid}&ai={ai}&tm=%s' "$TM" \\
         | openssl dgst -sha256 -hmac {q(priv)} | sed 's/^.* //')
  CODE=$(curl -s -X POST -H 'X-Client-Id: {pub}' -H 'Content-Type: text/plain' \\
         --data "project={uid}&ai={ai}&tm=$TM&auth=$AUTH" {base}/auth/token \\
         | python3 -c 'import json,sys; print(json.load(sys.stdin)["code"])')
  curl -s -H 'X-Client-Id: {pub}' -H "Authorization: $CODE" \\
       '{base}/v2/insights/day/page/{ai}/{day}.json?expire=60'

The console (a browser): {base}/console
  operator sign-in  {creds["admin_token"]}   (admin token: every project, every action)
  project sign-in   the API token above      (this project only, read only)

With the static API token:
  curl -s -H 'Authorization: {token}' '{base}/v2/insights/day/{ai}/{day}.json?expire=60'

Pull the whole day, verified, into Parquet and DuckDB (from the repo: .venv/bin/rawexport):
  rawexport pull --base-url {base} --ai {ai} --token {token} \\
       --type day --date {day} --to gio-data --parquet --duckdb gio.duckdb
"""


@click.command()
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
        run_server(settings.replace(admin_token=creds["admin_token"]))
