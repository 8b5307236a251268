"""Every error answer outside the export envelopes has the one error body, and a backend
outage (the catalog database, S3, the event store) answers 503 with Retry-After, never 500.

Like datasette's test_error_shape: walk the ways a request fails and check each answer's
exact shape: `{"message": ..., "errors": [...]}`, with `requestId` on a 500 alone.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy.exc import OperationalError
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from rawexport.api.app import create_app
from rawexport.api.insights import Insights
from rawexport.blobs import links
from rawexport.blobs.local import LocalBlobStore
from rawexport.blobs.s3 import S3BlobStore
from rawexport.catalog import Catalog
from rawexport.ingest.group_commit import Ingestor
from rawexport.settings import Settings
from rawexport.timeutil import HOUR_MS
from tests import pg_util
from tests.conftest import BASE_URL, CURRENT_HOUR, NOW, World, csv_gz
from tests.s3_util import FAKE_AWS_ENV, UNSET_AWS_ENV, closed_port

PAST = CURRENT_HOUR - 3 * HOUR_MS
E2 = "/v2/insights/hour/page/{ai}/2025011009.json"
E3 = "/v2/insights/hour/{ai}/2025011009.json"
V1 = "/insights/{ai}/2025011009.json"
TRACKER = "/v3/projects/{ai}/collect?stm=1700000000123"
EVENT = {
    "eventType": "CUSTOM",
    "timestamp": 1700000000000,
    "eventName": "buy",
    "deviceId": "dev-1",
    "platform": "web",
}


def assert_error_body(r: Any, status: int, message: str | None = None) -> dict[str, Any]:
    """The one error body, exactly: its keys in order, their types; the message if given."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body: dict[str, Any] = json.loads(r.content)
    keys = ["message", "errors", "requestId"] if status == 500 else ["message", "errors"]
    assert list(body) == keys, body
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["errors"], list)
    if status == 500:
        assert isinstance(body["requestId"], str) and len(body["requestId"]) == 16
    if message is not None:
        assert body["message"] == message
    return body


def assert_retry_later(r: Any, message: str) -> None:
    assert_error_body(r, 503, message)
    assert r.headers["retry-after"] == "5"


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    """The world's app as a server sees it: an unhandled error is a 500 answer, not raised."""
    with TestClient(world.client.app, raise_server_exceptions=False) as c:
        yield c


def signed(world: World, path: str) -> str:
    secret = world.catalog.secret(links.SECRET_NAME)
    return links.make_link(BASE_URL, secret, path, world.clock.now + 60_000)


def test_the_error_answers_have_one_shape(world: World, client: TestClient) -> None:
    ai = world.project.ai
    assert_error_body(client.get("/no/such/route"), 404, "Not Found")
    assert_error_body(client.post("/healthz"), 405, "Method Not Allowed")
    assert_error_body(client.post("/auth/token"), 401, "Unauthorized")
    assert_error_body(client.get(E2.format(ai=ai)), 401, "Unauthorized")
    assert_error_body(client.post("/auth/token", content=b"a" * 70_000), 413, "Payload Too Large")
    # the collectors' refusals (codecs.Refused, a UserError)
    r = client.post(TRACKER.format(ai=ai), content=b"[]", headers={"content-encoding": "br"})
    assert_error_body(r, 400, "unsupported Content-Encoding br")
    assert_error_body(client.post(TRACKER.format(ai="f" * 16), content=b"[]"), 404)
    # downloads
    key = "abcd_0123456789abcdef_page_v2_202501100000/part-00000.csv.gz"
    assert_error_body(client.get(f"/{key}"), 403, "Forbidden")
    assert_error_body(client.get(signed(world, key)), 404, "Not Found")
    _, keys = world.finish("page", PAST, [csv_gz("a,b\n1,2\n")])
    link = signed(world, keys[0])
    r = client.get(link, headers={"range": "bytes=999999-"})
    assert_error_body(r, 416, "Range Not Satisfiable")
    assert r.headers["content-range"].startswith("bytes */")


