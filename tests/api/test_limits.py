"""serve's protocol guards (api/limits.py) on uvicorn in a thread (issue 20, items 1, 3,
13): body and send timeouts, the header limit in one read, and uvicorn's keep-alive and
pipelining left as they were."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from rawexport.api.downloads import RangeFileResponse
from rawexport.api.limits import (
    MAX_AUTO_CONNECTIONS,
    SENDFILE,
    GuardedProtocol,
    connection_budget,
    guarded_protocol,
)
from tests.e2e_util import free_port

BIG = 8 * 1024 * 1024  # more than the socket buffers of a client that reads nothing


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """/echo: waits ?wait seconds, reads the body, answers its length. /big: BIG bytes
    from memory. /file: the file at ?path with the sendfile extension."""
    if scope["type"] != "http":
        return
    query = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if p)
    if scope["path"] == "/file":
        path = Path(query["path"])
        size = path.stat().st_size
        response = RangeFileResponse(path, 0, size, 200, {"content-length": str(size)})
        await response(scope, receive, send)
        return
    if scope["path"] == "/big":
        body = b"x" * BIG
    else:
        await asyncio.sleep(float(query.get("wait", 0)))
        n, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            n += len(message.get("body", b""))
            more = message.get("more_body", False)
        body = str(n).encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def served(**limits: float) -> Iterator[tuple[int, set[Any]]]:
    """The app above behind guarded_protocol on 127.0.0.1: (port, its open connections)."""
    values: dict[str, Any] = {
        "max_connections": 100,
        "header_timeout": 5.0,
        "max_header_bytes": 65536,
        "body_timeout": 5.0,
        "send_timeout": 5.0,
    }
    values.update(limits)
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http=guarded_protocol(**values),
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
        yield port, server.server_state.connections
    finally:
        server.should_exit = True
        thread.join(10)


_opened: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _close_sockets() -> Iterator[None]:
    yield
    while _opened:
        _opened.pop().close()


def connect(port: int, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    _opened.append(sock)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def read_all(sock: socket.socket, timeout: float = 10) -> bytes:
    sock.settimeout(timeout)
    out = b""
    with contextlib.suppress(ConnectionResetError, TimeoutError):
        while chunk := sock.recv(65536):
            out += chunk
    return out


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One response with a Content-Length, read off a kept-alive connection."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data[:100]!r}"
        data += chunk
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep and len(rest) >= int(head.lower().split(b"content-length: ")[1].split(b"\r")[0]):
            return responses(data)[0]


def responses(data: bytes) -> list[tuple[int, bytes]]:
    """(status, body) of each HTTP/1.1 response in data (all with a Content-Length)."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        fields = dict(line.lower().split(b": ", 1) for line in lines[1:])
        n = int(fields[b"content-length"])
        out.append((int(lines[0].split()[1]), rest[:n]))
        data = rest[n:]
    return out


def wait_until(check: Any, seconds: float) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < seconds, "not within the time allowed"
        time.sleep(0.02)
    return time.monotonic() - started


