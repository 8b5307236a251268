"""The console in a real headless Chromium (Debian's, driven by Playwright) against a real
`rawexport serve` over a `rawexport demo --no-serve` home."""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from rawexport.store import LocalEventStore
from rawexport.timeutil import (
    HOUR_MS,
    beijing_day_start,
    beijing_hour_label,
    hour_floor,
    now_ms,
    parse_day_arg,
)
from tests.e2e_util import RAWEXPORT, Server, env_for, free_port, get_json, run_cli

pytestmark = pytest.mark.e2e
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@dataclass
class Site:
    server: Server
    home: Path
    creds: dict[str, Any]
    admin: str
    other_ai: str  # a second project: three hours exported by serve, one of them failing
    other_token: str
    bad_hour: int
    bad_file: Path
    operator_state: Path  # the operator's signed-in cookies, shared by the tests

    @property
    def base(self) -> str:
        return self.server.base

    def api(self, path: str, token: str | None = None) -> tuple[int, Any]:
        return get_json(self.base + path, {"Authorization": token or self.creds["api_token"]})

    def wait_exported(self, ai: str, token: str, hours: list[int]) -> None:
        """Until serve has exported (or failed) each of these hours of every type."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            states = [
                self.api(f"{path}/{beijing_hour_label(h)}.json", token)[1]
                for h in hours
                for path in (f"/v2/insights/hour/{ai}", f"/insights/{ai}")
            ]
            if all(b["status"] != "RUNNING" for b in states):
                return
            time.sleep(0.5)
        raise AssertionError(f"serve did not export {hours} within 120 s")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: `make system-deps` installs it")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, browser: Browser) -> Iterator[Site]:
    home = tmp_path_factory.mktemp("console")
    port = free_port()
    admin = secrets.token_urlsafe(24)
    env = env_for(
        home,
        port,
        RAWEXPORT_ADMIN_TOKEN=admin,
        RAWEXPORT_RATE_LIMIT="1000",
        RAWEXPORT_RATE_BURST="1000",
        RAWEXPORT_COMPACT_INTERVAL="3600",
        RAWEXPORT_SWEEP_INTERVAL="3600",
    )
    demo = [*RAWEXPORT, "demo", "--no-serve", "--events-per-hour", "200"]
    subprocess.run(demo, env=env, check=True, capture_output=True, timeout=280)
    creds = json.loads((home / "demo-credentials.json").read_text())
    # other-shop: export from 3 hours ago, events in those hours, and the middle hour's
    # page events unreadable (a disk fault), all before serve starts and exports them.
    first = hour_floor(now_ms()) - 3 * HOUR_MS
    since = beijing_hour_label(first)
    other = run_cli(["project", "create", "--name", "other-shop", "--export-since", since], env)
    other_token = run_cli(["token", "create", "--project", other["ai"]], env)["token"]
    run_cli(["generate", "--project", other["ai"], "--start", since, "--hours", "3"]
            + ["--events-per-hour", "50"], env)  # fmt: skip
    bad_hour = first + HOUR_MS
    bad = (
        LocalEventStore(home / "events").hour_dir(other["ai"], "page", bad_hour)
        / f"{'0' * 32}.parquet"
    )
    bad.write_bytes(b"PAR1 this is not a parquet file")
    with Server(["serve"], env, port, home / "serve.log") as server:
        server.wait_ready()
        context = browser.new_context()
        page = context.new_page()
        page.goto(server.base + "/")
        page.fill("#token", admin)
        page.click("button[type=submit]")
        expect(page.locator("h1")).to_have_text("Projects")
        state = home / "operator-state.json"
        context.storage_state(path=str(state))
        context.close()
        yield Site(server, home, creds, admin, other["ai"], other_token, bad_hour, bad, state)


@dataclass
class Tab:
    page: Page
    errors: list[str]


@pytest.fixture
def tabs(browser: Browser, site: Site) -> Iterator[Callable[..., Tab]]:
    """New pages (operator, or signed out); each must end with no console errors."""
    made: list[tuple[BrowserContext, Tab]] = []

    def make(operator: bool = True, **options: Any) -> Tab:
        state = str(site.operator_state) if operator else None
        context = browser.new_context(storage_state=state, **options)
        page = context.new_page()
        tab = Tab(page, [])
        page.on("console", lambda m: tab.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: tab.errors.append(str(e)))
        made.append((context, tab))
        return tab

    yield make
    for context, tab in made:
        context.close()
        assert tab.errors == [], tab.errors


def cells(page: Page) -> dict[tuple[str, str], tuple[str, str]]:
    """(kind, yyyyMMddHH) -> (data-status, background colour) of every grid cell."""
    found = page.eval_on_selector_all(
        "td.cell",
        "els => els.map(e => [e.dataset.kind, e.dataset.hour, e.dataset.status,"
        " e.className, getComputedStyle(e).backgroundColor])",
    )
    return {(k, h): (s, c) for k, h, s, _, c in found}


def legend(page: Page) -> dict[str, str]:
    found = page.eval_on_selector_all(
        ".legend .swatch",
        "els => els.map(e => [e.dataset.legend, getComputedStyle(e).backgroundColor])",
    )
    return dict(found)


def assert_grid_is_the_api(site: Site, page: Page, ai: str, token: str, day: str) -> set[str]:
    """Every cell's status is the API's for that hour, and its colour the legend's."""
    colours = legend(page)
    assert len(set(colours.values())) == 5, colours  # five distinct colours
    grid = cells(page)
    assert len(grid) == 24 * 11
    for (kind, hour), (status, colour) in grid.items():
        assert hour.startswith(day)
        v2 = f"/v2/insights/hour/{kind}/{ai}/{hour}.json"
        url = f"/insights/{ai}/{hour}.json" if kind == "v1" else v2
        code, body = site.api(url, token)
        assert code == 200 and body["status"] == status, (kind, hour, status, body)
        rows = page.get_attribute(f"td.cell[data-kind={kind}][data-hour='{hour}'] a", "title")
        empty = status == "FINISHED" and rows is not None and ", 0 rows" in rows
        assert colour == colours["empty" if empty else status], (kind, hour, status)
    return {s for s, _ in grid.values()}


