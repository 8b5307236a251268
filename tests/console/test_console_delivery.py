"""The console's push delivery in-process: the destinations page (state, why paused, the
deliveries with their errors, the webhooks with each attempt), the hour view's deliveries,
redeliver / pause / resume under the console's CSRF and operator rules, no credential in
any page, and 404s for what is not there."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from markupsafe import escape

from rawexport.api.console.delivery import public_url
from rawexport.catalog import Delivery, Destination
from rawexport.catalog.webhooks import Webhook
from rawexport.export import destinations
from rawexport.export.webhooks import Notifier, new_secret
from rawexport.node import Services, open_services
from rawexport.secretbox import SecretBox
from rawexport.timeutil import HOUR_MS, beijing_hour_label
from tests.conftest import World
from tests.console.test_console import ADMIN, PAST, csrf_of, sign_in

CUSTOMER = {"access_key_id": "AKIACUSTOMERKEY0001", "secret_access_key": "customer-secret-0123456"}
SLACK = "https://hooks.slack.example/services/T0001/B0002/abcdefGHIJKL0123456789xy"
LABEL = beijing_hour_label(PAST)
BOX = SecretBox("the console tests' secrets key")  # the pages never open credentials


def add_destination(
    w: World,
    name: str,
    location: str,
    *,
    kind: str = "dir",
    box: SecretBox = BOX,
    credentials: dict[str, str] | None = None,
    data_types: list[str] | None = None,
) -> Destination:
    return destinations.add_destination(
        w.catalog,
        box,
        w.project.id,
        name,
        kind=kind,
        location=location,
        data_types=data_types,
        endpoint_url="http://127.0.0.1:9/" if kind == "s3" else "",
        credentials=credentials,
        start_hour_ms=PAST,
        now=w.clock.now,
    )


def delivered(w: World, location: Path) -> tuple[Destination, Delivery]:
    """A dir destination `landing` and a delivery of the page hour PAST marked delivered
    (catalog only): what tests/console/test_csrf.py acts on."""
    w.finish("page", PAST)
    dest = add_destination(w, "landing", str(location))
    assert w.catalog.plan_deliveries(w.clock.now) == 1
    d = w.catalog.claim_delivery("t", w.clock.now, 60_000)
    assert d is not None
    w.catalog.complete_delivery(
        d, "t", location="x/", files=1, rows=1, size=1, superseded=[], now=w.clock.now
    )
    return dest, d


@dataclass
class Pushed:
    """A project with two finished hours (page, visit at PAST) delivered for real to
    `landing`; `blocked` (a file where its directory should be) paused after two failures;
    `bucket` (s3, sealed credentials, visit only); a webhook whose messages got a 503 or a
    refused connection, then a 204."""

    w: World
    services: Services
    landing: Destination
    blocked: Destination
    bucket: Destination
    hook: Webhook
    secret: str

    def page(self, path: str = "/destinations", **params: str) -> Any:
        return self.w.client.get(f"/console/p/{self.w.project.ai}{path}", params=params)

    def post(self, action: str, data: dict[str, str]) -> Any:
        return self.w.client.post(
            f"/console/p/{self.w.project.ai}/{action}", data=data, follow_redirects=False
        )

    def csrf(self) -> str:
        return csrf_of(self.page().text)

    def deliveries(self, dest: Destination) -> list[Delivery]:
        return self.w.catalog.deliveries(destination_id=dest.id)

    def state(self, dest: Destination) -> Destination:
        found = self.w.catalog.destination_by_id(dest.id)
        assert found is not None
        return found


@pytest.fixture
def pushed(make_world: Callable[..., World], tmp_path: Path) -> Iterator[Pushed]:
    w = make_world(admin_token=ADMIN, delivery_pause_after=2)
    assert sign_in(w, ADMIN).status_code == 303
    services = open_services(w.settings)  # the same home: its catalog, blobs, secrets key
    services.deliverer.clock = w.clock
    try:
        w.finish("page", PAST)
        w.finish("visit", PAST)
        (tmp_path / "blocker").write_text("a file, not a directory")
        landing = add_destination(w, "landing", str(tmp_path / "landing"))
        blocked = add_destination(w, "blocked", str(tmp_path / "blocker" / "landing"))
        bucket = add_destination(
            w,
            "bucket",
            "s3://customer-bucket/rawexport",
            kind="s3",
            box=services.box,
            credentials=CUSTOMER,
            data_types=["vstr"],  # no hour of it: nothing is sent to this bucket
        )
        assert services.deliverer.drain("d") == 4
        assert {d.status for d in w.catalog.deliveries(destination_id=landing.id)} == {"delivered"}
        secret = new_secret()
        hook = w.catalog.create_webhook(
            w.project.id,
            SLACK,
            services.box.seal(secret),
            ["hour.finished", "delivery.failed"],
            None,
            PAST,
        )
        seen: set[str] = set()

        def receive(request: httpx.Request) -> httpx.Response:
            msg_id = request.headers["webhook-id"]
            first = msg_id not in seen
            seen.add(msg_id)
            if first and b'"delivery.failed"' in request.content:
                raise httpx.ConnectError("connection refused")
            return httpx.Response(503 if first else 204)

        notifier = Notifier(
            services.catalog, services.box, clock=w.clock, transport=httpx.MockTransport(receive)
        )
        try:
            assert notifier.plan() == 4  # 2 hours finished, 2 deliveries failed
            while notifier.send_one():
                pass
            w.clock.now += 10_000  # the first retry is due after 5 s
            while notifier.send_one():
                pass
        finally:
            notifier.close()
        yield Pushed(w, services, landing, blocked, bucket, hook, secret)
    finally:
        services.close()


def test_the_page_lists_destinations_and_says_why_one_is_paused(pushed: Pushed) -> None:
    blocked = pushed.state(pushed.blocked)
    assert blocked.state == "paused" and blocked.paused_reason
    assert blocked.paused_reason.startswith("2 deliveries failed in a row; the last: ")
    page = pushed.page()
    assert page.status_code == 200
    html = page.text
    states = dict(re.findall(r'<article class="destination" data-name="(\w+)" data-state="(\w+)"',
                             html))  # fmt: skip
    assert states == {"blocked": "paused", "bucket": "active", "landing": "active"}
    reasons = re.findall(r'<pre class="errormsg paused-reason">([^<]*)</pre>', html)
    assert reasons == [str(escape(blocked.paused_reason))]
    landing = html.split('data-name="landing"')[1].split("</article>")[0]
    assert f'<dd class="last-hour">{LABEL}</dd>' in landing
    assert "{ai}/{version}/{data_type}/{yyyy}{MM}{dd}/{HH}/r{revision}/" in landing
    assert 'data-status="delivered">delivered 2</a>' in landing
    assert '<dd class="failures">2</dd>' in html.split('data-name="blocked"')[1]
    # The deliveries: where each went, and the failures' errors.
    for d in pushed.deliveries(pushed.landing):
        assert d.location is not None
        assert f"{pushed.landing.config['location']}/{d.location}" in html
    for d in pushed.deliveries(pushed.blocked):
        assert d.status == "retrying" and d.error
        row = html.split(f'<tr class="delivery-error" data-id="{d.id}">')[1].split("</tr>")[0]
        assert str(escape(d.error)) in row
    # The project page links to it and tells of the paused destination.
    project = pushed.w.client.get(f"/console/p/{pushed.w.project.ai}").text
    assert f'href="/console/p/{pushed.w.project.ai}/destinations"' in project
    assert "paused: blocked" in project


def test_the_webhooks_show_their_messages_and_each_attempt(pushed: Pushed) -> None:
    html = pushed.page().text
    hook = html.split(f'<article class="webhook" data-id="{pushed.hook.id}">')[1]
    hook = hook.split("</article>")[0]
    assert public_url(SLACK) in hook and "hour.finished, delivery.failed" in hook
    messages = pushed.w.catalog.messages(pushed.hook.id)
    assert len(messages) == 4 and {m.status for m in messages} == {"sent"}
    tries = pushed.w.catalog.attempts([m.id for m in messages])
    assert len(tries) == 8
    rows = re.findall(r'<tr class="attempt" data-message="(msg_\w+)">(.*?)</tr>', hook, re.S)
    assert len(rows) == 8 and {m for m, _ in rows} == {m.msg_id for m in messages}
    codes = re.findall(r'<td class="status-code">([^<]*)</td>', hook)
    assert sorted(codes) == ["204"] * 4 + ["503"] * 2 + ["none"] * 2
    assert hook.count("ConnectError: connection refused") == 2
    assert hook.count("answered 503") == 2
    for a in tries:
        assert f"<td>{a.duration_ms:,} ms</td>" in hook


def test_redeliver_requeues_with_the_csrf_token_of_an_operator_only(pushed: Pushed) -> None:
    d = pushed.deliveries(pushed.landing)[0]
    form = {"delivery": str(d.id), "back": "/p/{ai}/destinations"}
    for data in (form, {**form, "csrf": "forged"}):
        r = pushed.post("redeliver", data)
        assert r.status_code == 403 and "CSRF" in r.text
    assert pushed.w.catalog.delivery(d.id).status == "delivered"  # type: ignore[union-attr]
    # A project's visitor (the rerun rule: operators only) with a right CSRF token.
    viewer = pushed.w.client.__class__(pushed.w.client.app)
    page = viewer.get("/console/signin")
    viewer.post("/console/signin", data={"csrf": csrf_of(page.text), "token": pushed.w.token})
    seen = viewer.get(f"/console/p/{pushed.w.project.ai}/destinations")
    assert seen.status_code == 200 and "paused" in seen.text  # they may look
    assert re.findall(r'<form method="post" action="([^"]+)"', seen.text) == ["/console/signout"]
    r = viewer.post(
        f"/console/p/{pushed.w.project.ai}/redeliver", data={**form, "csrf": csrf_of(seen.text)}
    )
    assert r.status_code == 403 and "Only an operator" in r.text
    viewer.close()
    assert pushed.w.catalog.delivery(d.id).status == "delivered"  # type: ignore[union-attr]
    # The operator, from the destinations page.
    ai = pushed.w.project.ai
    back = f"/p/{ai}/destinations?status=delivered"
    r = pushed.post("redeliver", {"delivery": str(d.id), "csrf": pushed.csrf(), "back": back})
    assert r.status_code == 303 and r.headers["location"] == "/console" + back
    again = pushed.w.catalog.delivery(d.id)
    assert again is not None and again.status == "queued"
    page = pushed.w.client.get(r.headers["location"]).text
    assert f"Delivery {d.id} (" in page and "queued again." in page
    # A failed one is retried now; a superseded one is not queued.
    failed = pushed.deliveries(pushed.blocked)[0]
    r = pushed.post("redeliver", {"delivery": str(failed.id), "csrf": pushed.csrf()})
    assert r.status_code == 303
    assert pushed.w.catalog.delivery(failed.id).status == "queued"  # type: ignore[union-attr]


def test_a_superseded_delivery_is_not_queued_again(pushed: Pushed) -> None:
    w = pushed.w
    old = [d for d in pushed.deliveries(pushed.landing) if d.data_type == "page"][0]
    w.finish("page", PAST)  # revision 2 of the hour, delivered over revision 1
    assert pushed.services.deliverer.drain("d") == 1
    old_now = w.catalog.delivery(old.id)
    assert old_now is not None and old_now.status == "superseded"
    r = pushed.post("redeliver", {"delivery": str(old.id), "csrf": pushed.csrf()})
    assert r.status_code == 409 and "a newer revision of its hour" in r.text
    assert w.catalog.delivery(old.id).status == "superseded"  # type: ignore[union-attr]


def test_pause_and_resume_change_the_state(pushed: Pushed) -> None:
    csrf = pushed.csrf()
    r = pushed.post("pause", {"destination": "landing", "reason": "bucket  migration"})
    assert r.status_code == 403  # no CSRF token
    assert pushed.state(pushed.landing).state == "active"
    r = pushed.post("pause", {"destination": "landing", "reason": "bucket migration", "csrf": csrf})
    assert r.status_code == 303
    landing = pushed.state(pushed.landing)
    assert landing.state == "paused"
    assert landing.paused_reason == "paused by the operator: bucket migration"
    html = pushed.page().text
    assert "paused by the operator: bucket migration" in html and "Resume landing" in html
    r = pushed.post("pause", {"destination": "landing", "csrf": csrf})
    assert r.status_code == 409 and "paused already" in r.text
    r = pushed.post("resume", {"destination": "landing", "csrf": csrf})
    assert r.status_code == 303 and pushed.state(pushed.landing).state == "active"
    r = pushed.post("resume", {"destination": "landing", "csrf": csrf})
    assert r.status_code == 409 and "is not paused" in r.text
    # Resuming the failed destination: active, its count cleared, its retries due now.
    r = pushed.post("resume", {"destination": "blocked", "csrf": csrf})
    assert r.status_code == 303
    blocked = pushed.state(pushed.blocked)
    assert (blocked.state, blocked.failures, blocked.paused_reason) == ("active", 0, None)
    now = pushed.w.clock.now
    assert all(d.next_attempt_ms <= now for d in pushed.deliveries(pushed.blocked))
    assert "Pause blocked" in pushed.page().text


def test_the_hour_view_shows_that_hours_deliveries(pushed: Pushed) -> None:
    ai = pushed.w.project.ai
    html = pushed.w.client.get(f"/console/p/{ai}/hour/{LABEL}/page").text
    section = html.split('<section class="card" id="hour-deliveries">')[1]
    found = re.findall(
        r'<tr class="delivery" data-id="(\d+)" data-status="(\w+)" data-destination="(\w+)">',
        section,
    )
    page_deliveries = [
        d
        for dest in (pushed.landing, pushed.blocked)
        for d in pushed.deliveries(dest)
        if d.data_type == "page"
    ]
    assert sorted(found) == sorted(
        (str(d.id), d.status, "landing" if d.destination_id == pushed.landing.id else "blocked")
        for d in page_deliveries
    )
    for d in page_deliveries:
        if d.status == "delivered":
            assert (
                d.location is not None and d.location in section and f"/{LABEL[8:]}/" in d.location
            )
        else:
            assert d.error and str(escape(d.error)) in section
    assert 'class="notice paused" data-destination="blocked"' in section
    assert "Redeliver" in section and "Retry now" in section
    # The visit hour: its own deliveries; the bucket takes vstr only, so is not listed.
    visit = pushed.w.client.get(f"/console/p/{ai}/hour/{LABEL}/visit").text
    ids = re.findall(r'<tr class="delivery" data-id="(\d+)"', visit)
    assert sorted(ids) == sorted(
        str(d.id)
        for dest in (pushed.landing, pushed.blocked)
        for d in pushed.deliveries(dest)
        if d.data_type == "visit"
    )
    assert "bucket" not in visit.split('id="hour-deliveries"')[1]
    # An hour before the destinations' start: none takes it.
    before = pushed.w.client.get(f"/console/p/{ai}/hour/{beijing_hour_label(PAST - HOUR_MS)}/page")
    assert "No destination of this project takes this hour" in before.text
    # An hour exported but not delivered yet.
    pushed.w.finish("page", PAST + HOUR_MS)
    later = pushed.w.client.get(f"/console/p/{ai}/hour/{beijing_hour_label(PAST + HOUR_MS)}/page")
    assert "No delivery of this hour yet to blocked, landing" in later.text


def test_no_credential_or_secret_in_any_page(pushed: Pushed) -> None:
    ai = pushed.w.project.ai
    bucket = pushed.state(pushed.bucket)
    assert bucket.credentials is not None
    secrets = [
        *CUSTOMER.values(),
        bucket.credentials,  # sealed, too
        pushed.secret,
        pushed.secret.removeprefix("whsec_"),
        pushed.hook.secret,
        SLACK,
        "abcdefGHIJKL0123456789xy",  # the webhook URL's key
    ]
    pages = [
        "/destinations",
        "/destinations?destination=bucket",
        "/destinations?status=retrying",
        "",
        f"/hour/{LABEL}/page",
        f"/hour/{LABEL}/visit",
    ]
    viewer = pushed.w.client.__class__(pushed.w.client.app)
    page = viewer.get("/console/signin")
    viewer.post("/console/signin", data={"csrf": csrf_of(page.text), "token": pushed.w.token})
    for client in (pushed.w.client, viewer):
        for path in pages:
            r = client.get(f"/console/p/{ai}{path}")
            assert r.status_code == 200, path
            for secret in secrets:
                assert secret not in r.text, (path, secret[:8])
        overview = client.get("/console/").text
        assert all(s not in overview for s in secrets)
    viewer.close()
    html = pushed.page().text
    bucket_part = html.split('data-name="bucket"')[1].split("</article>")[0]
    assert "<dt>credentials</dt><dd>set</dd>" in bucket_part
    assert "s3://customer-bucket/rawexport" in bucket_part


@pytest.mark.parametrize(
    ("method", "path", "data", "status"),
    [
        ("get", "/console/p/0000000000000000/destinations", None, 404),
        ("get", "/console/p/{ai}/destinations?destination=nosuch", None, 404),
        ("get", "/console/p/{ai}/destinations?status=lost", None, 400),
        ("post", "/console/p/0000000000000000/pause", {"destination": "landing"}, 404),
        ("post", "/console/p/{ai}/pause", {"destination": "nosuch"}, 404),
        ("post", "/console/p/{ai}/resume", {"destination": "nosuch"}, 404),
        ("post", "/console/p/{ai}/pause", {}, 400),
        ("post", "/console/p/{ai}/redeliver", {"delivery": "999999"}, 404),
        ("post", "/console/p/{ai}/redeliver", {"delivery": "-1"}, 400),
        ("post", "/console/p/{ai}/redeliver", {}, 400),
    ],
)
def test_what_is_not_there_is_a_clear_4xx(
    pushed: Pushed, method: str, path: str, data: dict[str, str] | None, status: int
) -> None:
    url = path.format(ai=pushed.w.project.ai)
    if method == "get":
        r = pushed.w.client.get(url)
    else:
        r = pushed.w.client.post(url, data={"csrf": pushed.csrf(), **(data or {})})
    assert r.status_code == status, r.text[-600:]
    assert 'class="error"' in r.text


def test_another_projects_delivery_or_page_is_unknown(pushed: Pushed) -> None:
    w = pushed.w
    other, _, token = w.add_project("other")
    w.finish("page", PAST, project=other)
    destinations.add_destination(
        w.catalog, BOX, other.id, "theirs",
        kind="dir", location="/srv/theirs", start_hour_ms=PAST, now=w.clock.now,
    )  # fmt: skip
    w.catalog.plan_deliveries(w.clock.now)
    [theirs] = w.catalog.deliveries(project_id=other.id)
    r = pushed.post("redeliver", {"delivery": str(theirs.id), "csrf": pushed.csrf()})
    assert r.status_code == 404 and "No such delivery in this project" in r.text
    r = pushed.post("pause", {"destination": "theirs", "csrf": pushed.csrf()})
    assert r.status_code == 404
    assert w.catalog.destination(other.id, "theirs").state == "active"  # type: ignore[union-attr]
    # A project's visitor: another project's page is as unknown.
    viewer = w.client.__class__(w.client.app)
    page = viewer.get("/console/signin")
    viewer.post("/console/signin", data={"csrf": csrf_of(page.text), "token": w.token})
    r = viewer.get(f"/console/p/{other.ai}/destinations")
    assert r.status_code == 404 and "theirs" not in r.text
    viewer.close()
    assert token


def test_empty_states_say_how_to_add_one(make_world: Callable[..., World]) -> None:
    w = make_world(admin_token=ADMIN)
    sign_in(w, ADMIN)
    ai = w.project.ai
    html = w.client.get(f"/console/p/{ai}/destinations").text
    assert "No destinations yet." in html and "No webhooks yet." in html
    assert f"rawexport destination add --project {ai} --name landing --dir" in html
    assert f"rawexport webhook add --project {ai} --url" in html
    assert "no destination yet" in w.client.get(f"/console/p/{ai}").text
    hour = w.client.get(f"/console/p/{ai}/hour/{LABEL}/page").text
    assert "No destinations: this hour is only pulled." in hour


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://example.com/hooks/rawexport", "https://example.com/hooks/rawexport"),
        (SLACK, "https://hooks.slack.example/services/T0001/B0002/abcd…"),
        (
            "https://user:pa55word@example.com:8443/h?token=s3cr3t#x",
            "https://***@example.com:8443/h?***#***",
        ),
        (
            "http://[::1]:9000/discord/api/webhooks/12/aB3dE6gH9jK2mN5pQ8",
            "http://[::1]:9000/discord/api/webhooks/12/aB3d…",
        ),
        ("http://127.0.0.1:8080/hooks", "http://127.0.0.1:8080/hooks"),
    ],
)
def test_webhook_urls_are_shown_without_their_credentials(url: str, shown: str) -> None:
    assert public_url(url) == shown