def post_head(path: str, length: int, *extra: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: x", f"Content-Length: {length}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# ---- body timeout (item 1) -------------------------------------------------------------


def test_a_body_that_stops_coming_gets_408_and_the_connection_closes() -> None:
    with served(body_timeout=0.4) as (port, connections):
        sock = connect(port)
        started = time.monotonic()
        sock.sendall(post_head("/echo", 1000) + b"0123456789")
        answer = read_all(sock)
        took = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
        assert b"connection: close" in answer
        assert answer.endswith(b'{"message":"Request Timeout","errors":[]}')
        assert 0.35 < took < 1.5
        wait_until(lambda: not connections, 2)


def test_a_body_dripping_in_is_cut_at_body_timeout_all_the_same() -> None:
    """The whole body must come within body_timeout: a byte now and then does not keep
    the connection."""
    with served(body_timeout=0.6) as (port, _):
        sock = connect(port)
        sock.sendall(post_head("/echo", 1000))
        started = time.monotonic()
        with contextlib.suppress(OSError):
            for _ in range(20):
                sock.sendall(b"a")
                time.sleep(0.1)
        answer = read_all(sock)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - started < 2.2


def test_a_body_the_server_does_not_read_yet_is_not_late() -> None:
    """Time while the app has not taken what came (uvicorn stops reading past 64 KiB) or
    has not asked for the body (Expect: 100-continue) does not count."""
    body = os.urandom(1024 * 1024)
    with served(body_timeout=0.4) as (port, _):
        sock = connect(port)
        sock.sendall(post_head("/echo?wait=1.2", len(body)) + body)
        assert read_response(sock) == (200, str(len(body)).encode())

        sock = connect(port)
        sock.sendall(post_head("/echo?wait=1.2", 10, "Expect: 100-continue"))
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"0123456789")
        assert read_response(sock) == (200, b"10")


def test_kept_alive_and_pipelined_requests_are_answered_in_order() -> None:
    with served(body_timeout=0.5, header_timeout=0.5) as (port, _):
        sock = connect(port)
        for n in (3, 5):
            sock.sendall(post_head("/echo", n) + b"x" * n)
            time.sleep(0.7)  # longer than both timeouts, between requests: kept alive
        sock.sendall(b"".join(post_head("/echo", n) + b"y" * n for n in (1, 22, 333)))
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answers = responses(read_all(sock, 5))
        assert answers == [(200, str(n).encode()) for n in (3, 5, 1, 22, 333, 0)]


def test_a_kept_alive_connections_next_headers_must_come_in_time() -> None:
    with served(header_timeout=0.4) as (port, connections):
        sock = connect(port)
        sock.sendall(post_head("/echo", 2) + b"ab")
        assert read_response(sock) == (200, b"2")
        sock.sendall(b"GET /echo HTTP/1.1\r\nHo")  # and nothing more
        started = time.monotonic()
        assert read_all(sock, 3) == b""
        assert 0.3 < time.monotonic() - started < 1.5
        wait_until(lambda: not connections, 1)


# ---- send timeout (item 3) -------------------------------------------------------------


def test_a_response_nobody_reads_is_aborted_after_send_timeout() -> None:
    """uvicorn's own writes: its buffer stays full, and the connection is dropped."""
    with served(send_timeout=0.5) as (port, connections):
        sock = connect(port, rcvbuf=4096)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: len(connections) == 1, 2)
        took = wait_until(lambda: not connections, 3)
        assert 0.3 < took < 2
        assert len(read_all(sock, 2)) < BIG