def grid_url(site: Site, ai: str, day: str) -> str:
    return f"{site.base}/console/p/{ai}?day={day}"


def hour_revisions(page: Page, data_type: str) -> list[tuple[int, str, bool]]:
    rows = page.eval_on_selector_all(
        f"section.revisions[data-type={data_type}] tr.revision",
        "els => els.map(e => [Number(e.dataset.revision), e.dataset.status,"
        " e.classList.contains('current')])",
    )
    return [(int(r), str(s), bool(c)) for r, s, c in rows]


def test_grid_error_and_rerun(site: Site, tabs: Callable[..., Tab], tmp_path: Path) -> None:
    """other-shop's page hour with an unreadable event file is in ERROR with its message;
    every grid cell is the API's status, hour by hour (other-shop's day, the demo day and
    today's); fixed and rerun, the cell turns RUNNING, then FINISHED by itself with a new
    revision."""
    ai, token, label = site.other_ai, site.other_token, beijing_hour_label(site.bad_hour)
    site.wait_exported(ai, token, [site.bad_hour - HOUR_MS, site.bad_hour, site.bad_hour + HOUR_MS])
    page = tabs().page
    page.goto(f"{site.base}/console/p/{ai}?day={label[:8]}")
    cell = page.locator(f"td.cell[data-kind=page][data-hour='{label}']")
    expect(cell).to_have_attribute("data-status", "ERROR")
    seen = assert_grid_is_the_api(site, page, ai, token, label[:8])
    assert {"ERROR", "FINISHED"} <= seen, seen
    if beijing_hour_label(now_ms())[:8] == label[:8]:  # the open hour is on this day
        assert "RUNNING" in seen, seen
    page.screenshot(path=str(tmp_path / "grid.png"), full_page=True)

    cell.locator("a").click()
    expect(page.locator("#hour")).to_have_attribute("data-status", "ERROR")
    message = page.inner_text(".error-box .errormsg")
    assert "PermanentExportError" in message and site.bad_file.name in message
    [(first, status, current)] = hour_revisions(page, "page")
    assert status == "error" and not current
    page.screenshot(path=str(tmp_path / "hour.png"), full_page=True)

    site.bad_file.unlink()
    page.click("button.rerun-type")
    cell = page.locator(f"td.cell[data-kind=page][data-hour='{label}']")
    assert cell.get_attribute("data-status") == "RUNNING"
    assert page.get_attribute("#grid", "hx-trigger") == "every 2s"
    expect(cell).to_have_attribute("data-status", "FINISHED", timeout=60_000)  # no reload
    cell.locator("a").click()
    revisions = hour_revisions(page, "page")
    assert revisions == [(first + 1, "finished", True), (first, "error", False)]
    code, body = site.api(f"/v2/insights/hour/page/{ai}/{label}.json", token)
    assert body["status"] == "FINISHED"

    demo_ai, demo_token = site.creds["ai"], site.creds["api_token"]
    page.goto(grid_url(site, demo_ai, site.creds["example_day"]))
    assert assert_grid_is_the_api(site, page, demo_ai, demo_token, site.creds["example_day"])
    # Today's grid is live: compare once the closed hours are exported, and again should
    # an hour close meanwhile.
    for _ in range(3):
        open_hour = hour_floor(now_ms())
        start = beijing_day_start(open_hour)
        site.wait_exported(demo_ai, demo_token, list(range(start, open_hour, HOUR_MS))[-3:])
        today = beijing_hour_label(start)[:8]
        page.goto(grid_url(site, demo_ai, today))
        seen = assert_grid_is_the_api(site, page, demo_ai, demo_token, today)
        if hour_floor(now_ms()) == open_hour:
            break
    assert "RUNNING" in seen


