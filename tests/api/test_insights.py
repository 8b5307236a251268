from collections.abc import Callable
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import event

from rawexport.api import insights as ins
from rawexport.blobs import links
from rawexport.blobs.links import SECRET_NAME
from rawexport.catalog import Job
from rawexport.schema import DATA_TYPE_NAMES, V1_TYPE_NAMES
from rawexport.timeutil import DAY_MS, HOUR_MS, Window, parse_export_date, parse_v1_date
from tests.conftest import BASE_URL, CURRENT_HOUR, ENABLED_SINCE, NOW, World

PAST = CURRENT_HOUR - 3 * HOUR_MS  # 2025-01-10 09:00 Beijing, closed
FIRST = ENABLED_SINCE - ENABLED_SINCE % HOUR_MS + HOUR_MS  # first hour after enablement


def job(status: str, revision: int = 1, error: str | None = None) -> Job:
    return Job(
        id=revision,
        project_id=1,
        version="v2",
        data_type="page",
        hour_ms=PAST,
        revision=revision,
        preview=False,
        status=status,
        attempts=1,
        next_attempt_ms=0,
        lease_owner=None,
        lease_expires_ms=None,
        rows=None,
        bytes=None,
        prefix=None,
        manifest_key=None,
        error=error,
        created_ms=0,
        started_ms=None,
        finished_ms=None,
    )


def hour_window(hour_ms: int) -> Window:
    return Window("hour", "x", hour_ms)


def answer(
    w: World,
    types: tuple[str, ...],
    window: Window,
    expire: int = 5,
    scope: str = "s",
    version: str = "v2",
    now: int = NOW,
) -> ins.Answer:
    engine = ins.Insights(w.catalog, BASE_URL, w.catalog.secret(SECRET_NAME))
    project = w.catalog.project_by_id(w.project.id)
    return engine.answer(project, version, types, window, expire, scope, now)


def test_hour_status_per_decision_5(world: World) -> None:
    p = world.project
    hs = ins.hour_status
    assert hs(p, "v2", PAST, [job("finished")], NOW).status == ins.FINISHED
    assert hs(p, "v2", PAST, [], NOW) == ins.HourStatus(ins.RUNNING)  # not planned yet
    for pending in ("queued", "running", "retrying"):
        assert hs(p, "v2", PAST, [job(pending)], NOW).status == ins.RUNNING
    assert hs(p, "v2", CURRENT_HOUR, [job("finished")], NOW).status == ins.RUNNING
    failed = hs(p, "v2", PAST, [job("error", error="disk full")], NOW)
    assert (failed.status, failed.error) == (ins.ERROR, "disk full")
    # a newer revision running or failed does not hide the finished one
    newer = [job("running", 2), job("finished", 1)]
    assert hs(p, "v2", PAST, newer, NOW).job == newer[1]
    assert hs(p, "v2", PAST, [job("error", 2), job("finished", 1)], NOW).status == ins.FINISHED
    assert hs(p, "v2", PAST, [job("error", 2), job("queued", 1)], NOW).status == ins.RUNNING
    newest = [job("finished", 3), job("finished", 2)]
    assert hs(p, "v2", PAST, newest, NOW).job == newest[0]
    not_exists = {
        ins.DISABLED: (replace(p, export_enabled=False), PAST, "v2"),
        ins.BEFORE: (p, FIRST - HOUR_MS, "v2"),
        ins.EXPIRED: (replace(p, retention_days=0), PAST, "v2"),
        ins.FUTURE: (p, CURRENT_HOUR + HOUR_MS, "v2"),
    }
    for reason, (project, hour, version) in not_exists.items():
        assert hs(project, version, hour, [job("finished")], NOW) == ins.HourStatus(
            ins.NOT_EXISTS, reason
        )
    assert hs(p, "v2", FIRST, [job("finished")], NOW).status == ins.FINISHED
    assert hs(replace(p, v1_enabled=False), "v1", PAST, [], NOW).reason == ins.DISABLED
    retained = p.retention_days * DAY_MS
    assert hs(p, "v2", FIRST, [], FIRST + retained).reason == ins.EXPIRED
    assert hs(p, "v2", FIRST, [job("finished")], FIRST + retained - 1).status == ins.FINISHED


