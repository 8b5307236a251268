"""Slow clients against a real `rawexport serve` (issue 20, items 1, 3 and 8): bodies that
stop coming, downloads nobody reads, clients that leave halfway. Others keep being served,
the slow ones are cut after body_timeout / send_timeout and their descriptors freed, and a
client leaving mid-body costs one short log line."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import secrets
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rawexport.blobs import links
from rawexport.blobs.local import LocalBlobStore
from rawexport.catalog import Catalog
from rawexport.settings import Settings
from rawexport.timeutil import HOUR_MS, hour_floor, now_ms, utc_key_stamp
from rawexport.types import ExportResult, PartInfo
from tests.e2e_util import Server, env_for, free_port

pytestmark = pytest.mark.e2e

MAX_AUTO_CONNECTIONS = 16384  # api/limits.py (not imported: the test runs on old code)
FILE_BYTES = 4 * 1024 * 1024  # far more than a stalled client's socket buffers take


def exported_part(home: Path, size: int) -> tuple[str, str, bytes]:
    """A finished export part of `size` random bytes in home's catalog and blob store, and
    a project to collect into: (signed link path, project ai, the part's bytes)."""
    settings = Settings(home=home)
    catalog = Catalog(settings.database_url)
    try:
        project = catalog.create_project("slow")
        hour = hour_floor(now_ms()) - 3 * HOUR_MS
        prefix = f"{secrets.token_hex(2)}_{project.ai}_page_v2_{utc_key_stamp(hour)}"
        key = f"{prefix}/part-00000-{uuid.uuid4()}-c000.csv.gz"
        data = os.urandom(size)
        LocalBlobStore(settings.exports_dir).put_bytes(key, data)
        catalog.new_revision(project.id, "v2", "page", hour, preview=False, now=hour + HOUR_MS)
        job = catalog.claim("test", hour + HOUR_MS, 60_000)
        assert job is not None
        md5, sha = hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()
        part = PartInfo(0, key, 1, size, md5, sha)
        result = ExportResult(prefix, f"{prefix}/_manifest.json", [part], 1, size)
        catalog.complete(job, "test", result, hour + HOUR_MS)
        expires = now_ms() + HOUR_MS
        sign = links.sign(catalog.secret(links.SECRET_NAME), key, expires)
        return f"/{key}?expires={expires}&sign={sign}", project.ai, data
    finally:
        catalog.close()


@contextlib.contextmanager
def soft_descriptor_limit(soft: int) -> Iterator[None]:
    """This process's soft RLIMIT_NOFILE set to `soft` (children started meanwhile inherit
    it), then to the hard limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def healthz_seconds(base: str) -> float:
    started = time.monotonic()
    with urllib.request.urlopen(base + "/healthz", timeout=5) as r:
        assert r.status == 200 and json.loads(r.read()) == {"status": "ok"}
    return time.monotonic() - started


def post_events(base: str, ai: str, n: int) -> int:
    body = b"\n".join(b'{"type":"vstr","visitUserId":"v%d","sessionId":"s"}' % i for i in range(n))
    req = urllib.request.Request(f"{base}/api/v1/projects/{ai}/events", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
        return int(json.loads(r.read())["accepted"])


def slow_body(port: int, path: str) -> socket.socket:
    """A POST whose body stops after 10 of its 1000 bytes."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
    sock.sendall(head.encode() + b"0123456789")
    return sock


def stalled_download(port: int, link: str) -> socket.socket:
    """A GET of the part by a client that never reads (and has a small receive buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {link} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


def answer_of(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    try:
        return sock.recv(4096)
    except (ConnectionResetError, TimeoutError):
        return b""


def test_healthz_answers_while_thousands_of_slow_clients_hold_connections(
    tmp_path: Path,
) -> None:
    """Before: 4,200 slow bodies held all 4,096 connection slots (nothing else was answered
    until they left, never), and 1,800 stalled downloads (3 descriptors each) exhausted the
    5,120 descriptors serve raised its limit to: other downloads got 404 or 500, collectors
    503. Now serve raises its descriptor limit to the hard one and sizes max_connections
    from it, so they all fit and others are answered at once; then bodies that did not
    come in body_timeout get 408, downloads not read for send_timeout are aborted, and the
    descriptors are back."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # what serve keeps (3 descriptors a connection, 1024 aside), less probes and pytest's
    room = min((hard - 1024) // 3, MAX_AUTO_CONNECTIONS, hard - 500) - 200
    if room < 2000:
        pytest.skip(f"a descriptor limit of {hard} leaves room for {room} slow clients")
    total = min(4400, room)  # more than the 4,096 connections serve kept before
    timeout = 10.0
    home, port = tmp_path / "home", free_port()
    link, ai, data = exported_part(home, FILE_BYTES)
    env = env_for(
        home,
        port,
        RAWEXPORT_BODY_TIMEOUT=str(timeout),
        RAWEXPORT_SEND_TIMEOUT=str(timeout),
        RAWEXPORT_CACHE_SECONDS="30",
    )
    bodies: list[socket.socket] = []
    downloads: list[socket.socket] = []
    with soft_descriptor_limit(1024), Server(["serve"], env, port, tmp_path / "s.log") as server:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # for the clients' sockets
        try:
            server.wait_ready()
            assert post_events(server.base, ai, 3) == 3
            baseline = open_descriptors(server.proc.pid)
            started = time.monotonic()
            for i in range(total):  # 2 in 5 stalled downloads, the rest slow bodies
                if i % 5 < 2:
                    downloads.append(stalled_download(port, link))
                else:
                    path = "/auth/token" if i % 2 else f"/api/v1/projects/{ai}/events"
                    bodies.append(slow_body(port, path))
            flooded = time.monotonic() - started
            assert flooded < timeout - 3, f"opening {total} connections took {flooded:.1f} s"

            # While they all hold their connections, others are served at once.
            slowest = max(healthz_seconds(server.base) for _ in range(5))
            assert slowest < 2, f"/healthz took {slowest:.2f} s behind {total} slow clients"
            with urllib.request.urlopen(server.base + link, timeout=10) as r:
                assert r.status == 200 and r.read() == data
            assert post_events(server.base, ai, 5) == 5
            holding = open_descriptors(server.proc.pid)
            assert holding > baseline + total  # they are held (3 per download)
            assert time.monotonic() - started < timeout  # all of it before any was cut

            # Then the slow ones are cut: 408 for bodies, aborted downloads.
            answers = [answer_of(s, 2.5 * timeout) for s in bodies[-20:]]
            assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), answers[:3]
            assert all(a.endswith(b'{"message":"Request Timeout","errors":[]}') for a in answers)
            deadline = time.monotonic() + 2.5 * timeout
            while open_descriptors(server.proc.pid) > baseline + 50:
                assert time.monotonic() < deadline, (
                    f"{open_descriptors(server.proc.pid)} descriptors still open "
                    f"({baseline} before, {holding} while held)"
                )
                time.sleep(0.5)
            assert healthz_seconds(server.base) < 2
        finally:
            for s in bodies + downloads:
                s.close()


def logged(log: Path, since: int) -> list[dict[str, Any]]:
    """The JSON lines serve logged past byte `since` (its buffer is written every 0.2 s),
    each short and without a traceback: access lines and any warning or error."""
    time.sleep(0.5)
    lines = log.read_bytes()[since:].decode().splitlines()
    assert all(len(line) < 400 and "Traceback" not in line for line in lines), lines[:2]
    records = [json.loads(line) for line in lines]
    # not the start's lines (written late): info lines of serve and uvicorn, /healthz
    access = [r for r in records if r["logger"] == "rawexport.access" or r["level"] != "info"]
    return [r for r in access if r.get("path") != "/healthz"]


def test_a_client_leaving_mid_body_logs_one_short_line(tmp_path: Path) -> None:
    """Before: each client that left mid-body logged two full tracebacks (~6 KB): one by
    Starlette's error handler as a 500, one by uvicorn. Now the access line says 499 (408
    when its body timed out) and nothing else is logged."""
    home, port = tmp_path / "home", free_port()
    _, ai, _ = exported_part(home, 1024)
    log = tmp_path / "serve.log"
    env = env_for(home, port, RAWEXPORT_LOG_LEVEL="info", RAWEXPORT_BODY_TIMEOUT="0.5")
    with Server(["serve"], env, port, log) as server:
        server.wait_ready()
        start = len(log.read_bytes())
        paths = ["/auth/token", f"/api/v1/projects/{ai}/events", f"/v3/projects/{ai}/collect"]
        for path in paths:
            sock = slow_body(port, path)
            time.sleep(0.2)  # the request reaches the app, which waits for the body
            sock.close()
        records = logged(log, start)
        assert [(r["path"], r["status"]) for r in records] == [(p, 499) for p in paths]

        # one that stays until its body times out: the same, with 408
        start = len(log.read_bytes())
        with slow_body(port, "/auth/token") as sock:
            assert answer_of(sock, 5).startswith(b"HTTP/1.1 408 ")
        records = logged(log, start)
        assert [(r["path"], r["status"]) for r in records] == [("/auth/token", 408)]
        assert healthz_seconds(server.base) < 2
