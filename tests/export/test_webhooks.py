"""Webhooks received by a local HTTP receiver, their signatures checked with the
`standardwebhooks` package; retries after a 500, each attempt logged; the CLI."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from standardwebhooks import Webhook as Verifier

from rawexport.cli import main
from rawexport.demo.generate import generate
from rawexport.export.destinations import add_destination
from rawexport.export.webhooks import RETRY_SCHEDULE, WebhookError, check_webhook, new_secret
from rawexport.node import Services, open_services
from rawexport.settings import Settings
from rawexport.timeutil import HOUR_MS, parse_hour_arg
from tests.conftest import Clock

T0 = parse_hour_arg("2026120100")


class Receiver:
    """An HTTP receiver on 127.0.0.1 that records every POST and answers `codes` in turn
    (then 200)."""

    def __init__(self) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.codes: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                code = receiver.codes.pop(0) if receiver.codes else 200
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    s = open_services(Settings(home=tmp_path / "home", grace_seconds=0, part_bytes=65536))
    clock = Clock(T0 + 3 * HOUR_MS)
    s.exporter.clock = s.deliverer.clock = s.notifier.clock = clock
    try:
        yield s
    finally:
        s.close()


def hook_for(services: Services, url: str, events: list[str], lag: int | None = None) -> str:
    """A project with a webhook (added at T0), 2 exported hours of page; the secret."""
    p = services.catalog.create_project("shop", export_since_ms=T0, v1_enabled=False)
    secret = new_secret()
    services.catalog.create_webhook(p.id, url, services.box.seal(secret), events, lag, T0)
    generate(services.store, p.ai, T0, 2, 500, data_types=["page"], seed=2)
    services.catalog.plan(p.id, "v2", ["page"], [T0, T0 + HOUR_MS], services.exporter.clock())
    services.exporter.drain("w")
    return secret


def send_all(services: Services) -> int:
    sent = 0
    while services.notifier.send_one():
        sent += 1
    return sent


def test_hour_finished_is_posted_signed(services: Services, receiver: Receiver) -> None:
    secret = hook_for(services, receiver.url, ["hour.finished"])
    assert services.notifier.plan() == 2
    assert services.notifier.plan() == 0  # once per event, however often planned
    assert send_all(services) == 2
    verifier = Verifier(secret)
    seen = []
    for headers, body in receiver.got:
        payload = verifier.verify(body, headers)  # raises on a bad signature
        assert headers["webhook-id"].startswith("msg_")
        assert payload["type"] == "hour.finished"
        seen.append((payload["data"]["hour"], payload["data"]["rows"]))
        assert payload["text"].startswith("rawexport: shop v2 page hour 20261201")
    assert sorted(seen) == [("2026120100", 500), ("2026120101", 500)]
    with pytest.raises(Exception, match="(?i)signature"):
        Verifier(new_secret()).verify(receiver.got[0][1], receiver.got[0][0])


def test_a_500_is_retried_and_every_attempt_logged(services: Services, receiver: Receiver) -> None:
    secret = hook_for(services, receiver.url, ["hour.finished"])
    receiver.codes = [500, 503]
    services.notifier.plan()
    assert send_all(services) == 2  # both answered 5xx: due again later
    clock = services.notifier.clock
    assert isinstance(clock, Clock)
    assert send_all(services) == 0
    clock.now += RETRY_SCHEDULE[0] * 1000
    assert send_all(services) == 2
    assert len(receiver.got) == 4
    [hook] = services.catalog.webhooks()
    messages = services.catalog.messages(hook.id)
    assert {m.status for m in messages} == {"sent"} and all(m.attempts == 2 for m in messages)
    tries = services.catalog.attempts([m.id for m in messages])
    assert sorted(a.status_code or 0 for a in tries) == [200, 200, 500, 503]
    assert {a.error for a in tries if a.status_code != 200} == {"answered 500", "answered 503"}
    ids = [h["webhook-id"] for h, _ in receiver.got]
    assert len(set(ids)) == 2  # a retry is the same message (same webhook-id)
    for headers, body in receiver.got:
        Verifier(secret).verify(body, headers)


def test_failed_deliveries_and_late_hours_are_told(
    services: Services, receiver: Receiver, tmp_path: Path
) -> None:
    hook_for(services, receiver.url, ["delivery.failed", "lag.exceeded"], lag=600)
    [p] = services.catalog.projects()
    add_destination(
        services.catalog,
        services.box,
        p.id,
        "broken",
        kind="dir",
        location="/proc/rawexport-cannot-write",
        template="{data_type}/{revision}/",
        start_hour_ms=T0,
        now=T0,
    )
    services.deliverer.plan()
    assert services.deliverer.run_one("d")
    # an hour that closed long ago but has an unfinished job
    services.catalog.plan(p.id, "v2", ["visit"], [T0], services.exporter.clock())
    services.notifier.plan()
    send_all(services)
    events = {json.loads(b)["type"]: json.loads(b) for _, b in receiver.got}
    failed = events["delivery.failed"]["data"]
    assert failed["destination"] == "broken" and failed["error"]
    assert events["delivery.failed"]["text"].startswith("rawexport: delivery of page hour")
    assert events["lag.exceeded"]["data"] == {
        "ai": p.ai,
        "project": "shop",
        "hour": "2026120100",
        "lagSeconds": 600,
    }


@pytest.mark.parametrize(
    ("url", "events", "lag", "says"),
    [
        ("ftp://x/y", ["hour.finished"], None, "http(s)://"),
        ("http://x/y", ["hour.done"], None, "unknown events: hour.done"),
        ("http://x/y", ["lag.exceeded"], None, "needs --lag-seconds"),
    ],
)
def test_bad_webhooks_are_refused(url: str, events: list[str], lag: int | None, says: str) -> None:
    with pytest.raises(WebhookError, match=says.replace("(", r"\(").replace(")", r"\)")):
        check_webhook(url, events, lag)


def cli(home: Path, *args: str, code: int = 0) -> Any:
    result = CliRunner().invoke(main, [*args, "--home", str(home)])
    assert result.exit_code == code, (result.stdout, result.stderr)
    return json.loads(result.stdout) if code == 0 else result.stderr


def test_the_webhook_commands(tmp_path: Path, receiver: Receiver) -> None:
    home = tmp_path / "home"
    ai = cli(home, "project", "create", "--name", "a", "--no-v1")["ai"]
    added = cli(home, "webhook", "add", "--project", ai, "--url", receiver.url)
    assert added["secret"].startswith("whsec_")
    assert added["events"] == ["hour.finished", "hour.error", "delivery.failed"]
    listed = cli(home, "webhook", "list")
    assert added["secret"] not in json.dumps(listed) and listed[0]["url"] == receiver.url
    assert added["secret"].encode() not in (home / "catalog.db").read_bytes()
    tested = cli(home, "webhook", "test", "--id", str(added["id"]))
    assert tested["ok"] and tested["statusCode"] == 200
    headers, body = receiver.got[-1]
    assert Verifier(added["secret"]).verify(body, headers)["type"] == "ping"
    receiver.codes = [500]
    err = cli(home, "webhook", "test", "--id", str(added["id"]), code=1)
    assert "failed its test: answered 500" in err and "Traceback" not in err
    err = cli(home, "webhook", "add", "--project", ai, "--url", "x", code=1)
    assert "http(s)://" in err
    assert cli(home, "webhook", "remove", "--id", str(added["id"]))["removed"]
    assert cli(home, "webhook", "list") == []