def test_finished_hour_links_in_part_order(world: World) -> None:
    _, keys = world.finish("page", PAST, [b"one", b"two", b"three"])
    a = answer(world, ("page",), hour_window(PAST))
    assert a.status == ins.FINISHED and a.error == ""
    got = [urlsplit(u).path.lstrip("/") for u in a.links["page"]]
    assert got == [links.link_path(k, BASE_URL) for k in keys]
    for link in a.links["page"]:
        q = parse_qs(urlsplit(link).query)
        assert q["expires"] == [str(NOW + 5 * 60_000)] and len(q["sign"][0]) == 64


def test_exported_empty_hour_is_finished_without_links(world: World) -> None:
    job, _ = world.finish("page", PAST, [])
    a = answer(world, ("page",), hour_window(PAST))
    assert (a.status, a.links) == (ins.FINISHED, {"page": []})
    # the empty hour's manifest is still linked: it is what says "0 rows"
    assert [urlsplit(u).path.lstrip("/") for u in a.manifests["page"]] == [job.manifest_key]


def test_running_error_and_not_exists_windows(world: World) -> None:
    assert answer(world, ("page",), hour_window(CURRENT_HOUR)).status == ins.RUNNING
    assert answer(world, ("page",), hour_window(PAST)).status == ins.RUNNING  # unexported
    world.queue("page", PAST)
    assert answer(world, ("page",), hour_window(PAST)).status == ins.RUNNING
    world.fail("visit", PAST, "query failed: out of memory")
    failed = answer(world, ("visit",), hour_window(PAST))
    assert failed == ins.Answer(ins.ERROR, {"visit": []}, "query failed: out of memory")
    for hour in (CURRENT_HOUR + HOUR_MS, FIRST - HOUR_MS, FIRST - 20 * DAY_MS):
        assert answer(world, ("page",), hour_window(hour)).status == ins.NOT_EXISTS
    world.catalog.set_export(world.project.ai, False)
    world.finish("page", PAST)
    assert answer(world, ("page",), hour_window(PAST)).status == ins.NOT_EXISTS


def test_v1_needs_v1_enabled(world: World) -> None:
    window = parse_v1_date("2025011009")
    for t in V1_TYPE_NAMES:
        world.finish(t, window.start_ms, version="v1")
    a = answer(world, V1_TYPE_NAMES, window, version="v1")
    assert a.status == ins.FINISHED and len(a.flat()) == 7
    assert "_v2_" not in a.flat()[0]
    off, _, _ = world.add_project("nov1", v1_enabled=False)
    engine = ins.Insights(world.catalog, BASE_URL, "s")
    assert engine.answer(off, "v1", V1_TYPE_NAMES, window, 5, "s", NOW).status == ins.NOT_EXISTS
    # v2 jobs never answer v1 requests
    world.finish("page", PAST - HOUR_MS)
    v1_page = answer(world, ("page",), hour_window(PAST - HOUR_MS), version="v1")
    assert v1_page.status == ins.RUNNING


def test_day_aggregation(world: World) -> None:
    day = parse_export_date("day", "20250109")
    keys = []
    for i, hour in enumerate(day.hours):
        if i != 5:
            keys += world.finish("page", hour, [f"{i}a".encode(), f"{i}b".encode()])[1]
    assert answer(world, ("page",), day).status == ins.RUNNING  # hour 5 not exported
    world.fail("page", day.hours[5], "boom")
    failed = answer(world, ("page",), day)
    assert failed.status == ins.ERROR and failed.error == "page 2025010905: boom"
    keys[10:10] = world.finish("page", day.hours[5], [b"5a", b"5b"])[1]
    done = answer(world, ("page",), day)
    assert done.status == ins.FINISHED
    paths = [urlsplit(u).path.lstrip("/") for u in done.links["page"]]
    assert paths == [links.link_path(k, BASE_URL) for k in keys]  # hour, part


