import hashlib
import os
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import anyio
import pytest

from rawexport.api.downloads import CHUNK, RangeFileResponse, Unsatisfiable, parse_range
from rawexport.blobs import links
from rawexport.timeutil import HOUR_MS
from tests.conftest import BASE_URL, CURRENT_HOUR, World

PAST = CURRENT_HOUR - 3 * HOUR_MS
DATA = os.urandom(2 * 1024 * 1024 + 12345)  # several 1 MiB chunks and a remainder
FORBIDDEN = {"message": "Forbidden", "errors": []}


def link_of(world: World, data: bytes = DATA) -> tuple[str, str]:
    _, keys = world.finish("page", PAST, [data])
    r = world.client.get(
        f"/v2/insights/hour/page/{world.project.ai}/2025011009.json?expire=60",
        headers={"Authorization": world.token},
    )
    (link,) = r.json()["downloadLinks"]
    return link, keys[0]


def signed(world: World, key: str, expires: int | None = None) -> str:
    secret = world.catalog.secret(links.SECRET_NAME)
    return links.make_link(BASE_URL, secret, key, expires or world.clock.now + 60_000)


def test_get_and_head(world: World) -> None:
    link, key = link_of(world)
    # The key's hex prefix is sized for the base URL (Java clients parse links by position).
    assert link.startswith(f"{BASE_URL}/{links.link_path(key, BASE_URL)}?expires=")
    md5 = hashlib.md5(DATA).hexdigest()
    r = world.client.get(link)
    assert r.status_code == 200 and r.content == DATA
    assert r.headers["content-length"] == str(len(DATA))
    assert r.headers["etag"] == f'"{md5}"' and r.headers["x-amz-meta-md5-hash"] == md5
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-type"] == "application/gzip"
    h = world.client.head(link)
    assert h.status_code == 200 and h.content == b""
    assert h.headers["content-length"] == str(len(DATA)) and h.headers["etag"] == f'"{md5}"'
    assert world.client.get(link, headers={"If-None-Match": f'"{md5}"'}).status_code == 304


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-9", 0, 10),
        ("bytes=1048570-1048580", 1048570, 1048581),
        ("bytes=100-", 100, len(DATA)),
        ("bytes=-5", len(DATA) - 5, len(DATA)),
        ("bytes=-99999999", 0, len(DATA)),
        (f"bytes=10-{len(DATA) + 100}", 10, len(DATA)),
        (f"bytes={len(DATA) - 1}-", len(DATA) - 1, len(DATA)),
    ],
)
def test_single_range(world: World, header: str, start: int, end: int) -> None:
    link, _ = link_of(world)
    r = world.client.get(link, headers={"Range": header})
    assert r.status_code == 206 and r.content == DATA[start:end]
    assert r.headers["content-range"] == f"bytes {start}-{end - 1}/{len(DATA)}"
    assert r.headers["content-length"] == str(end - start)
    h = world.client.head(link, headers={"Range": header})
    assert h.status_code == 206 and h.content == b""


@pytest.mark.parametrize(
    "header",
    [
        f"bytes={len(DATA)}-",
        "bytes=-0",
        "bytes=5-2",
        "bytes=abc",
        "bytes=-",
        "bytes=" + "9" * 30 + "-",
        f"bytes={len(DATA)}-,{len(DATA) + 5}-",
    ],
)
def test_unsatisfiable_or_malformed_range_is_416(world: World, header: str) -> None:
    link, _ = link_of(world)
    r = world.client.get(link, headers={"Range": header})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(DATA)}"
    assert r.json() == {"message": "Range Not Satisfiable", "errors": []}


