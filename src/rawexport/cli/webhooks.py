"""`rawexport webhook`: signed POSTs of a project's events (Standard Webhooks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from rawexport.catalog.webhooks import Webhook
from rawexport.cli.common import echo_json, home_option, need_project, settings_from, user_errors
from rawexport.export.actions import OpsError
from rawexport.export.webhooks import EVENTS, check_webhook, new_secret
from rawexport.node import open_services
from rawexport.timeutil import now_ms


def _public(hook: Webhook, ai: str) -> dict[str, Any]:
    return {
        "id": hook.id,
        "project": ai,
        "url": hook.url,
        "events": hook.events,
        "lagSeconds": hook.lag_seconds,
        "createdMs": hook.created_ms,
    }


@click.group()
def webhook() -> None:
    """Webhooks: hour.finished, hour.error, delivery.failed, lag.exceeded, signed."""


@webhook.command("add")
@home_option
@click.option("--project", "ai", required=True, help="project ai")
@click.option("--url", required=True, help="where to POST (a Slack incoming webhook works)")
@click.option(
    "--events",
    default="hour.finished,hour.error,delivery.failed",
    show_default=True,
    help=f"comma-separated, of: {', '.join(EVENTS)}",
)
@click.option("--lag-seconds", type=int, default=None, help="lag.exceeded: an hour this late")
@click.pass_context
@user_errors
def webhook_add(
    ctx: click.Context, home: Path | None, ai: str, url: str, events: str, lag_seconds: int | None
) -> None:
    """Add a webhook; prints it with its signing secret, shown this once."""
    chosen = [e.strip() for e in events.split(",") if e.strip()]
    check_webhook(url, chosen, lag_seconds)
    services = open_services(settings_from(ctx, home=home))
    try:
        project = need_project(services, ai)
        secret = new_secret()
        hook = services.catalog.create_webhook(
            project.id, url, services.box.seal(secret), chosen, lag_seconds, now_ms()
        )
        echo_json({**_public(hook, ai), "secret": secret})
    finally:
        services.close()


@webhook.command("list")
@home_option
@click.option("--project", "ai", default=None, help="project ai (default: all)")
@click.option("--attempts", type=int, default=5, help="the last N messages with their attempts")
@click.pass_context
@user_errors
def webhook_list(ctx: click.Context, home: Path | None, ai: str | None, attempts: int) -> None:
    """Webhooks as JSON (no secrets), each with its last messages and their attempts."""
    services = open_services(settings_from(ctx, home=home))
    try:
        project_id = need_project(services, ai).id if ai else None
        ais = {p.id: p.ai for p in services.catalog.projects()}
        out = []
        for hook in services.catalog.webhooks(project_id):
            messages = services.catalog.messages(hook.id, limit=attempts)
            tries = services.catalog.attempts([m.id for m in messages])
            out.append(
                {
                    **_public(hook, ais[hook.project_id]),
                    "messages": [
                        {
                            "id": m.msg_id,
                            "event": m.event,
                            "status": m.status,
                            "attempts": [
                                {
                                    "atMs": a.at_ms,
                                    "statusCode": a.status_code,
                                    "error": a.error,
                                    "ms": a.duration_ms,
                                }
                                for a in tries
                                if a.message_id == m.id
                            ],
                        }
                        for m in messages
                    ],
                }
            )
        echo_json(out)
    finally:
        services.close()


@webhook.command("test")
@home_option
@click.option("--id", "hook_id", type=int, required=True)
@click.pass_context
@user_errors
def webhook_test(ctx: click.Context, home: Path | None, hook_id: int) -> None:
    """Send a `ping` event now; says what the receiver answered (exit 1 unless a 2xx)."""
    services = open_services(settings_from(ctx, home=home))
    try:
        hook = services.catalog.webhook(hook_id)
        if hook is None:
            raise OpsError(f"no webhook {hook_id}")
        sent = services.notifier.ping(hook)
        if not sent.ok:
            said = sent.error or f"answered {sent.status_code}"
            raise OpsError(f"webhook {hook_id} at {hook.url} failed its test: {said}")
        echo_json(
            {"id": hook_id, "ok": True, "statusCode": sent.status_code, "ms": sent.duration_ms}
        )
    finally:
        services.close()


@webhook.command("remove")
@home_option
@click.option("--id", "hook_id", type=int, required=True)
@click.pass_context
@user_errors
def webhook_remove(ctx: click.Context, home: Path | None, hook_id: int) -> None:
    """Forget a webhook and its messages."""
    services = open_services(settings_from(ctx, home=home))
    try:
        if not services.catalog.delete_webhook(hook_id):
            raise OpsError(f"no webhook {hook_id}")
        echo_json({"id": hook_id, "removed": True})
    finally:
        services.close()
