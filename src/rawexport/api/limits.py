"""Connection limits uvicorn does not have: how many connections, how long and how large
a request's headers may be.

uvicorn's httptools protocol has no header timeout and no header size limit: a client
that connects and says nothing holds a descriptor forever (~20 k of them exhausted the
process), and one 128 MiB header held the event loop for seconds. `guarded_protocol`
returns its protocol class with three guards:

- past `max_connections` open connections a new one is closed at once;
- a request's headers must be complete within `header_timeout` seconds of its start (of
  the connection, or of the request on a kept-alive one), else the connection is closed
  (checked by one sweep of the connections every quarter of the timeout, not by a timer
  per request: a late one is closed within 1.25 × header_timeout);
- headers (request line included) larger than `max_header_bytes` answer 431 and close.

It also offers downloads zero-copy sendfile (uvicorn has no ASGI pathsend): the
`rawexport.sendfile` extension of a request's scope (api/downloads.py uses it).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import weakref
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("rawexport.limits")

_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/json\r\ncontent-length: 57\r\nconnection: close\r\n\r\n"
    b'{"message":"Request Header Fields Too Large","errors":[]}'
)


def guarded_protocol(
    max_connections: int, header_timeout: float, max_header_bytes: int
) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with the guards above (pass it as `http=`)."""

    sweep_every = max(0.01, header_timeout / 4)

    class Guarded(HttpToolsProtocol):
        _sweeping = False  # one sweep chain per server (this class is made per server)

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._header_bytes = 0  # bytes received since the request started
            self._in_headers = True
            self._header_since: float | None = None  # loop time the headers started
            self._refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                self._refused = True
                transport.abort()
                return
            self._header_since = self.loop.time()
            if not Guarded._sweeping:
                Guarded._sweeping = True
                self.loop.call_later(sweep_every, _sweep, self.loop, self.connections)

        def _too_slow(self, now: float) -> None:
            since = self._header_since
            if since is not None and now - since >= header_timeout:
                self._header_since = None
                if not self.transport.is_closing():
                    self._refused = True
                    self.transport.abort()

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            # httptools reports a header only once it has ended, so the bytes are counted
            # as they arrive; a chunk may also carry the start of the body, so the limit
            # applies only if the headers are still not complete once it is parsed.
            if self._in_headers:
                self._header_bytes += len(data)
            super().data_received(data)
            if self._in_headers and self._header_bytes > max_header_bytes:
                self._refuse_large()

        def _refuse_large(self) -> None:
            self._refused = True
            self._header_since = None
            self.transport.write(_TOO_LARGE)
            self.transport.close()

        def send_400_response(self, msg: str) -> None:
            if not self._refused:  # a refused request was answered already
                super().send_400_response(msg)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if not self._in_headers:  # a kept-alive connection's next request
                self._in_headers = True
                self._header_bytes = 0
            if self._header_since is None:
                self._header_since = self.loop.time()

        def on_headers_complete(self) -> None:
            self._in_headers = False
            self._header_bytes = 0
            self._header_since = None
            super().on_headers_complete()
            cycle = self.cycle
            if cycle is not None and cycle.scope is self.scope:
                # A weak reference: scope -> extension -> cycle -> scope would be a cycle
                # of a dozen objects per request, left to the garbage collector.
                send_file = functools.partial(_sendfile, self.transport, weakref.ref(cycle))
                self.scope.setdefault("extensions", {})[SENDFILE] = {"send": send_file}

    def _sweep(loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        now = loop.time()
        for conn in list(connections):
            if isinstance(conn, Guarded):
                conn._too_slow(now)
        if connections:
            loop.call_later(sweep_every, _sweep, loop, connections)
        else:
            Guarded._sweeping = False

    return Guarded


SENDFILE = "rawexport.sendfile"


async def _sendfile(
    transport: asyncio.Transport, cycle_ref: weakref.ref[Any], fd: int, offset: int, count: int
) -> int:
    """Send `count` bytes of the file `fd` from `offset` as (part of) the response body with
    os.sendfile: the kernel copies page cache to socket, no read into Python, no thread.

    Called after the response start went out (the transport's buffer is drained first) and
    before the final (empty) body message; counts the bytes as sent body for uvicorn's
    Content-Length check. The socket is written through a duplicate of its descriptor, on
    the event loop, waiting for it to be writable as uvloop or asyncio report it. When the
    client has gone, marks the response disconnected (uvicorn then drops the rest) and
    returns what was sent.
    """
    cycle = cycle_ref()
    if cycle is None:  # the request is over
        return 0
    loop = asyncio.get_running_loop()
    sent = 0
    while transport.get_write_buffer_size() and not transport.is_closing():
        await asyncio.sleep(0.0005)  # the headers are still queued: rare, and brief
    sock = transport.get_extra_info("socket")
    if transport.is_closing() or sock is None:
        cycle.disconnected = True
        return 0
    out = os.dup(sock.fileno())
    try:
        while sent < count:
            try:
                n = os.sendfile(out, fd, offset + sent, count - sent)
            except BlockingIOError:
                writable = loop.create_future()
                loop.add_writer(out, _ready, writable)
                try:
                    await writable
                finally:
                    loop.remove_writer(out)
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