def test_if_range_mismatch_serves_the_whole_file(world: World) -> None:
    link, _ = link_of(world)
    r = world.client.get(link, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert r.status_code == 200 and r.content == DATA


def test_bad_signatures_are_403(world: World) -> None:
    link, key = link_of(world)
    q = parse_qs(urlsplit(link).query)
    expires, sign = q["expires"][0], q["sign"][0]
    path = f"/{key}"
    foreign = links.sign("f" * 64, key, int(expires))
    for query in (
        f"expires={expires}&sign={sign[:-1]}{'0' if sign[-1] != '0' else '1'}",  # tampered
        f"expires={int(expires) + 1}&sign={sign}",  # longer life
        f"expires={expires}",
        f"sign={sign}",
        "",
        f"expires={expires}&sign={foreign}",  # signed with another secret
        f"expires=abc&sign={sign}",
    ):
        r = world.client.get(f"{path}?{query}")
        assert (r.status_code, r.json()) == (403, FORBIDDEN), query
    _, other_key = link_of(world, b"other file")
    r = world.client.get(f"/{other_key}?expires={expires}&sign={sign}")  # another key
    assert (r.status_code, r.json()) == (403, FORBIDDEN)
    world.clock.now = int(expires)
    assert world.client.get(link).status_code == 403  # expired
    assert world.client.head(link).status_code == 403


def test_gone_file_is_404(world: World) -> None:
    link, key = link_of(world)
    os.remove(world.blobs.path(key))
    r = world.client.get(link)
    assert (r.status_code, r.json()) == (404, {"message": "Not Found", "errors": []})


def test_manifest_is_served_as_json_with_its_md5(world: World) -> None:
    job, _ = world.finish("page", PAST)
    assert job.manifest_key is not None
    r = world.client.get(signed(world, job.manifest_key))
    body = world.blobs.path(job.manifest_key).read_bytes()
    assert r.status_code == 200 and r.content == body
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-amz-meta-md5-hash"] == hashlib.md5(body).hexdigest()


@pytest.mark.parametrize(
    "path",
    [
        "/..%2F..%2Fetc/passwd",
        "/..%2f..%2f..%2fetc%2fpasswd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        "/abcd_0123456789abcdef_page_v2_202501100000/..%2F..%2F..%2Fetc%2Fpasswd",
        "/abcd_0123456789abcdef_page_v2_202501100000/%2e%2e",
        "/abcd_0123456789abcdef_page_v2_202501100000/.hidden",
        "/etc/passwd",
    ],
)
def test_path_traversal_never_escapes_the_store(world: World, path: str) -> None:
    # even a traversal key signed with the server's own secret is refused
    key = unquote(path).lstrip("/")
    expires = world.clock.now + 60_000
    sign = links.sign(world.catalog.secret(links.SECRET_NAME), key, expires)
    for query in ("", f"?expires={expires}&sign={sign}"):
        r = world.client.get(path + query)
        assert r.status_code in (403, 404) and "root:" not in r.text
        assert set(r.json()) == {"message", "errors"}


def test_parse_range_unit() -> None:
    assert parse_range("bytes=0-0", 10) == (0, 1)
    assert parse_range(" bytes=2-4 ", 10) == (2, 5)
    assert parse_range("bytes=-3", 10) == (7, 10)
    assert parse_range("bytes=9-", 10) == (9, 10)
    for bad in ("bytes=10-", "bytes=1-0", "bytes=x-y", "bytes=10-,12-"):
        with pytest.raises(Unsatisfiable):
            parse_range(bad, 10)
    # RFC 9110: another unit (or none) is ignored; several byte ranges: the whole file
    for whole in ("items=0-1", "bytes 0-1", "", "bytes=0-1, 2-3"):
        assert parse_range(whole, 10) is None
    with pytest.raises(Unsatisfiable):
        parse_range("bytes=-1", 0)


def test_empty_range_list_elements_are_ignored() -> None:
    """RFC 9110 5.6.1: empty elements of a list are ignored (issue 20, item 14): a trailing
    or doubled comma is the one range it holds, not 416."""
    for header in ("bytes=0-1,", "bytes=,0-1", "bytes=0-1, ,", "bytes= , 0-1 ,,"):
        assert parse_range(header, 10) == (0, 2), header
    assert parse_range("bytes=-3,", 10) == (7, 10)
    assert parse_range("bytes=0-1,,2-3", 10) is None  # still two ranges: the whole file
    for none_at_all in ("bytes=", "bytes=,", "bytes= , ,"):
        with pytest.raises(Unsatisfiable):
            parse_range(none_at_all, 10)


def test_a_trailing_comma_in_range_is_served_206(world: World) -> None:
    link, _ = link_of(world)
    r = world.client.get(link, headers={"Range": "bytes=0-1,"})
    assert r.status_code == 206 and r.content == DATA[:2]
    assert r.headers["content-range"] == f"bytes 0-1/{len(DATA)}"


def test_keys_the_store_refuses_are_403(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    link, _ = link_of(world)

    def refuse(key: str) -> Path:
        raise ValueError(key)

    monkeypatch.setattr(world.blobs, "local_path", refuse)
    r = world.client.get(link)
    assert (r.status_code, r.json()) == (403, FORBIDDEN)


def test_streams_in_one_mib_chunks(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(DATA)
    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "asgi": {"spec_version": "2.4"}}
    response = RangeFileResponse(path, 5, len(DATA), 206, {"content-length": "x"})

    async def serve() -> None:
        await response(scope, receive, send)

    anyio.run(serve)
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert [len(m["body"]) for m in bodies] == [CHUNK, CHUNK, len(DATA) - 5 - 2 * CHUNK]
    assert [m["more_body"] for m in bodies] == [True, True, False]
    assert b"".join(m["body"] for m in bodies) == DATA[5:]
