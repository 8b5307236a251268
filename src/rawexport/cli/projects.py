"""`rawexport project | key | token`: projects, key pairs and API tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from rawexport.cli.common import echo_json, home_option, need_project, settings_from, user_errors
from rawexport.export.actions import OpsError
from rawexport.node import open_services
from rawexport.timeutil import parse_hour_arg


@click.group()
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


@project.command("set-retention")
@home_option
@click.option("--project", "ai", required=True, help="project ai")
@click.option("--days", type=int, required=True, help="days exports are kept (1..3650)")
@click.pass_context
@user_errors
def project_set_retention(ctx: click.Context, home: Path | None, ai: str, days: int) -> None:
    """Keep the project's exports this many days; older hours answer NOT_EXISTS and are swept."""
    services = open_services(settings_from(ctx, home=home))
    try:
        need_project(services, ai)
        echo_json(services.catalog.set_retention(ai, days).public())
    finally:
        services.close()


def _list_credentials(ctx: click.Context, home: Path | None, ai: str, kind: str) -> None:
    services = open_services(settings_from(ctx, home=home))
    try:
        p = need_project(services, ai)
        echo_json(
            [
                {"id": c.id, "label": c.label, "description": c.description,
                 "created_ms": c.created_ms, "revoked": c.revoked}
                for c in services.catalog.credentials(p.id)
                if c.kind == kind
            ]
        )  # fmt: skip
    finally:
        services.close()


@click.group()
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


@key.command("list")
@home_option
@click.option("--project", "ai", required=True, help="project ai")
@click.pass_context
@user_errors
def key_list(ctx: click.Context, home: Path | None, ai: str) -> None:
    """The project's key pairs (public keys only), revoked ones included."""
    _list_credentials(ctx, home, ai, "key")


@click.group()
def token() -> None:
    """Static API tokens (work alone in Authorization)."""


@token.command("list")
@home_option
@click.option("--project", "ai", required=True, help="project ai")
@click.pass_context
@user_errors
def token_list(ctx: click.Context, home: Path | None, ai: str) -> None:
    """The project's API tokens (masked, with their ids), revoked ones included."""
    _list_credentials(ctx, home, ai, "token")


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


def _revoke(ctx: click.Context, home: Path | None, action: Any, what: str) -> Any:
    services = open_services(settings_from(ctx, home=home))
    try:
        result = action(services.catalog)
    finally:
        services.close()
    if result is None or result is False:
        raise OpsError(f"no such {what}")
    return result


@key.command("revoke")
@home_option
@click.option("--public-key", required=True, help="the key's public key (X-Client-Id)")
@click.pass_context
@user_errors
def key_revoke(ctx: click.Context, home: Path | None, public_key: str) -> None:
    """Revoke a key pair: it signs no more codes and its codes stop working."""
    _revoke(ctx, home, lambda c: c.revoke_key_pair(public_key), "key")
    echo_json({"public_key": public_key, "revoked": True})


@key.command("revoke-codes")
@home_option
@click.option("--public-key", required=True, help="the key's public key (X-Client-Id)")
@click.pass_context
@user_errors
def key_revoke_codes(ctx: click.Context, home: Path | None, public_key: str) -> None:
    """Revoke every auth code of a key (the key stays: it can sign new ones)."""
    n = _revoke(ctx, home, lambda c: c.revoke_auth_codes(public_key), "key")
    echo_json({"public_key": public_key, "revoked_codes": n})


@token.command("revoke")
@home_option
@click.option("--token", "value", default=None, help="the API token to revoke")
@click.option("--project", "ai", default=None, help="with --id: the token's project ai")
@click.option("--id", "token_id", type=int, default=None, help="the token's id (`token list`)")
@click.pass_context
@user_errors
def token_revoke(
    ctx: click.Context, home: Path | None, value: str | None, ai: str | None, token_id: int | None
) -> None:
    """Revoke a static API token, by its value or by --project and --id."""
    if value is not None and (ai, token_id) == (None, None):
        _revoke(ctx, home, lambda c: c.revoke_api_token(value), "token")
        echo_json({"token": f"{value[:5]}*{value[-5:]}", "revoked": True})
        return
    if value is not None or ai is None or token_id is None:
        raise click.UsageError("give --token, or --project and --id")

    def by_id(c: Any) -> bool:
        p = c.project(ai)
        return p is not None and bool(c.revoke_api_token_id(p.id, token_id))

    _revoke(ctx, home, by_id, "token")
    echo_json({"project": ai, "id": token_id, "revoked": True})
