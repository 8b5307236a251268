"""The API's one error body, and what each branch of the error tree (rawexport.errors) answers.

Every answer outside the export envelopes and the collectors' reports has one shape,
`{"message": ..., "errors": [...]}` (and `requestId` on a 500): `error_body` writes it, for
the router's 404 and 405, the downloads' 403/404/416, a UserError's 4xx, a backend outage's
503 and the 500 of a bug, and for the connection guards' canned 408 and 431 too.

`answer` turns an exception into its answer: a UserError its status and public message; a
backend outage (a TransientError, or the catalog database unreachable, restarting or
locked) 503 with `Retry-After`, never a 500; anything else nothing (the app's 500). The app
registers it once for every route (`handle_error`), and the hot paths (api/hot.py), which answer
before Starlette's exception handling, call it too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from rawexport.catalog import catalog_unavailable
from rawexport.errors import RETRY_AFTER, TransientError, UserError, unavailable

log = logging.getLogger("rawexport.api")

JSON_TYPE = "application/json"


def error_body(message: str, errors: Sequence[Any] = (), request_id: str | None = None) -> bytes:
    """The error body: `{"message": ..., "errors": [...]}`, with `requestId` when given."""
    body: dict[str, Any] = {"message": message, "errors": list(errors)}
    if request_id is not None:
        body["requestId"] = request_id
    return orjson.dumps(body)


def error_response(
    status: int,
    message: str,
    headers: Mapping[str, str] | None = None,
    errors: Sequence[Any] = (),
    request_id: str | None = None,
) -> Response:
    """An answer with the error body."""
    body = error_body(message, errors, request_id)
    return Response(body, status, headers, media_type=JSON_TYPE)


@dataclass(frozen=True)
class ErrorAnswer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> Response:
        return Response(self.body, self.status, self.headers, media_type=JSON_TYPE)


def outage(exc: BaseException) -> bool:
    """A backend is unavailable for now: the same request may work later."""
    return isinstance(exc, TransientError) or catalog_unavailable(exc)


def answer(exc: BaseException, method: str, path: str) -> ErrorAnswer | None:
    """The answer of exc, None when it is a bug (500). An outage is logged (one line)."""
    if isinstance(exc, UserError):
        return ErrorAnswer(exc.status, error_body(exc.public(), exc.errors))
    if not outage(exc):
        return None
    if isinstance(exc, TransientError):
        message, retry_after = exc.public(), exc.retry_after
    else:
        message, retry_after = unavailable("the catalog"), RETRY_AFTER
    log.warning(
        "backend unavailable on %s %s: %s: %s",
        method,
        path,
        type(exc).__name__,
        str(exc).splitlines()[0] if str(exc) else "",
        extra={"event": "outage"},
    )
    return ErrorAnswer(503, error_body(message), {"retry-after": str(retry_after)})


async def handle_error(request: Request, exc: Exception) -> Response:
    """The app's exception handler of the error tree and of the catalog's outages; a bug
    goes on to the 500 handler."""
    found = answer(exc, request.method, request.url.path)
    if found is None:
        raise exc
    return found.response()