def test_a_bug_is_500_with_a_request_id(
    world: World, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> Any:
        raise KeyError("a bug")

    monkeypatch.setattr(Insights, "answer", broken)
    headers = {"Authorization": world.token}
    for url in (E2, E3, V1):
        body = assert_error_body(client.get(url.format(ai=world.project.ai), headers=headers), 500)
        assert body["message"] == "Internal Server Error"


def catalog_down(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The catalog database stops answering, as during a PostgreSQL restart."""

    def refused() -> Any:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    monkeypatch.setattr(world.catalog.engine, "connect", refused)


def test_a_catalog_outage_is_503_not_500(
    world: World, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every route that reads the catalog: the export API (GET on the hot path, HEAD through
    Starlette), /auth/token, downloads, the collectors."""
    ai = world.project.ai
    code_headers = world.headers()  # a code issued while the catalog answered
    auth_params = world.auth_params()
    # a download whose key is looked up (a v1 day link)
    download = signed(world, f"ab12_{ai}_page_20250110/part-00000.csv.gz")
    catalog_down(world, monkeypatch)
    down = "Service Unavailable: the catalog does not answer; retry later"
    token = {"Authorization": world.token}
    for url in (E2, E3, V1):
        assert_retry_later(client.get(url.format(ai=ai), headers=token), down)
        assert_retry_later(client.get(url.format(ai=ai), headers=code_headers), down)
        r = client.head(url.format(ai=ai), headers=token)
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert_retry_later(client.post("/auth/token", params=auth_params), down)
    assert_retry_later(client.get(download), down)
    r = client.post(TRACKER.format(ai=ai), content=json.dumps([EVENT]))
    assert_retry_later(r, down)


def test_events_that_cannot_be_stored_are_503_with_retry_after(
    world: World, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def write(self: Ingestor, project_id: int, ai: str, tables: Any) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(Ingestor, "write", write)
    r = client.post(TRACKER.format(ai=world.project.ai), content=json.dumps([EVENT]))
    assert_retry_later(r, "could not store the events")
    assert r.headers["access-control-allow-origin"] == "*"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in UNSET_AWS_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def s3_down(
    aws_env: None, make_world: Callable[..., World]
) -> Iterator[tuple[TestClient, Catalog, str]]:
    """An app whose blob store is S3 at an endpoint nothing listens on."""
    world = make_world()
    endpoint = f"http://127.0.0.1:{closed_port()}"
    store = S3BlobStore("exports", endpoint_url=endpoint, max_attempts=1, connect_timeout=2)
    settings = Settings(home=world.settings.home, public_url=BASE_URL)
    app = create_app(settings, world.catalog, store, clock=lambda: NOW)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c, world.catalog, world.project.ai


async def asgi_head(app: Any, url: str) -> tuple[int, dict[str, str], bytes]:
    """A HEAD sent to the app directly: the answer as the app sends it, body included (a
    server drops a HEAD's body; the test client does not read it)."""
    path, _, query = url.removeprefix(BASE_URL).partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "HEAD",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


def test_an_unreachable_s3_is_503_not_500(s3_down: tuple[TestClient, Catalog, str]) -> None:
    client, catalog, ai = s3_down
    # A 4-hex prefix on an hour stamp is the object key itself: no catalog lookup.
    key = f"abcd_{ai}_page_v2_202501100100/part-00000.csv.gz"
    link = links.make_link(BASE_URL, catalog.secret(links.SECRET_NAME), key, NOW + 60_000)
    r = client.head(link)
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    status, headers, body = anyio.run(asgi_head, client.app, link)
    assert status == 503 and headers["retry-after"] == "5"
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {
        "message": "Service Unavailable: the blob store does not answer; retry later",
        "errors": [],
    }
    # A GET is a redirect to a presigned URL: signing it does not reach S3.
    r = client.get(link, follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"].startswith("http://127.0.0.1:")


@pytest.mark.skipif(not pg_util.available(), reason="PostgreSQL is not installed")
def test_a_postgresql_restart_is_503_then_answers_again(tmp_path: Path) -> None:
    """The real outage: the catalog's PostgreSQL stops (pooled connections are closed, new
    ones refused) and starts again. Meanwhile every export request is 503 with Retry-After;
    after it, the same requests are answered as before, with no restart of rawexport."""
    with pg_util.PostgresCluster() as pg:
        settings = Settings(home=tmp_path, public_url=BASE_URL, catalog_url=pg.url, cache_seconds=0)
        catalog = Catalog(settings.database_url)
        try:
            project = catalog.create_project("main")
            token = catalog.create_api_token(project.id)
            app = create_app(settings, catalog, LocalBlobStore(settings.exports_dir))
            headers = {"Authorization": token}
            urls = [url.format(ai=project.ai) for url in (E2, E3, V1)]
            with TestClient(app, raise_server_exceptions=False) as client:
                assert [client.get(url, headers=headers).status_code for url in urls] == [200] * 3
                pg.pause()
                down = "Service Unavailable: the catalog does not answer; retry later"
                for url in urls:
                    assert_retry_later(client.get(url, headers=headers), down)
                    r = client.head(url, headers=headers)
                    assert r.status_code == 503 and r.headers["retry-after"] == "5"
                pg.resume()
                assert [client.get(url, headers=headers).status_code for url in urls] == [200] * 3
        finally:
            catalog.close()