def test_overview_and_a_download_matching_the_manifest(
    site: Site, tabs: Callable[..., Tab], tmp_path: Path
) -> None:
    page = tabs(viewport={"width": 1280, "height": 800}).page
    page.goto(site.base + "/console/")
    rows = page.locator("table.projects tbody tr")
    expect(rows).to_have_count(2)
    demo_row = page.locator(f"tr[data-ai='{site.creds['ai']}']")
    assert demo_row.locator(".last-finished").inner_text()[:8].isdigit()
    page.screenshot(path=str(tmp_path / "overview.png"), full_page=True)

    label = beijing_hour_label(parse_day_arg(site.creds["example_day"]) + 9 * HOUR_MS)
    page.goto(f"{site.base}/console/p/{site.creds['ai']}/hour/{label}/visit")
    manifest_href = page.get_attribute("a.manifest", "href")
    assert manifest_href is not None
    manifest = page.request.get(site.base + manifest_href).json()  # the session's cookies
    parts = {p["key"].rsplit("/", 1)[1]: p for p in manifest["parts"]}
    assert parts
    with page.expect_download() as info:
        page.locator("a.download").first.click()
    download = info.value
    data = Path(download.path()).read_bytes()
    entry = parts[download.suggested_filename]
    assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]
    page.screenshot(path=str(tmp_path / "hour-files.png"), full_page=True)


def test_a_new_token_is_shown_once_then_works(site: Site, tabs: Callable[..., Tab]) -> None:
    page = tabs().page
    page.goto(grid_url(site, site.creds["ai"], site.creds["example_day"]))
    page.fill("#tok-desc", "browser test")
    page.click("text=Create API token")
    token = page.inner_text("code.secret-value[data-label='API token']")
    assert len(token) == 48
    code, body = site.api(f"/v2/insights/day/{site.creds['ai']}/20000101.json", token)
    assert code == 200 and body["status"] == "NOT_EXISTS"
    code, _ = site.api(
        f"/v2/insights/day/{site.creds['ai']}/20000101.json",
        token[:-1] + ("y" if token.endswith("x") else "x"),
    )
    assert code == 401
    page.go_back()
    page.reload()
    assert token not in page.content()
    assert page.locator(f"text={token[:5]}*{token[-5:]}").count() == 1
    page.goto(site.base + "/console/")
    assert token not in page.content()


