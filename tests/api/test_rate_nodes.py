"""`rate_nodes`: each of N nodes allows 1/N of the rate, the burst and the queue, of the
export API's per-credential limit and of /auth/token's limits."""

from __future__ import annotations

import warnings
from pathlib import Path

from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from rawexport.api.app import create_app
from rawexport.api.ratelimit import AUTH_QUEUE, node_auth_limiter, node_limiter
from rawexport.blobs.local import LocalBlobStore
from rawexport.catalog import Catalog
from rawexport.settings import Settings
from tests.conftest import BASE_URL, NOW


def test_each_node_allows_its_share_of_rate_burst_and_queue() -> None:
    s = Settings(rate_limit=6.0, rate_burst=6, rate_queue=30, rate_nodes=3)
    limiter = node_limiter(s)
    assert (limiter.rate, limiter.burst, limiter.queue) == (2.0, 2, 10)
    assert limiter.max_delay == s.rate_max_delay  # a time, not a count: not divided
    alone = node_limiter(s.replace(rate_nodes=1))
    assert (alone.rate, alone.burst, alone.queue) == (6.0, 6, 30)
    auth = node_auth_limiter(Settings(auth_rate_limit=3.0, auth_rate_burst=9, rate_nodes=3))
    assert (auth.rate, auth.burst, auth.queue) == (1.0, 3, AUTH_QUEUE // 3)
    # A share never rounds down to nothing.
    few = node_limiter(Settings(rate_burst=2, rate_queue=3, rate_nodes=4))
    assert (few.burst, few.queue) == (1, 1)


def test_a_node_of_two_delays_and_refuses_at_half_the_limits(tmp_path: Path) -> None:
    """Through the app as `serve` builds it (its own limiter): 4 at once and 4 waiting in
    all is 2 and 2 on each of two nodes; a delayed request waits twice as long."""
    s = Settings(
        home=tmp_path / "home",
        public_url=BASE_URL,
        rate_limit=0.02,  # slow enough that the test's own time drains nothing
        rate_burst=4,
        rate_queue=4,
        rate_max_delay=10_000,
        rate_nodes=2,
    )
    catalog = Catalog(s.database_url)
    project = catalog.create_project("main")
    token = catalog.create_api_token(project.id)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    app = create_app(s, catalog, LocalBlobStore(s.exports_dir), clock=lambda: NOW, sleep=sleep)
    url = f"/v2/insights/hour/page/{project.ai}/2025011009.json"
    with TestClient(app) as client:
        codes = [client.get(url, headers={"Authorization": token}).status_code for _ in range(5)]
    catalog.close()
    assert codes == [200, 200, 200, 200, 429]
    assert [round(d) for d in slept] == [100, 200]  # 1 and 2 turns of 0.01/s
