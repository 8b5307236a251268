"""The console's push delivery: a project's destinations, its recent deliveries and its
webhooks with their last messages; the deliveries of one hour; and the operator's
redeliver, pause and resume (actions, as `rawexport deliveries retry` and
`rawexport destination pause | resume` do).

No credential is ever put in a page: destinations are shown as `describe` shows them
(credentials only as "set" or "none"), webhooks without their signing secret, and a URL
with its user:password, its query and any long token-like path segment (a Slack or
Discord webhook's key) masked. Sealed values do not reach the templates at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import Response

from rawexport.api.console.sessions import Session
from rawexport.api.console.views import V1, Refused, version_types
from rawexport.catalog import PAUSED, Catalog, Delivery, DeliveryStatus, Destination, Project
from rawexport.catalog.webhooks import Attempt
from rawexport.export.destinations import describe
from rawexport.timeutil import beijing_hour_label

if TYPE_CHECKING:
    from rawexport.api.console.routes import Console

ACTIONS = ("redeliver", "pause", "resume")
RECENT = 100  # deliveries on the destinations page, newest first
MESSAGES = 5  # a webhook's last messages shown, each with its attempts
TOKEN_CHARS = 16  # a path segment this long, of letters and digits, is masked


def public_url(url: str) -> str:
    """url as the console shows it: any user:password, query and fragment replaced by
    `***`, and each path segment of TOKEN_CHARS or more with letters and digits (the key of
    a Slack or Discord webhook URL) cut to its first 4 characters and `…`."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = ("***@" if "@" in parts.netloc else "") + host + (f":{port}" if port else "")
    segments = [
        s[:4] + "…"
        if len(s) >= TOKEN_CHARS and any(ch.isdigit() for ch in s) and any(ch.isalpha() for ch in s)
        else s
        for s in parts.path.split("/")
    ]
    query = "***" if parts.query else ""
    fragment = "***" if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, "/".join(segments), query, fragment))


@dataclass(frozen=True)
class Row:
    """A delivery as a line of the console's tables."""

    id: int
    destination: str
    kind: str  # the hour page's data type: the v2 type, or v1
    data_type: str
    version: str
    hour_ms: int
    revision: int
    status: str
    attempts: int
    location: str  # where it was delivered ("" until it is)
    error: str
    delivered_ms: int | None
    retry_ms: int | None  # retrying: when it is tried next

    @property
    def can_redeliver(self) -> bool:
        """Delivered (deliver it again) or retrying (retry it now, without the backoff): a
        queued one is due already, a running one is left to its attempt, a superseded one
        to the newer revision of its hour."""
        return self.status in (DeliveryStatus.DELIVERED, DeliveryStatus.RETRYING)


def _location(dest: Destination | None, d: Delivery) -> str:
    if d.location is None:
        return ""
    if dest is None:
        return d.location
    return f"{str(dest.config.get('location', '')).rstrip('/')}/{d.location}"


def rows(deliveries: list[Delivery], dests: dict[int, Destination]) -> list[Row]:
    out = []
    for d in deliveries:
        dest = dests.get(d.destination_id)
        out.append(
            Row(
                id=d.id,
                destination=dest.name if dest else str(d.destination_id),
                kind=d.data_type if d.version == "v2" else V1,
                data_type=d.data_type,
                version=d.version,
                hour_ms=d.hour_ms,
                revision=d.revision,
                status=d.status,
                attempts=d.attempts,
                location=_location(dest, d),
                error=d.error or "",
                delivered_ms=d.delivered_ms,
                retry_ms=d.next_attempt_ms if d.status == DeliveryStatus.RETRYING else None,
            )
        )
    return out


@dataclass(frozen=True)
class MessageView:
    msg_id: str
    event: str
    status: str
    created_ms: int
    delivered_ms: int | None
    next_attempt_ms: int
    attempts: list[Attempt]  # oldest first


@dataclass(frozen=True)
class HookView:
    """A webhook without its secret."""

    id: int
    url: str  # public_url
    events: list[str]
    lag_seconds: int | None
    created_ms: int
    messages: list[MessageView]  # newest first


def hooks(catalog: Catalog, project: Project) -> list[HookView]:
    out = []
    for hook in catalog.webhooks(project.id):
        messages = catalog.messages(hook.id, limit=MESSAGES)
        tries = catalog.attempts([m.id for m in messages]) if messages else []
        out.append(
            HookView(
                hook.id,
                public_url(hook.url),
                list(hook.events),
                hook.lag_seconds,
                hook.created_ms,
                [
                    MessageView(
                        m.msg_id,
                        m.event,
                        m.status,
                        m.created_ms,
                        m.delivered_ms,
                        m.next_attempt_ms,
                        [a for a in tries if a.message_id == m.id],
                    )
                    for m in messages
                ],
            )
        )
    return out


def destination_view(dest: Destination, catalog: Catalog, now: int) -> dict[str, Any]:
    shown = describe(dest, catalog, now)
    if shown.get("endpointUrl"):
        shown["endpointUrl"] = public_url(str(shown["endpointUrl"]))
    return shown


def commands(project: Project) -> dict[str, list[str]]:
    """How to add a destination or a webhook (the console shows the commands)."""
    ai = project.ai
    return {
        "destination": [
            f"rawexport destination add --project {ai} --name landing --dir /srv/landing/{ai}",
            "RAWEXPORT_DEST_ACCESS_KEY_ID=... RAWEXPORT_DEST_SECRET_ACCESS_KEY=... "
            f"rawexport destination add --project {ai} --name s3 "
            "--s3 s3://bucket/prefix --format parquet",
        ],
        "webhook": [
            f"rawexport webhook add --project {ai} --url https://example.com/hooks/rawexport "
            "--events hour.finished,hour.error,delivery.failed",
        ],
    }


