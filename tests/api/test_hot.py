"""The hot paths (api/hot.py) and the kept replies (api/cache.Replies): the same answers as
the framework's way and as the steps, the rate limit still counted, and no garbage cycles
left per request by the connection guards (api/limits.py)."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from rawexport.api import hot
from rawexport.api.limits import guarded_protocol
from rawexport.timeutil import DAY_MS, HOUR_MS, beijing, beijing_hour_label
from tests.conftest import CURRENT_HOUR, NOW, World

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

PAST = CURRENT_HOUR - 3 * HOUR_MS
DAY = beijing(PAST - DAY_MS).strftime("%Y%m%d")


@pytest.fixture
def w(make_world: Callable[..., World]) -> World:
    world = make_world()
    for t in ("page", "visit"):
        world.finish(t, PAST)
    return world


def urls(world: World) -> list[str]:
    ai, hour = world.project.ai, beijing_hour_label(PAST)
    return [
        f"/v2/insights/hour/page/{ai}/{hour}.json?expire=60",
        f"/v2/insights/hour/{ai}/{hour}.json",
        f"/v2/insights/day/page/{ai}/{DAY}.json",
        f"/insights/{ai}/{DAY}.json?expire=30",
        f"/v2/insights/hour/page/{ai}/{hour}.json?expire=0",  # 400
        f"/v2/insights/week/page/{ai}/{hour}.json",  # 400
        f"/insights/{ai}/2025-13-01.json",  # 400
        f"/v2/insights/hour/page/other{ai}/{hour}.json",  # 401: another project's ai
        "/healthz",
    ]


def answer(client: TestClient, url: str, headers: dict[str, str]) -> tuple[Any, ...]:
    r = client.get(url, headers=headers)
    kept = {k: v for k, v in r.headers.items() if k in ("content-type", "retry-after")}
    return r.status_code, kept, r.headers.get("content-length"), r.content


def test_hot_paths_answer_as_the_framework_does(w: World, monkeypatch: pytest.MonkeyPatch) -> None:
    headers = w.token_headers()
    wrong = {"Authorization": w.token[:-1] + ("y" if w.token.endswith("x") else "x")}
    requests = [(u, h) for u in urls(w) for h in (headers, wrong, {})]
    fast = [answer(w.client, u, h) for u, h in requests]
    assert {a[0] for a in fast} == {200, 400, 401}
    monkeypatch.setattr(hot.HotPaths, "_find", lambda self, path: None)
    slow = [answer(w.client, u, h) for u, h in requests]
    assert fast == slow


def test_a_failing_answer_is_a_500_with_a_request_id_and_counted_once(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = TestClient(w.client.app, raise_server_exceptions=False)

    def broken(*args: Any) -> Any:
        raise RuntimeError("boom")

    before = answer(client, urls(w)[0], w.token_headers())
    assert before[0] == 200
    monkeypatch.setattr(w.catalog, "hour_jobs", broken)
    w.finish("page", PAST)  # a new generation: the next request reads the catalog
    r = client.get(urls(w)[0], headers=w.token_headers())
    assert r.status_code == 500
    assert r.json()["message"] == "Internal Server Error" and r.json()["requestId"]
    text = client.get("/metrics").text
    line = (
        'rawexport_http_request_duration_seconds_count{method="GET",'
        'route="/v2/insights/{export_type}/{data_type}/{ai}/{export_date}.json",status="500"}'
    )
    assert f"{line} 1.0" in text


def test_a_kept_reply_still_takes_its_turn(make_world: Callable[..., World]) -> None:
    world = make_world(rate_limit=0.001, rate_burst=3, rate_queue=0)
    world.finish("page", PAST)
    url, headers = urls(world)[0], world.token_headers()
    codes = [world.client.get(url, headers=headers).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]


def test_a_kept_reply_follows_the_clock(w: World) -> None:
    """requestTime changes with the minute; links past half the asked life are new ones."""
    url, headers = urls(w)[0].replace("expire=60", "expire=1"), w.token_headers()
    first = w.client.get(url, headers=headers).json()
    assert w.client.get(url, headers=headers).json() == first  # kept
    w.clock.now += 31_000  # the same minute (NOW is on one); the 60 s links are past half
    assert NOW % 60_000 == 0
    later = w.client.get(url, headers=headers).json()
    assert later["requestTime"] == first["requestTime"]
    assert later["downloadLinks"] != first["downloadLinks"]
    w.clock.now += 30_000
    assert w.client.get(url, headers=headers).json()["requestTime"] != first["requestTime"]


def test_a_kept_reply_ends_with_its_auth_code(w: World) -> None:
    """A code valid until the middle of a minute answers until then, kept reply or not."""
    project, key, _ = w.add_project("long", retention_days=60)
    w.finish("page", PAST, project=project)
    w.clock.now = NOW + 10_000
    headers = w.headers(key)  # valid for auth_code_days from now: until hh:mm:10
    url = f"/v2/insights/hour/page/{project.ai}/{beijing_hour_label(PAST)}.json"
    w.clock.now = NOW + w.settings.auth_code_days * DAY_MS + 5_000
    assert [w.client.get(url, headers=headers).status_code for _ in range(3)] == [200] * 3
    w.clock.now += 5_000  # the same minute, the code's last millisecond passed
    assert w.client.get(url, headers=headers).status_code == 401


class _Transport(asyncio.Transport):
    """Enough of a socket transport for uvicorn's protocol, counting what it writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 40000)}.get(
            name, default
        )

    def write(self, data: Any) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def test_requests_leave_no_garbage_cycles(make_world: Callable[..., World]) -> None:
    """Each request's objects go when it ends, not at the next garbage collection: a
    cycle per request (the sendfile extension once held its request's cycle: 12 objects
    a request) makes the collector run often and stall the event loop. Reads in threads
    (the health probe once a second) may leave a few; the caches here do not age."""
    w = make_world(cache_seconds=600)
    w.finish("page", PAST)
    app = w.client.app
    protocol = guarded_protocol(100, 5.0, 65536)
    config = uvicorn.Config(app, http=protocol, lifespan="off", log_config=None)
    config.load()
    token = w.token
    requests = [
        f"GET {url} HTTP/1.1\r\nHost: t\r\nAuthorization: {token}\r\n\r\n".encode()
        for url in urls(w)
    ]

    async def run() -> int:
        loop = asyncio.get_running_loop()
        conn = config.http_protocol_class(  # type: ignore[call-arg]
            config=config, server_state=ServerState(), app_state={}, _loop=loop
        )
        transport = _Transport()
        conn.connection_made(transport)
        for raw in requests * 3:  # warm: caches filled, links issued
            await one(conn, transport, raw)
        gc.collect()
        gc.disable()
        try:
            for raw in requests * 20:
                await one(conn, transport, raw)
            return gc.collect()
        finally:
            gc.enable()
            conn.connection_lost(None)

    async def one(conn: Any, transport: _Transport, raw: bytes) -> None:
        before = transport.writes
        conn.data_received(raw)
        for _ in range(10_000):
            if transport.writes > before and (conn.cycle is None or conn.cycle.response_complete):
                return
            await asyncio.sleep(0)
        raise AssertionError("no answer")

    assert asyncio.run(run()) <= 30  # of 180 requests