def test_a_project_token_sees_its_project_only(site: Site, tabs: Callable[..., Tab]) -> None:
    page = tabs(operator=False, viewport={"width": 390, "height": 844}, is_mobile=True).page
    page.goto(site.base + "/")
    page.fill("#token", site.creds["api_token"])
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{site.base}/console/p/{site.creds['ai']}")
    assert page.inner_text(".who") == "Project (read only)"
    forms = page.eval_on_selector_all("form[method=post]", "els => els.map(e => e.action)")
    assert forms == [site.base + "/console/signout"]
    assert page.locator("button:has-text('Rerun'), button:has-text('Revoke')").count() == 0
    assert page.locator(".command code").count() >= 2
    assert site.creds["api_token"] not in page.content()
    day = site.creds["example_day"]
    page.goto(grid_url(site, site.creds["ai"], day))
    page.locator("td.cell[data-kind=page] a").nth(9).click()
    assert page.locator("form[action$='/rerun']").count() == 0
    assert "rawexport pull" in page.inner_text("body")
    for url in (f"/console/p/{site.other_ai}", f"/console/p/{site.other_ai}/grid"):
        r = page.request.get(site.base + url)
        assert r.status == 404 and "other-shop" not in r.text()
    r = page.request.get(site.base + "/console/")  # the overview is the operator's
    assert site.other_ai not in r.text()
    csrf = page.get_attribute("input[name=csrf]", "value")
    assert csrf is not None
    r = page.request.post(
        f"{site.base}/console/p/{site.creds['ai']}/export", form={"csrf": csrf, "enabled": "off"}
    )
    assert r.status == 403
    code, body = site.api(f"/v2/insights/day/{site.creds['ai']}/{day}.json")
    assert code == 200 and body["status"] != "NOT_EXISTS"  # export still on


def test_a_bad_token_or_a_missing_csrf_token_is_refused(
    site: Site, tabs: Callable[..., Tab]
) -> None:
    out_tab = tabs(operator=False)
    out = out_tab.page
    out.goto(site.base + "/console/signin")
    out.fill("#token", site.admin[:-1])
    out.click("button[type=submit]")
    expect(out.locator("p.error")).to_contain_text("not valid")
    # The refused sign-in answers 401, which Chromium logs; nothing else may be logged.
    assert out_tab.errors == [
        "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
    ]
    out_tab.errors.clear()
    assert out.request.get(site.base + "/console/", max_redirects=0).status == 303

    page = tabs().page
    label = beijing_hour_label(parse_day_arg(site.creds["example_day"]) + 14 * HOUR_MS)
    hour_url = f"{site.base}/console/p/{site.creds['ai']}/hour/{label}/action"
    page.goto(hour_url)
    before = hour_revisions(page, "action")
    url = f"{site.base}/console/p/{site.creds['ai']}/rerun"
    form: dict[str, str | float | bool] = {"hour": label, "data_type": "action"}
    for data in (form, {**form, "csrf": "forged"}):
        r = page.request.post(url, form=data, max_redirects=0)
        assert r.status == 403 and "CSRF" in r.text()
    r = out.request.post(url, form={**form, "csrf": "anything"}, max_redirects=0)
    assert r.status == 403
    time.sleep(1.5)  # a queued revision would be running or done by now
    page.goto(hour_url)
    assert hour_revisions(page, "action") == before
    with urllib.request.urlopen(site.base + "/console/signin") as r:
        assert "script-src 'self'" in r.headers["content-security-policy"]


def test_api_docs_come_from_rawexport_itself(site: Site, tabs: Callable[..., Tab]) -> None:
    """/docs in a signed-in operator's browser: Swagger UI renders every route from files
    rawexport serves, under the console's CSP, with no request to another origin and no
    console error (a CSP violation would be one)."""
    tab = tabs()
    seen: list[str] = []
    tab.page.on("request", lambda r: seen.append(r.url))
    tab.page.goto(site.base + "/docs")
    expect(tab.page.locator(".opblock").first).to_be_visible()
    paths = tab.page.eval_on_selector_all(
        ".opblock-summary-path", "els => els.map(e => e.dataset.path)"
    )
    code, doc = get_json(site.base + "/openapi.json", {})
    assert code == 200 and set(paths) == set(doc["paths"])
    tab.page.locator(".opblock-summary").first.click()  # open one: its icons load too
    expect(tab.page.locator(".opblock-body").first).to_be_visible()
    assert seen and all(u.startswith(site.base + "/") or u.startswith("data:") for u in seen), seen
    with urllib.request.urlopen(site.base + "/docs") as r:
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert "unsafe" not in r.headers["content-security-policy"]
