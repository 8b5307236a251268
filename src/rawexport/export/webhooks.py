"""Webhooks: a project's events POSTed as JSON, signed per the Standard Webhooks spec.

Events: `hour.finished` and `hour.error` (an export revision ended), `delivery.failed` (an
attempt at a delivery failed; the destination's state says whether it is paused), and
`lag.exceeded` (an hour still not finished `lag_seconds` after it closed). A planner pass
turns what happened since a webhook was added (at most a day back) into messages, once
each; senders POST them with the headers `webhook-id`, `webhook-timestamp` and
`webhook-signature` (`v1,` + base64 HMAC-SHA256 of `id.timestamp.body` under the
`whsec_` secret), and retry what did not get a 2xx on a widening schedule, each attempt
logged. The body has a `text` field, so a Slack incoming-webhook URL works as it is.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from rawexport.catalog import Catalog
from rawexport.catalog.webhooks import FAILED, PENDING, SENT, Message, Webhook
from rawexport.errors import UserError
from rawexport.metrics import Metrics
from rawexport.periodic import Periodic
from rawexport.secretbox import SecretBox
from rawexport.settings import Settings
from rawexport.timeutil import HOUR_MS, beijing_hour_label, now_ms

log = logging.getLogger("rawexport.webhooks")

EVENTS = ("hour.finished", "hour.error", "delivery.failed", "lag.exceeded")
# Seconds before each retry of a message that got no 2xx; after the last it has FAILED.
RETRY_SCHEDULE = (5, 30, 120, 600, 1800, 3600, 3 * 3600, 6 * 3600)
SEND_TIMEOUT = 10.0
LOOKBACK_MS = 24 * HOUR_MS  # a new webhook hears of what happened at most this long ago


class WebhookError(UserError, ValueError):
    """A webhook cannot be added as asked; the message says why."""


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header of a message (Standard Webhooks, v1)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def check_webhook(url: str, events: list[str], lag_seconds: int | None) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise WebhookError(f"a webhook URL is http(s)://host/path, not {url!r}")
    unknown = [e for e in events if e not in EVENTS]
    if unknown or not events:
        raise WebhookError(
            f"unknown events: {', '.join(unknown) or '(none)'} (known: {', '.join(EVENTS)})"
        )
    if "lag.exceeded" in events and not lag_seconds:
        raise WebhookError("lag.exceeded needs --lag-seconds (how late an hour may finish)")
    if lag_seconds is not None and lag_seconds < 1:
        raise WebhookError("--lag-seconds must be at least 1")


def _body(event: str, now: int, data: dict[str, Any], text: str) -> str:
    stamp = datetime.fromtimestamp(now / 1000, UTC).isoformat().replace("+00:00", "Z")
    return json.dumps(
        {"type": event, "timestamp": stamp, "data": data, "text": f"rawexport: {text}"},
        ensure_ascii=False,
        separators=(",", ":"),
    )


@dataclass(frozen=True)
class Sent:
    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class Notifier:
    """Plans a node's webhook messages and sends them."""

    def __init__(
        self,
        catalog: Catalog,
        box: SecretBox,
        *,
        clock: Callable[[], int] = now_ms,
        metrics: Metrics | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.catalog = catalog
        self.box = box
        self.clock = clock
        self.metrics = metrics
        self._transport = transport
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()

    @property
    def client(self) -> httpx.Client:
        """The HTTP client, made on the first send: a node without webhooks never builds
        its TLS context (a few MB that would sit among the request buffers)."""
        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(
                    timeout=SEND_TIMEOUT, follow_redirects=False, transport=self._transport
                )
            return self._client

    def close(self) -> None:
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # ---- planning ----------------------------------------------------------------------

    def plan(self) -> int:
        """Messages for what happened since each webhook was added; how many are new."""
        now = self.clock()
        added = 0
        for hook in self.catalog.webhooks():
            planned = self._events(hook, now)
            added += self.catalog.add_messages(hook.id, planned, now)
        return added

    def _events(self, hook: Webhook, now: int) -> list[tuple[str, str, str, str]]:
        since = max(hook.created_ms, now - LOOKBACK_MS)
        project = self.catalog.project_by_id(hook.project_id)
        out: list[tuple[str, str, str, str]] = []

        def add(event: str, key: str, data: dict[str, Any], text: str) -> None:
            data = {"ai": project.ai, "project": project.name, **data}
            out.append((f"msg_{uuid.uuid4().hex}", event, key, _body(event, now, data, text)))

        if {"hour.finished", "hour.error"} & set(hook.events):
            for job in self.catalog.jobs_ended_since(project.id, since):
                event = "hour.finished" if job.status == "finished" else "hour.error"
                if event not in hook.events:
                    continue
                hour = beijing_hour_label(job.hour_ms)
                data = {
                    "version": job.version,
                    "dataType": job.data_type,
                    "hour": hour,
                    "revision": job.revision,
                    "rows": job.rows,
                    "bytes": job.bytes,
                    "manifest": job.manifest_key,
                    "error": job.error,
                }
                said = f"{job.rows:,} rows" if event == "hour.finished" else f"ERROR: {job.error}"
                what = f"{job.version} {job.data_type} hour {hour} r{job.revision}"
                text = f"{project.name} {what}: {said}"
                add(event, f"{event}:{job.id}", data, text)
        if "delivery.failed" in hook.events:
            for d in self.catalog.failed_deliveries_since(project.id, since):
                hour = beijing_hour_label(d.hour_ms)
                data = {
                    "destination": d.name,
                    "destinationState": d.state,
                    "pausedReason": d.paused_reason,
                    "version": d.version,
                    "dataType": d.data_type,
                    "hour": hour,
                    "revision": d.revision,
                    "attempt": d.attempts,
                    "error": d.error,
                }
                paused = " (destination paused)" if d.state == "paused" else ""
                text = (
                    f"delivery of {d.data_type} hour {hour} to {d.name} failed{paused}: {d.error}"
                )
                add("delivery.failed", f"delivery.failed:{d.id}:{d.attempts}", data, text)
        if "lag.exceeded" in hook.events and hook.lag_seconds:
            lag_ms = hook.lag_seconds * 1000
            before = now - lag_ms - HOUR_MS + 1  # hours that closed lag_seconds ago or more
            for hour_ms in self.catalog.unfinished_hours(project.id, before, since - HOUR_MS):
                hour = beijing_hour_label(hour_ms)
                data = {"hour": hour, "lagSeconds": hook.lag_seconds}
                late = f"not exported {hook.lag_seconds} s after it closed"
                text = f"{project.name} hour {hour} is {late}"
                add("lag.exceeded", f"lag.exceeded:{hour_ms}", data, text)
        return out

    # ---- sending -----------------------------------------------------------------------

    def post(self, hook: Webhook, msg_id: str, body: str) -> Sent:
        """POST one signed message; what came back (never raises for the receiver's sake)."""
        stamp = int(time.time())  # the moment of sending, which receivers check
        data = body.encode()
        headers = {
            "content-type": "application/json",
            "user-agent": "rawexport-webhooks",
            "webhook-id": msg_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": sign(self.box.open(hook.secret), msg_id, stamp, data),
        }
        started = time.monotonic()
        try:
            r = self.client.post(hook.url, content=data, headers=headers)
            return Sent(r.status_code, None, int((time.monotonic() - started) * 1000))
        except httpx.HTTPError as e:
            error = f"{type(e).__name__}: {e}"
            return Sent(None, error, int((time.monotonic() - started) * 1000))

    def send_one(self) -> bool:
        """Send the next due message; False when there was none."""
        now = self.clock()
        message = self.catalog.claim_message(now, int((SEND_TIMEOUT + 5) * 1000))
        if message is None:
            return False
        hook = self.catalog.webhook(message.webhook_id)
        if hook is None:
            return True  # removed meanwhile (its messages with it)
        sent = self.post(hook, message.msg_id, message.payload)
        self._record(message, sent, now)
        return True

    def _record(self, message: Message, sent: Sent, at: int) -> None:
        retry_at = None
        if sent.ok:
            outcome = SENT
        elif message.attempts <= len(RETRY_SCHEDULE):
            outcome = PENDING
            retry_at = at + RETRY_SCHEDULE[message.attempts - 1] * 1000
        else:
            outcome = FAILED
        error = sent.error or (None if sent.ok else f"answered {sent.status_code}")
        self.catalog.record_attempt(
            message,
            at_ms=at,
            status_code=sent.status_code,
            error=error,
            duration_ms=sent.duration_ms,
            outcome=outcome,
            retry_at=retry_at,
        )
        if self.metrics is not None:
            self.metrics.webhook_attempts.labels("sent" if sent.ok else "failed").inc()
        if not sent.ok:
            log.warning(
                "webhook %s message %s attempt %d: %s",
                message.webhook_id,
                message.msg_id,
                message.attempts,
                error,
                extra={"event": "webhook_failed", "outcome": outcome},
            )

    def ping(self, hook: Webhook) -> Sent:
        """Send a `ping` event now (`rawexport webhook test`), outside the queue."""
        project = self.catalog.project_by_id(hook.project_id)
        body = _body(
            "ping",
            self.clock(),
            {"ai": project.ai, "project": project.name, "webhook": hook.id},
            f"test message from project {project.name}",
        )
        return self.post(hook, f"msg_{uuid.uuid4().hex}", body)


class WebhookLoops:
    """A node's webhook loops: the planner and one sender."""

    def __init__(self, notifier: Notifier, settings: Settings) -> None:
        self.notifier = notifier
        self.planner = Periodic("webhook-planner", notifier.plan, settings.delivery_interval)
        self.sender = Periodic("webhook", notifier.send_one, 0.5)

    def start(self) -> None:
        self.planner.start()
        self.sender.start()

    def stop(self) -> None:
        self.planner.stop()
        self.sender.stop()
