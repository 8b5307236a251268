"""Connection limits uvicorn does not have: how many connections, how long a request's
headers and body may take, how large its headers may be, how long a response may stall.

uvicorn's httptools protocol has no such limit: a client that connects and says nothing,
or sends a body's first bytes and then nothing, or stops reading a download, holds its
connection (and for a download three descriptors) forever; thousands of them took every
slot and descriptor of the process. `guarded_protocol` returns its protocol class with
these guards:

- past `max_connections` open connections (`connection_budget` sizes it from the
  descriptor limit, so connections cannot starve the process of descriptors) a new one
  takes the place of the connection that has waited on its client the longest: first one
  kept alive idle between requests, else one inside a request's headers or body whose
  bytes do not come (api/connections.py keeps them in that order); that one is aborted.
  Connections whose request the app is processing or whose response is being sent are
  never taken: when all are such, the new connection is closed at once. So clients that
  open every slot and stall cannot keep others out;
- a request's headers must be complete within `header_timeout` seconds of its start (of
  the connection, or of the request on a kept-alive one), else the connection is closed;
- its body must be complete within `body_timeout` seconds of its headers, else it is
  answered 408 (when no answer has started) and the connection is closed. Time while the
  server itself does not read (the app has not taken what came, a pipelined request
  waits, `Expect: 100-continue` not yet answered) does not count;
- a response that makes no progress for `send_timeout` seconds (the client reads nothing:
  uvicorn's write buffer stays full, or sendfile waits) is aborted, freeing its
  descriptors;
- headers (request line included) larger than `max_header_bytes` answer 431 and close,
  whether they arrive in many reads or in one.

Timeouts are checked by one sweep of the connections every quarter of the shortest
timeout, not by a timer per request: a late one is closed within 1.25 x its timeout.

It also offers downloads zero-copy sendfile (uvicorn has no ASGI pathsend): the
`rawexport.sendfile` extension of a request's scope (api/downloads.py uses it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import weakref
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from rawexport.api.connections import Waiting
from rawexport.api.errors import error_body

log = logging.getLogger("rawexport.limits")

SENDFILE = "rawexport.sendfile"
# Set in a request's scope extensions when its body timed out (and 408 was sent).
TIMED_OUT = "rawexport.timed_out"

# Descriptors one connection may hold: its socket, and while a download is sent the file
# and a duplicate of the socket (see _sendfile).
DESCRIPTORS_PER_CONNECTION = 3
# Descriptors kept for everything else (the catalog, event files, exports, logs): this
# many, or a quarter of a smaller limit.
RESERVED_DESCRIPTORS = 1024
# Most connections sized from the descriptor limit alone (each costs some memory too).
MAX_AUTO_CONNECTIONS = 16384


def _canned(status: bytes, message: str) -> bytes:
    body = error_body(message)
    return (
        b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n%s" % (status, len(body), body)
    )


_TOO_LARGE = _canned(b"431 Request Header Fields Too Large", "Request Header Fields Too Large")
_TOO_SLOW = _canned(b"408 Request Timeout", "Request Timeout")

# Bytes the kernel may hold unsent for a connection (TCP_NOTSENT_LOWAT): Linux otherwise
# grows a socket's send buffer to tcp_wmem's 4 MiB, which a client that reads nothing
# leaves full: 1,800 stalled downloads would pin 7 GB of kernel memory, and each start
# cost a 4 MiB copy. Bytes in flight are not counted: a fast client is not slowed.
UNSENT_BYTES = 128 * 1024
_NOTSENT_LOWAT: int | None = getattr(socket, "TCP_NOTSENT_LOWAT", None)

# Phases of a connection's current request.
_IDLE, _HEADERS, _BODY = 0, 1, 2
# Bytes of a request line besides its URL ("GET " and " HTTP/1.1\r\n"), counted as such.
_REQUEST_LINE = 16


def connection_budget(descriptors: int, wanted: int) -> int:
    """Connections to keep with `descriptors` open files allowed: `wanted` (0: as many as
    fit, at most MAX_AUTO_CONNECTIONS), never more than fit beside the reserve."""
    reserve = min(RESERVED_DESCRIPTORS, descriptors // 4)
    fit = max(1, (descriptors - reserve) // DESCRIPTORS_PER_CONNECTION)
    return min(wanted, fit) if wanted else min(fit, MAX_AUTO_CONNECTIONS)


async def client_gone(request: Request, exc: Exception) -> Response:
    """A request whose client left while its body was read (Starlette's ClientDisconnect),
    or whose body timed out: nobody to answer, nothing to log but the access line (499, as
    nginx says for a client that closed, or 408). uvicorn drops the response."""
    timed_out = TIMED_OUT in request.scope.get("extensions", {})
    return Response(status_code=408 if timed_out else 499)


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the guards above; `guarded_protocol` makes a
    subclass per server with its limits."""

    max_connections = 4096
    header_timeout = 10.0
    body_timeout = 60.0
    send_timeout = 60.0
    max_header_bytes = 65536
    _sweeping = False  # one sweep chain per server (per subclass)
    _clients: Waiting[GuardedProtocol] = Waiting()  # the server's, waiting on their client

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase = _HEADERS
        self._deadline: float | None = None  # loop time the headers or body are late
        self._header_bytes = 0  # bytes received since the headers started
        self._header_count = 0  # bytes of the URL and headers parsed so far
        self._refused = False
        self._send_deadline: float | None = None  # loop time a stalled response is aborted
        self._out_size = 0  # write buffer size at the last sweep
        self._sendfile_wait: asyncio.Future[None] | None = None
        self._sendfile_deadline: float | None = None

    # ---- connections -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections and not self._make_room():
            self._refused = True
            transport.abort()
            return
        now = self.loop.time()
        self._deadline = now + self.header_timeout
        self._clients.inside(self, now)
        sock = transport.get_extra_info("socket")
        if sock is not None and _NOTSENT_LOWAT is not None:
            with contextlib.suppress(OSError):  # not TCP (a Unix socket), an old kernel
                sock.setsockopt(socket.IPPROTO_TCP, _NOTSENT_LOWAT, UNSENT_BYTES)
        cls = type(self)
        if not cls._sweeping:
            cls._sweeping = True
            every = cls.sweep_every()
            self.loop.call_later(every, _sweep, cls, self.loop, self.connections, self.loop.time())

    def connection_lost(self, exc: Exception | None) -> None:
        self._clients.forget(self)
        self._deadline = self._send_deadline = None
        self._wake_sendfile()
        super().connection_lost(exc)

    def _make_room(self) -> bool:
        """Aborts the connection that has waited on its client the longest (see the
        module's doc); False when none does."""
        clients = self._clients
        found = clients.oldest(GuardedProtocol._waits_on_client)
        if found is None:
            return False
        conn, since = found
        conn._refused = True
        conn._deadline = None
        conn.transport.abort()
        clients.evicted += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "connection closed for a new one: its client was silent %.1f s (%d so far)",
                self.loop.time() - since,
                clients.evicted,
            )
        return True

    def _waits_on_client(self) -> bool:
        """True when the next move is the client's: idle between requests, or inside a
        request's headers or body that the server reads; not while the app processes a
        request or a response (or an earlier pipelined one) is being sent."""
        transport = self.transport
        if self._refused or transport.is_closing() or transport.get_write_buffer_size():
            return False
        if self.pipeline or self._sendfile_wait is not None:
            return False
        cycle = self.cycle
        if cycle is None:
            return self._phase == _HEADERS
        if self._phase == _BODY:
            if self.flow.read_paused or cycle.waiting_for_100_continue:
                return False
            return cycle.response_complete or not cycle.response_started
        return cycle.response_complete

    @classmethod
    def sweep_every(cls) -> float:
        return max(0.01, min(cls.header_timeout, cls.body_timeout, cls.send_timeout) / 4)

    def _check(self, now: float, step: float) -> None:
        """One sweep's look at this connection (see the module's doc)."""
        deadline = self._deadline
        if deadline is not None:
            cycle = self.cycle
            if self.flow.read_paused or (
                self._phase == _BODY and cycle is not None and cycle.waiting_for_100_continue
            ):
                self._deadline = deadline + step  # the server is not reading: not late
            elif now >= deadline:
                self._deadline = None
                if self._phase == _BODY:
                    self._body_late()
                elif not self.transport.is_closing():
                    self._refused = True
                    self.transport.abort()
                return
        transport = self.transport
        size = transport.get_write_buffer_size()
        if size and (self.flow.write_paused or transport.is_closing()):
            if self._send_deadline is None or size < self._out_size:
                self._send_deadline = now + self.send_timeout  # stalled, or it moved
        else:
            self._send_deadline = None
        self._out_size = size
        late = [d for d in (self._send_deadline, self._sendfile_deadline) if d is not None]
        if late and now >= min(late):
            self._send_stalled()
        elif self not in self._clients and self._waits_on_client():
            # its client has the move again (reading resumed, a response went out)
            if self._phase == _IDLE:
                self._clients.idle(self, now)
            else:
                self._clients.inside(self, now)

    def _body_late(self) -> None:
        """The body did not arrive in time: 408 when nothing was answered yet (and no
        earlier pipelined answer is on its way), then close."""
        cycle = self.cycle
        answer = not self.pipeline and cycle is not None and not cycle.response_started
        if cycle is not None:
            if answer:
                cycle.scope.setdefault("extensions", {})[TIMED_OUT] = {}
            cycle.disconnected = True  # the app's receive() says http.disconnect
            cycle.message_event.set()
        self._refused = True
        if answer and not self.transport.is_closing():
            self.transport.write(_TOO_SLOW)
        self.transport.close()

    def _send_stalled(self) -> None:
        self._send_deadline = self._sendfile_deadline = None
        if self.cycle is not None:
            self.cycle.disconnected = True
        self._refused = True
        self.transport.abort()
        self._wake_sendfile()

    def _wake_sendfile(self) -> None:
        waiter = self._sendfile_wait
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ---- reading -----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        # httptools reports a header only once it has ended, so the bytes are counted as
        # they arrive too; a chunk may also carry the start of the body, so this count
        # applies only if the headers are still not complete once it is parsed.
        if self._phase == _HEADERS:
            self._header_bytes += len(data)
        self._clients.heard(self, self.loop.time())
        super().data_received(data)
        counted = max(self._header_bytes, self._header_count)
        if self._phase == _HEADERS and not self._refused and counted > self.max_header_bytes:
            self._refuse_large()

    def _refuse_large(self) -> None:
        """431 and close; when an earlier (pipelined) answer is still being sent, close
        without an answer rather than cut into it."""
        self._refused = True
        self._deadline = None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            self.transport.abort()
            return
        self.transport.write(_TOO_LARGE)
        self.transport.close()

    def _count(self, n: int) -> bool:
        """Counts n bytes of the URL or headers; False (and 431) past the limit."""
        self._header_count += n
        if self._header_count > self.max_header_bytes:
            self._refuse_large()
            return False
        return True

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # a refused request was answered already
            super().send_400_response(msg)

    def on_message_begin(self) -> None:
        if self._refused:
            return
        super().on_message_begin()
        if self._phase != _HEADERS:  # a kept-alive connection's next request
            self._phase = _HEADERS
            self._header_bytes = 0
            now = self.loop.time()
            self._deadline = now + self.header_timeout
            self._clients.inside(self, now)
        self._header_count = _REQUEST_LINE

    def on_url(self, url: bytes) -> None:
        if not self._refused and self._count(len(url)):
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._refused and self._count(len(name) + len(value) + 4):
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._phase = _BODY
        self._header_bytes = 0
        self._deadline = self.loop.time() + self.body_timeout
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:
            # Weak references: scope -> extension -> cycle -> scope would be a cycle of a
            # dozen objects per request, left to the garbage collector.
            send_file = functools.partial(_sendfile, weakref.ref(self), weakref.ref(cycle))
            self.scope.setdefault("extensions", {})[SENDFILE] = {"send": send_file}

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._phase = _IDLE
        self._deadline = None
        self._clients.forget(self)  # the app has the whole request
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._phase == _IDLE and self._waits_on_client():
            self._clients.idle(self, self.loop.time())