def _filters(status: str | None, chosen: Destination | None) -> dict[str, str]:
    out = {} if status is None else {"status": status}
    return out if chosen is None else {**out, "destination": chosen.name}


def page(c: Console, request: Request, session: Session, project: Project) -> Response:
    """The project's destinations, deliveries (filtered by ?status= and ?destination=) and
    webhooks."""
    now, q = c.clock(), request.query_params
    status = q.get("status") or None
    if status is not None and status not in DeliveryStatus.ALL:
        raise Refused(400, f"Unknown delivery status {status!r}.")
    dests = c.catalog.destinations(project.id)
    chosen = None
    if q.get("destination"):
        chosen = next((d for d in dests if d.name == q["destination"]), None)
        if chosen is None:
            raise Refused(404, f"No destination {q['destination']!r} in this project.")
    found = c.catalog.deliveries(
        project_id=project.id,
        destination_id=None if chosen is None else chosen.id,
        status=status,
        limit=RECENT,
    )
    filters = _filters(status, chosen)
    back = f"/p/{project.ai}/destinations" + (f"?{urlencode(filters)}" if filters else "")
    return c.render(
        request,
        "destinations.html",
        session,
        project=project,
        destinations=[destination_view(d, c.catalog, now) for d in dests],
        deliveries=rows(found, {d.id: d for d in dests}),
        recent=RECENT,
        hooks=hooks(c.catalog, project),
        statuses=DeliveryStatus.ALL,
        status_filter=status or "",
        chosen="" if chosen is None else chosen.name,
        commands=commands(project),
        back=back,
    )


@dataclass(frozen=True)
class HourDeliveries:
    """The deliveries of one hour of one kind (the hour page), destination by destination."""

    rows: list[Row]  # by destination, newest revision first
    waiting: list[str]  # destinations that take the hour and have no delivery of it yet
    paused: dict[str, str]  # paused destinations of the above: name -> why
    destinations: int  # the project's destinations


def hour_deliveries(catalog: Catalog, project: Project, kind: str, hour: int) -> HourDeliveries:
    version, types = version_types(kind)
    dests = catalog.destinations(project.id)
    found = [
        d
        for d in catalog.deliveries(project_id=project.id, hour_ms=hour, limit=1000)
        if d.version == version and d.data_type in types
    ]
    found.sort(key=lambda d: (d.destination_id, -d.revision, d.data_type))
    delivered_to = {d.destination_id for d in found}
    waiting = [
        dest.name
        for dest in dests
        if dest.id not in delivered_to
        and version in dest.versions
        and hour >= dest.start_hour_ms
        and (dest.data_types is None or any(t in dest.data_types for t in types))
    ]
    shown = delivered_to | {dest.id for dest in dests if dest.name in waiting}
    paused = {
        dest.name: dest.paused_reason or ""
        for dest in dests
        if dest.id in shown and dest.state == PAUSED
    }
    return HourDeliveries(rows(found, {d.id: d for d in dests}), waiting, paused, len(dests))


def project_destinations(catalog: Catalog, project: Project) -> tuple[int, list[str]]:
    """(how many destinations, the names of the paused ones): the project page's link."""
    dests = catalog.destinations(project.id)
    return len(dests), [d.name for d in dests if d.state == PAUSED]


# ---- actions ---------------------------------------------------------------------------


def _destination(c: Console, project: Project, name: str) -> Destination:
    if not name:
        raise Refused(400, "No destination given.")
    dest = c.catalog.destination(project.id, name)
    if dest is None:
        raise Refused(404, f"No destination {name!r} in this project.")
    return dest


def act(
    c: Console, name: str, project: Project, form: dict[str, str]
) -> tuple[str, dict[str, Any]]:
    """Carry out a delivery action: (the message shown, the detail logged)."""
    now = c.clock()
    if name == "redeliver":
        raw = form.get("delivery", "")
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 12):
            raise Refused(400, "No delivery given.")
        d = c.catalog.delivery(int(raw))
        if d is None or d.project_id != project.id:
            raise Refused(404, "No such delivery in this project.")
        what = f"{d.data_type} {beijing_hour_label(d.hour_ms)} r{d.revision}"
        if not c.catalog.redeliver([d.id], now):
            why = (
                "a newer revision of its hour is delivered instead"
                if d.status == DeliveryStatus.SUPERSEDED
                else "it is being delivered now"
            )
            raise Refused(409, f"Delivery {d.id} ({what}) was not queued: {why}.")
        return f"Delivery {d.id} ({what}) queued again.", {"delivery": d.id}
    dest = _destination(c, project, form.get("destination", ""))
    detail: dict[str, Any] = {"destination": dest.name}
    if name == "pause":
        if dest.state == PAUSED:
            raise Refused(409, f"Destination {dest.name} is paused already: {dest.paused_reason}")
        note = " ".join(form.get("reason", "").split())[:200]
        reason = "paused by the operator" + (f": {note}" if note else "")
        c.catalog.pause_destination(dest.id, reason, now)
        return f"Destination {dest.name} paused; its deliveries wait.", {**detail, "reason": note}
    if dest.state != PAUSED:
        raise Refused(409, f"Destination {dest.name} is not paused.")
    c.catalog.resume_destination(dest.id, now)
    return f"Destination {dest.name} resumed; its waiting deliveries go now.", detail
