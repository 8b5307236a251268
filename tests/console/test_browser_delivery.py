"""The console's push delivery page in a real headless Chromium against a real
`rawexport serve`: a paused destination says why; a click redelivers a delivery, which is
queued; a click resumes the paused destination."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from rawexport.catalog import Destination
from rawexport.demo.generate import generate
from rawexport.export.destinations import add_destination
from rawexport.node import Services, open_services
from rawexport.settings import Settings
from rawexport.timeutil import HOUR_MS, hour_floor, now_ms
from tests.console.test_browser import browser  # noqa: F401
from tests.e2e_util import Server, env_for, free_port

pytestmark = pytest.mark.e2e


@dataclass
class Push:
    server: Server
    services: Services  # the home's catalog, read by the tests while serve runs
    admin: str
    ai: str
    landing: Destination
    blocked: Destination


def add(services: Services, project_id: int, name: str, location: str, start: int) -> Destination:
    return add_destination(
        services.catalog,
        services.box,
        project_id,
        name,
        kind="dir",
        location=location,
        data_types=["page"],
        start_hour_ms=start,
        now=now_ms(),
    )


@pytest.fixture(scope="module")
def push(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Push]:
    """Two page hours exported and delivered before serve starts: to `landing`, and
    (failing twice) to `blocked`, which is then paused. serve runs no delivery worker, so
    what the console queues stays queued."""
    home = tmp_path_factory.mktemp("push")
    services = open_services(Settings(home=home, grace_seconds=0, delivery_pause_after=2))
    try:
        first = hour_floor(now_ms()) - 2 * HOUR_MS
        p = services.catalog.create_project("push-shop", export_since_ms=first, v1_enabled=False)
        generate(services.store, p.ai, first, 2, 200, data_types=["page"], seed=5)
        services.catalog.plan(p.id, "v2", ["page"], [first, first + HOUR_MS], now_ms())
        assert services.exporter.drain("w") == 2
        (home / "blocker").write_text("a file where a directory should be")
        landing = add(services, p.id, "landing", str(home / "landing"), first)
        blocked = add(services, p.id, "blocked", str(home / "blocker" / "landing"), first)
        assert services.deliverer.drain("d") == 4
        admin = secrets.token_urlsafe(24)
        port = free_port()
        env = env_for(
            home,
            port,
            RAWEXPORT_ADMIN_TOKEN=admin,
            RAWEXPORT_DELIVERY_WORKERS="0",
            RAWEXPORT_RATE_LIMIT="1000",
            RAWEXPORT_RATE_BURST="1000",
            RAWEXPORT_COMPACT_INTERVAL="3600",
            RAWEXPORT_SWEEP_INTERVAL="3600",
        )
        with Server(["serve"], env, port, home / "serve.log") as server:
            server.wait_ready()
            yield Push(server, services, admin, p.ai, landing, blocked)
    finally:
        services.close()


@pytest.fixture
def page(browser: Browser, push: Push) -> Iterator[Page]:  # noqa: F811
    """An operator's page; the test must end with no console error."""
    context = browser.new_context()
    tab = context.new_page()
    errors: list[str] = []
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.goto(push.server.base + "/")
    tab.fill("#token", push.admin)
    tab.click("button[type=submit]")
    expect(tab.locator("h1")).to_have_text("Projects")
    yield tab
    context.close()
    assert errors == [], errors


def test_a_paused_destination_says_why_and_a_click_redelivers(
    push: Push, page: Page, tmp_path: Path
) -> None:
    blocked = push.services.catalog.destination_by_id(push.blocked.id)
    assert blocked is not None and blocked.state == "paused" and blocked.paused_reason
    page.goto(f"{push.server.base}/console/p/{push.ai}")
    page.click("a.destinations-link")
    expect(page).to_have_url(f"{push.server.base}/console/p/{push.ai}/destinations")
    card = page.locator("article.destination[data-name=blocked]")
    expect(card).to_have_attribute("data-state", "paused")
    reason = card.locator(".paused-reason").inner_text()
    assert reason == blocked.paused_reason
    assert reason.startswith("2 deliveries failed in a row; the last: NotADirectoryError")
    landing = page.locator("article.destination[data-name=landing]")
    expect(landing).to_have_attribute("data-state", "active")
    expect(landing.locator(".counts")).to_have_text("delivered 2")
    page.screenshot(path=str(tmp_path / "destinations.png"), full_page=True)

    [d, *_] = push.services.catalog.deliveries(destination_id=push.landing.id)
    assert d.status == "delivered"
    row = page.locator(f"tr.delivery[data-id='{d.id}']")
    expect(row).to_have_attribute("data-status", "delivered")
    assert d.location is not None and d.location in row.locator(".location").inner_text()
    row.locator("button.redeliver").click()
    expect(page.locator("p.flash")).to_contain_text(f"Delivery {d.id} (")
    row = page.locator(f"tr.delivery[data-id='{d.id}']")
    expect(row).to_have_attribute("data-status", "queued")
    expect(row.locator("button.redeliver")).to_have_count(0)
    again = push.services.catalog.delivery(d.id)
    assert again is not None and again.status == "queued"

    page.locator("article.destination[data-name=blocked] button.resume").click()
    expect(page.locator("article.destination[data-name=blocked]")).to_have_attribute(
        "data-state", "active"
    )
    resumed = push.services.catalog.destination_by_id(push.blocked.id)
    assert resumed is not None and (resumed.state, resumed.failures) == ("active", 0)
    log = json.dumps([r.error for r in push.services.catalog.deliveries(destination_id=blocked.id)])
    assert "NotADirectoryError" in log  # its deliveries keep their last error until retried
