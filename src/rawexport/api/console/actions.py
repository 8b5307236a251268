"""The console's operator actions: rerun, backfill, export on/off, retention, new API
token or key pair (shown once), revoke, and push delivery's redeliver, pause and resume
(delivery.py). Each runs the code the CLI runs and is logged as a JSON line;
`Console.action` checks the session, its CSRF token and its turn first.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from rawexport.api.console import delivery
from rawexport.api.console.sessions import Session
from rawexport.api.console.views import Refused
from rawexport.catalog import Project
from rawexport.export.actions import backfill_hours, day_hours, queue_reexport
from rawexport.schema import DATA_TYPE_NAMES
from rawexport.timeutil import beijing_hour_label

if TYPE_CHECKING:
    from rawexport.api.console.routes import Console

log = logging.getLogger("rawexport.console")
ACTIONS = ("rerun", "backfill", "export", "retention", "token", "key", "revoke", *delivery.ACTIONS)


def act(
    c: Console,
    request: Request,
    session: Session,
    name: str,
    project: Project,
    form: dict[str, str],
) -> Response:
    ai, now = project.ai, c.clock()
    back = form.get("back", "")
    if not back.startswith(f"/p/{ai}") or "//" in back or "\\" in back:
        back = f"/p/{ai}"
    if name in delivery.ACTIONS:
        said, done = delivery.act(c, name, project, form)
        log_action(name, session, project, done)
        return c.redirect(back, said)
    data_type = form.get("data_type") or None
    if data_type is not None and data_type not in DATA_TYPE_NAMES:
        raise Refused(400, f"Unknown data type {data_type!r}.")
    detail: dict[str, Any] = {}
    if name in ("rerun", "backfill"):
        if name == "backfill":
            hours = backfill_hours(c.hour_arg(form.get("from", "")), c.hour_arg(form.get("to", "")))
        elif form.get("hour"):
            hours = [c.hour_arg(form["hour"])]
        elif form.get("day"):
            hours = day_hours(c.day_arg(form["day"]))
        else:
            raise Refused(400, "Give an hour or a day to rerun.")
        report = queue_reexport(c.catalog, project, hours, data_type, now)
        detail = {"hours": len(hours), "data_type": data_type or "all", "jobs": len(report)}
        first, last = beijing_hour_label(hours[0]), beijing_hour_label(hours[-1])
        span = first if first == last else f"{first}..{last}"
        revs = sorted({r["revision"] for r in report})
        message = f"Queued {len(report)} new revision(s) ({', '.join(map(str, revs))}) of "
        message += f"{data_type or 'every type'} for {span}."
    elif name == "export":
        enabled = form.get("enabled") == "on"
        c.catalog.set_export(ai, enabled)
        detail = {"enabled": enabled}
        message = f"Export {'enabled' if enabled else 'disabled'}."
    elif name == "retention":
        raw = form.get("days", "")
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 5):
            raise Refused(400, f"Retention must be a number of days, got {raw!r}.")
        c.catalog.set_retention(ai, int(raw))
        detail = {"days": int(raw)}
        message = f"Retention set to {int(raw)} days."
    elif name in ("token", "key"):
        return _create_secret(c, request, session, name, project, form)
    else:
        message = _revoke(c, project, form)
        detail = {"what": form.get("kind", ""), "id": form.get("id", "")}
    log_action(name, session, project, detail)
    return c.redirect(back, message)


def _create_secret(
    c: Console,
    request: Request,
    session: Session,
    name: str,
    project: Project,
    form: dict[str, str],
) -> Response:
    """The one time a secret is shown: this answer only, never stored, never cached."""
    if name == "token":
        description = form.get("description", "")[:200]
        secret = c.catalog.create_api_token(project.id, description)
        shown = {"API token": secret}
        log_action(name, session, project, {"description": description})
    else:
        kp = c.catalog.create_key_pair(project.id)
        shown = {"public key (X-Client-Id)": kp.public_key, "private key": kp.private_key}
        log_action(name, session, project, {"public_key": kp.public_key})
    return c.render(request, "secret.html", session, project=project, shown=shown)


def _revoke(c: Console, project: Project, form: dict[str, str]) -> str:
    kind, raw = form.get("kind", ""), form.get("id", "")
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 12):
        raise Refused(400, "No credential given.")
    found = [
        cred
        for cred in c.catalog.credentials(project.id)
        if cred.kind == kind and cred.id == int(raw)
    ]
    if not found:
        raise Refused(404, "No such credential in this project.")
    if kind == "key":
        c.catalog.revoke_key_pair(found[0].label)
    else:
        c.catalog.revoke_api_token_id(project.id, found[0].id)
    return f"Revoked {'key' if kind == 'key' else 'token'} {found[0].label}."


def log_action(name: str, session: Session, project: Project, detail: dict[str, Any]) -> None:
    log.info(
        "console action %s on %s",
        name,
        project.ai,
        extra={
            "event": "console_action",
            "action": name,
            "ai": project.ai,
            "role": session.role,
            "detail": detail,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