def test_a_download_nobody_reads_is_aborted_and_its_descriptors_freed(tmp_path: Path) -> None:
    """sendfile's wait: the file, the socket and its duplicate are closed."""
    path = tmp_path / "part.bin"
    path.write_bytes(os.urandom(BIG))
    # send_timeout leaves room for a loaded machine: all ten must be held at once first
    with served(send_timeout=3.0) as (port, connections):
        before = len(os.listdir("/proc/self/fd"))
        socks = [connect(port, rcvbuf=4096) for _ in range(10)]
        for sock in socks:
            sock.sendall(f"GET /file?path={path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        # each held download: the client's socket, the server's, the file and a duplicate
        wait_until(
            lambda: len(connections) == 10 and len(os.listdir("/proc/self/fd")) >= before + 40,
            2.5,
        )
        wait_until(lambda: not connections, 6)
        for sock in socks:
            sock.close()
        wait_until(lambda: len(os.listdir("/proc/self/fd")) <= before, 2)


def test_a_slow_reader_that_keeps_reading_is_not_cut(tmp_path: Path) -> None:
    path = tmp_path / "part.bin"
    data = os.urandom(2 * 1024 * 1024)
    path.write_bytes(data)
    with served(send_timeout=0.5) as (port, _):
        for target in (f"/file?path={path}", "/big"):
            sock = connect(port, rcvbuf=65536)
            sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            got, started, pauses = 0, time.monotonic(), 0
            while got < 2 * 1024 * 1024:  # 2 MiB, a pause of 0.2 s after each 256 KiB:
                chunk = sock.recv(65536)  # 1.6 s in all, longer than send_timeout
                assert chunk, "the server gave up on a client that kept reading"
                got += len(chunk)
                if got // (256 * 1024) > pauses:
                    pauses += 1
                    time.sleep(0.2)
            assert time.monotonic() - started > 1.2
            sock.close()


def test_sendfile_is_offered() -> None:
    seen: list[Any] = []

    async def probe(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope.get("extensions", {}).get(SENDFILE))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    port = free_port()
    config = uvicorn.Config(
        probe, port=port, http=guarded_protocol(10, 5, 65536), log_level="error", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 20)
    try:
        sock = connect(port)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 204")
        assert seen and seen[0] is not None and callable(seen[0]["send"])
    finally:
        server.should_exit = True
        thread.join(10)


# ---- the header limit in one read (item 13) -------------------------------------------


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 80)}.get(name, default)

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def fed(data: bytes, max_header_bytes: int = 65536) -> tuple[FakeTransport, list[Any]]:
    """A guarded protocol fed `data` in one data_received call: (its transport, the
    requests that reached the app)."""
    started: list[Any] = []

    async def record(scope: Any, receive: Any, send: Any) -> None:
        started.append(scope["path"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    loop = asyncio.new_event_loop()
    try:
        config = uvicorn.Config(record, lifespan="off", log_level="error")
        protocol = guarded_protocol(10, 5.0, max_header_bytes)
        state = uvicorn.server.ServerState()
        proto = protocol(config=config, server_state=state, app_state={}, _loop=loop)
        transport = FakeTransport()
        proto.connection_made(transport)
        proto.data_received(data)
        loop.run_until_complete(asyncio.sleep(0.01))
    finally:
        loop.close()
    return transport, started


@pytest.mark.parametrize("kib", [65, 93, 100, 1024])
def test_headers_larger_than_the_limit_in_one_read_answer_431(kib: int) -> None:
    big = b"GET /x HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (kib * 1024) + b"\r\n\r\n"
    transport, started = fed(big)
    assert transport.written.startswith(b"HTTP/1.1 431 "), transport.written[:80]
    assert transport.closed and started == []
    # the same spread over many headers, or in the URL
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 1000) for i in range(kib + 1))
    transport, started = fed(b"GET /x HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert transport.written.startswith(b"HTTP/1.1 431 ") and started == []
    transport, started = fed(b"GET /" + b"u" * (kib * 1024) + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.written.startswith(b"HTTP/1.1 431 ") and started == []


def test_headers_within_the_limit_in_one_read_are_served_with_their_body() -> None:
    head = b"POST /x HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 60_000
    request = head + b"\r\nContent-Length: 200000\r\n\r\n" + b"z" * 200_000
    transport, started = fed(request)
    assert not transport.written.startswith(b"HTTP/1.1 431") and started == ["/x"]


def test_a_pipelined_request_with_large_headers_in_the_same_read_is_refused() -> None:
    small = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
    big = b"GET /b HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    transport, started = fed(small + big)
    assert started == ["/a"] and transport.closed  # /b never reaches the app


# ---- the connection budget -------------------------------------------------------------


def test_connections_are_sized_from_the_descriptor_limit() -> None:
    assert connection_budget(5120, 0) == (5120 - 1024) // 3
    assert connection_budget(20000, 0) == 6325
    assert connection_budget(1 << 20, 0) == MAX_AUTO_CONNECTIONS
    assert connection_budget(20000, 4096) == 4096  # asked, and it fits
    assert connection_budget(5120, 4096) == 1365  # asked, but only this many fit
    assert connection_budget(1024, 0) == 256  # a small limit keeps a quarter aside
    assert connection_budget(8, 0) == 2
    assert issubclass(guarded_protocol(1, 1.0, 1024), GuardedProtocol)


# ---- a full server makes room (item 1) -------------------------------------------------


def is_open(sock: socket.socket, seconds: float = 0.2) -> bool:
    """True when the server neither closed nor answered sock within `seconds`."""
    sock.settimeout(seconds)
    try:
        sock.recv(1)  # an answer, or b"": closed
        return False
    except (ConnectionResetError, BrokenPipeError):
        return False
    except TimeoutError:
        return True


def healthz(port: int) -> bytes:
    sock = connect(port)
    with contextlib.suppress(OSError):
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return read_all(sock, 3)


def test_stalled_bodies_on_every_slot_make_room_for_a_new_client() -> None:
    """Before: N connections that sent a request head and a few body bytes, then nothing,
    kept every new client refused until body_timeout, again and again. Now a new client
    takes the place of the one silent the longest, and is answered."""
    n = 20
    with served(max_connections=n, body_timeout=30) as (port, connections):
        stalled = []
        for _ in range(n):
            stalled.append(connect(port))
            stalled[-1].sendall(post_head("/echo", 1000) + b"0123456789")
            time.sleep(0.01)  # distinct times: the first is the one silent the longest
        wait_until(lambda: len(connections) == n, 3)
        stalled[1].sendall(b"more")  # heard from again: now among the most recent
        assert healthz(port).startswith(b"HTTP/1.1 200 "), "the new client was refused"
        assert not is_open(stalled[0]), "the one silent the longest was kept"
        stalled.append(connect(port))  # every slot taken again
        stalled[-1].sendall(post_head("/echo", 1000) + b"0123456789")
        wait_until(lambda: len(connections) == n, 3)
        assert healthz(port).startswith(b"HTTP/1.1 200 ")
        assert not is_open(stalled[2])  # next in line, not the one heard from lately
        assert all(is_open(sock, 0.01) for sock in stalled[1:2] + stalled[3:])


def test_a_kept_alive_idle_connection_is_dropped_before_a_stalled_request() -> None:
    n = 5
    with served(max_connections=n, body_timeout=30) as (port, connections):
        stalled = []
        for _ in range(n - 1):
            stalled.append(connect(port))
            stalled[-1].sendall(post_head("/echo", 1000) + b"0123")
        idle = connect(port)  # the most recent, but between requests: nothing in progress
        idle.sendall(post_head("/echo", 2) + b"ab")
        assert read_response(idle) == (200, b"2")
        wait_until(lambda: len(connections) == n, 3)
        assert healthz(port).startswith(b"HTTP/1.1 200 ")
        assert not is_open(idle)
        assert all(is_open(sock, 0.01) for sock in stalled)


def test_connections_whose_request_the_app_processes_are_never_dropped() -> None:
    """Requests in the app (a slow endpoint) keep their connections: a stalled body is
    dropped instead, and when all are in the app the new connection is refused."""
    n = 10  # (sweeps every 0.1 s: they see the requests in the app too)
    with served(max_connections=n, body_timeout=30, header_timeout=0.4) as (port, connections):
        busy = []
        for _ in range(n - 1):  # the oldest: GETs the app takes 2 s to answer
            busy.append(connect(port))
            busy[-1].sendall(b"GET /echo?wait=2 HTTP/1.1\r\nHost: x\r\n\r\n")
        stalled = connect(port)
        stalled.sendall(post_head("/echo", 1000) + b"0123")
        wait_until(lambda: len(connections) == n, 3)
        time.sleep(0.3)
        assert healthz(port).startswith(b"HTTP/1.1 200 ")
        assert not is_open(stalled)
        busy.append(connect(port))
        busy[-1].sendall(b"GET /echo?wait=2 HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: len(connections) == n, 3)
        time.sleep(0.3)
        assert healthz(port) == b""  # all n in the app: refused, as before
        for sock in busy:
            assert read_response(sock) == (200, b"0")