def guarded_protocol(
    max_connections: int,
    header_timeout: float,
    max_header_bytes: int,
    body_timeout: float = 60.0,
    send_timeout: float = 60.0,
) -> type[GuardedProtocol]:
    """uvicorn's httptools protocol with the guards above (pass it as `http=`)."""
    limits = {
        "max_connections": max_connections,
        "header_timeout": header_timeout,
        "max_header_bytes": max_header_bytes,
        "body_timeout": body_timeout,
        "send_timeout": send_timeout,
        "_sweeping": False,
        "_clients": Waiting(),
    }
    return type("Guarded", (GuardedProtocol,), limits)


def _sweep(
    cls: type[GuardedProtocol],
    loop: asyncio.AbstractEventLoop,
    connections: set[Any],
    last: float,
) -> None:
    now = loop.time()
    for conn in list(connections):
        if isinstance(conn, cls):
            conn._check(now, now - last)
    if connections:
        loop.call_later(cls.sweep_every(), _sweep, cls, loop, connections, now)
    else:
        cls._sweeping = False


async def _sendfile(
    proto_ref: weakref.ref[GuardedProtocol],
    cycle_ref: weakref.ref[RequestResponseCycle],
    fd: int,
    offset: int,
    count: int,
) -> int:
    """Send `count` bytes of the file `fd` from `offset` as (part of) the response body with
    os.sendfile: the kernel copies page cache to socket, no read into Python, no thread.

    Called after the response start went out (the transport's buffer is drained first) and
    before the final (empty) body message; counts the bytes as sent body for uvicorn's
    Content-Length check. The socket is written through a duplicate of its descriptor, on
    the event loop, waiting for it to be writable as uvloop or asyncio report it; a wait
    longer than the protocol's send_timeout aborts the connection. When the client has
    gone, marks the response disconnected (uvicorn then drops the rest) and returns what
    was sent.
    """
    proto, cycle = proto_ref(), cycle_ref()
    if proto is None or cycle is None:  # the request is over
        return 0
    transport = proto.transport
    loop = asyncio.get_running_loop()
    sent = 0
    pause = 0.0005
    while transport.get_write_buffer_size() and not transport.is_closing():
        await asyncio.sleep(pause)  # the headers are still queued: rare, and brief
        pause = min(pause * 2, 0.05)  # (the sweep aborts a client that reads nothing)
        if proto._sendfile_deadline is None:
            proto._sendfile_deadline = loop.time() + proto.send_timeout
    proto._sendfile_deadline = None
    sock = transport.get_extra_info("socket")
    if transport.is_closing() or sock is None:
        cycle.disconnected = True
        return 0
    out = os.dup(sock.fileno())
    try:
        while sent < count and not transport.is_closing():
            try:
                n = os.sendfile(out, fd, offset + sent, count - sent)
            except BlockingIOError:
                writable = loop.create_future()
                loop.add_writer(out, _ready, writable)
                proto._sendfile_wait = writable
                proto._sendfile_deadline = loop.time() + proto.send_timeout
                try:
                    await writable
                finally:
                    loop.remove_writer(out)
                    proto._sendfile_wait = proto._sendfile_deadline = None
                continue
            except OSError:  # reset, broken pipe: the client went away
                break
            if n == 0:  # the file is shorter than announced
                break
            sent += n
    finally:
        os.close(out)
    cycle.expected_content_length -= sent
    if sent < count:
        cycle.disconnected = True
        transport.close()
    return sent


def _ready(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
