"""Connection limits uvicorn does not have: how many connections, how long and how large
a request's headers may be.

uvicorn's httptools protocol has no header timeout and no header size limit: a client
that connects and says nothing holds a descriptor forever (~20 k of them exhausted the
process), and one 128 MiB header held the event loop for seconds. `guarded_protocol`
returns its protocol class with three guards:

- past `max_connections` open connections a new one is closed at once;
- a request's headers must be complete within `header_timeout` seconds of its start (of
  the connection, or of the request on a kept-alive one), else the connection is closed;
- headers (request line included) larger than `max_header_bytes` answer 431 and close.
"""

from __future__ import annotations

import asyncio
import logging
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

    class Guarded(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._header_bytes = 0  # bytes received since the request started
            self._in_headers = True
            self._header_timer: asyncio.TimerHandle | None = None
            self._refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                self._refused = True
                transport.abort()
                return
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(header_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _too_slow(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self._refused = True
                self.transport.abort()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

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
            self._disarm()
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
            if self._header_timer is None:
                self._arm()

        def on_headers_complete(self) -> None:
            self._in_headers = False
            self._header_bytes = 0
            self._disarm()
            super().on_headers_complete()

    return Guarded
