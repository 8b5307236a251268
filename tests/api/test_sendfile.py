"""Downloads through `rawexport serve`'s protocol go out with os.sendfile (api/limits.py):
the same bytes, ranges and headers as the streamed path, and a client that leaves halfway
costs the server nothing but that response."""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvicorn

from rawexport.api.limits import guarded_protocol
from rawexport.timeutil import HOUR_MS
from tests.conftest import CURRENT_HOUR, World
from tests.e2e_util import free_port

PAST = CURRENT_HOUR - 3 * HOUR_MS
DATA = os.urandom(6 * 1024 * 1024 + 4321)  # more than a socket buffer takes at once


@pytest.fixture
def served(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, str, list[int]]]:
    """The world's app on uvicorn with serve's protocol: (port, link path, sendfile sizes)."""
    calls: list[int] = []
    real = os.sendfile

    def counting(out: int, fd: int, offset: int | None, count: int) -> int:
        n = real(out, fd, offset, count)
        calls.append(n)
        return n

    monkeypatch.setattr(os, "sendfile", counting)
    world.finish("page", PAST, [DATA])
    r = world.client.get(
        f"/v2/insights/hour/page/{world.project.ai}/2025011009.json?expire=60",
        headers={"Authorization": world.token},
    )
    (link,) = r.json()["downloadLinks"]
    u = urlsplit(link)
    port = free_port()
    config = uvicorn.Config(
        world.client.app,
        host="127.0.0.1",
        port=port,
        http=guarded_protocol(100, 10.0, 65536),
        log_level="error",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    try:
        yield port, f"{u.path}?{u.query}", calls
    finally:
        server.should_exit = True
        thread.join(10)


def fetch(port: int, path: str, method: str = "GET", **headers: str) -> tuple[Any, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, headers=headers)
        r = conn.getresponse()
        return r, r.read()
    finally:
        conn.close()


def test_whole_file_range_and_head(served: tuple[int, str, list[int]]) -> None:
    port, path, calls = served
    r, body = fetch(port, path)
    assert r.status == 200 and body == DATA
    assert int(r.headers["content-length"]) == len(DATA)
    assert r.headers["etag"] == f'"{hashlib.md5(DATA).hexdigest()}"'
    assert sum(calls) == len(DATA)  # every byte went through sendfile

    r, body = fetch(port, path, Range="bytes=1000-5000999")
    assert r.status == 206 and body == DATA[1000:5001000]
    assert r.headers["content-range"] == f"bytes 1000-5000999/{len(DATA)}"
    r, body = fetch(port, path, Range="bytes=-10")
    assert r.status == 206 and body == DATA[-10:]

    # the server counts a sendfile call once it returns, which may be after the client
    # has read the bytes: wait for the three answers' bytes before the HEAD
    sent = len(DATA) + 5_000_000 + 10
    deadline = time.monotonic() + 10
    while sum(calls) < sent and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sum(calls) == sent
    r, body = fetch(port, path, "HEAD")
    assert r.status == 200 and body == b"" and sum(calls) == sent


def test_a_client_leaving_halfway_does_not_hurt(served: tuple[int, str, list[int]]) -> None:
    port, path, _ = served
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert sock.recv(65536)  # headers and the first bytes, then gone
    # kept-alive requests on one connection, each answered in full
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for _ in range(3):
            conn.request("GET", path)
            r = conn.getresponse()
            assert r.status == 200 and r.read() == DATA
    finally:
        conn.close()