def test_day_of_enablement_drops_earlier_hours_and_today_is_running(world: World) -> None:
    first_day = parse_export_date("day", "20250105")
    kept = [h for h in first_day.hours if h >= FIRST]
    assert len(kept) == 11  # 13:00 .. 23:00
    for hour in kept:
        world.finish("page", hour)
    assert answer(world, ("page",), first_day).status == ins.FINISHED
    assert len(answer(world, ("page",), first_day).links["page"]) == 11
    assert answer(world, ("page",), parse_export_date("day", "20250104")).status == ins.NOT_EXISTS
    today = parse_export_date("day", "20250110")
    for hour in today.hours:
        if hour < CURRENT_HOUR:
            world.finish("page", hour)
    assert answer(world, ("page",), today).status == ins.RUNNING
    tomorrow = parse_export_date("day", "20250111")
    assert answer(world, ("page",), tomorrow).status == ins.NOT_EXISTS
    # a day partly past retention serves the hours still retained
    late = first_day.start_ms + 15 * DAY_MS + 18 * HOUR_MS
    partly = answer(world, ("page",), first_day, now=late)
    assert partly.status == ins.FINISHED and len(partly.links["page"]) == 5  # 19:00 .. 23:00


def test_all_types_window(world: World) -> None:
    window = hour_window(PAST)
    for t in DATA_TYPE_NAMES[:-1]:
        world.finish(t, PAST)
    assert answer(world, DATA_TYPE_NAMES, window).status == ins.RUNNING
    world.finish(DATA_TYPE_NAMES[-1], PAST, [])
    a = answer(world, DATA_TYPE_NAMES, window)
    assert a.status == ins.FINISHED and list(a.links) == list(DATA_TYPE_NAMES)
    assert [len(v) for v in a.links.values()] == [1] * 9 + [0]
    world.fail("visit", PAST - HOUR_MS, "bad")
    assert answer(world, DATA_TYPE_NAMES, hour_window(PAST - HOUR_MS)).status == ins.ERROR


def test_repeated_requests_get_the_same_links_until_they_expire(world: World) -> None:
    world.finish("page", PAST, [b"x", b"y"])
    window = hour_window(PAST)
    first = answer(world, ("page",), window, expire=5, scope="v2/hour/page/2025011009")
    again = answer(
        world, ("page",), window, expire=6, scope="v2/hour/page/2025011009", now=NOW + 2 * 60_000
    )
    assert again == first  # 3 of the 6 minutes asked are left: reused, expiry not extended
    longer = answer(
        world, ("page",), window, expire=60, scope="v2/hour/page/2025011009", now=NOW + 4 * 60_000
    )
    assert longer != first  # 1 minute left of 60 asked: new links
    other_scope = answer(world, ("page",), window, expire=60, scope="v2/day/page/20250110")
    assert other_scope != first
    later = answer(world, ("page",), window, scope="v2/hour/page/2025011009", now=NOW + 5 * 60_000)
    assert later != first  # the first links expired
    world.finish("page", PAST, [b"re-exported"])  # a new revision: another set of files
    fresh = answer(world, ("page",), window, scope="v2/hour/page/2025011009", now=NOW + 5 * 60_000)
    assert fresh != later and len(fresh.links["page"]) == 1


def test_links_never_outlive_retention(world: World) -> None:
    world.finish("page", FIRST)
    now = FIRST + 15 * DAY_MS - 60_000
    a = answer(world, ("page",), hour_window(FIRST), expire=10080, now=now)
    expires = int(parse_qs(urlsplit(a.links["page"][0]).query)["expires"][0])
    assert expires == FIRST + 15 * DAY_MS


@pytest.mark.parametrize("finished", [False, True])
def test_one_jobs_query_and_at_most_one_files_query(
    make_world: Callable[..., World], finished: bool
) -> None:
    w = make_world()
    day = parse_export_date("day", "20250109")
    types = ("page", "visit")
    if finished:
        for t in types:
            for hour in day.hours:
                w.finish(t, hour)
    statements: list[str] = []
    event.listen(w.catalog.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    a = answer(w, types, day, scope="q")
    assert a.status == (ins.FINISHED if finished else ins.RUNNING)
    assert sum("FROM export_jobs" in s for s in statements) == 1
    assert sum("FROM export_files" in s for s in statements) == (1 if finished else 0)
