"""The export endpoints' parameters and answers: `expire`, the path's export type, data
type and date, `manifest=true`, and the envelopes in GrowingIO's field order (spec
GROWINGIO_EXPORT_SPEC.md "Envelope"); the request flows that use them are api/app.Api."""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import parse_qsl, quote

import orjson
from starlette.responses import Response

from rawexport.api.errors import error_body, error_response
from rawexport.api.hot import Reply
from rawexport.api.insights import FINISHED, Answer
from rawexport.api.ratelimit import Turn
from rawexport.errors import UserError
from rawexport.schema import DATA_TYPE_NAMES, DATA_TYPES
from rawexport.timeutil import BadDate, Window, parse_export_date, request_time

DEFAULT_EXPIRE = 5
MAX_EXPIRE = 10080
BAD_PARAM = "请求参数不合法，"
EXPIRE_TOO_LONG = "过期时间应小于7天"


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


UNAUTHORIZED = Reply(401, error_body("Unauthorized"))


class BadParam(UserError, ValueError):
    """A path or query value the export endpoints reject; str() is the errorMsg."""


def parse_expire(raw: str | None) -> int:
    """`expire` minutes: default 5, 1..10080."""
    if raw is None:
        return DEFAULT_EXPIRE
    if raw.isascii() and raw.isdigit():
        if len(raw) > 6 or int(raw) > MAX_EXPIRE:
            raise BadParam(EXPIRE_TOO_LONG)
        if int(raw) >= 1:
            return int(raw)
    raise BadParam(BAD_PARAM + raw)


@functools.lru_cache(maxsize=4096)  # a pure function of the path; bad ones raise (not kept)
def export_window(export_type: str, raw_date: str, data_type: str | None = None) -> Window:
    """The request's hours; checks export_type, then data_type, then the date."""
    if export_type not in ("hour", "day"):
        raise BadParam(BAD_PARAM + export_type)
    if data_type is not None and data_type not in DATA_TYPES:
        raise BadParam(BAD_PARAM + data_type)
    try:
        return parse_export_date(export_type, raw_date)
    except BadDate as e:
        raise BadParam(BAD_PARAM + str(e)) from None


@functools.lru_cache(maxsize=1024)
def _params(query_string: bytes) -> dict[str, str]:
    """A query string's parameters, as Starlette's request.query_params.get reads them."""
    return dict(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True))


def expire_param(query_string: bytes) -> str | None:
    return _params(query_string).get("expire")


def wants_extras(query_string: bytes) -> bool:
    """`manifest=true` (or 1, yes): the client asks for rawexport's fields besides
    GrowingIO's (the `manifest` links, and v1's `errorMsg`). Without it an answer has
    exactly GrowingIO's fields: a client that maps them strictly (Jackson's default fails
    on an unknown field) reads every answer."""
    return _params(query_string).get("manifest", "").lower() in ("true", "1", "yes")


def error_header(text: str) -> dict[str, str]:
    """The error text of a v1 answer (whose GrowingIO shape has no field for it), as a
    percent-encoded UTF-8 header."""
    return {"x-rawexport-error": quote(text, safe=" ,.:;()/-_'")} if text else {}


_minute: list[tuple[int, str]] = [(-1, "")]


def _request_time(now: int) -> str:
    """request_time(now), formatted once a minute."""
    minute, text = _minute[0]
    if minute != now // 60_000:
        minute, text = now // 60_000, request_time(now)
        _minute[0] = (minute, text)
    return text


def too_many(turn: Turn) -> str:
    return f"Too Many Requests: over the rate limit, retry after {turn.retry_after} s"


def too_many_attempts(turn: Turn) -> Response:
    return error_response(429, "Too Many Requests", {"retry-after": str(turn.retry_after)})


def v2_envelope(
    answer: Answer,
    export_type: str,
    data_type: str | None,
    label: str,
    now: int,
    extras: bool = False,
) -> dict[str, Any]:
    """The v2 envelope, GrowingIO's fields in GrowingIO's order; with `extras`, then
    rawexport's `manifest` (a FINISHED answer's manifest links)."""
    links: Any = (
        {t: answer.links.get(t, []) for t in DATA_TYPE_NAMES}
        if data_type is None
        else answer.links.get(data_type, [])
    )
    body: dict[str, Any] = {
        "status": answer.status,
        "downloadLinks": links,
        "exportType": export_type,
    }
    if data_type is not None:
        body["dataType"] = data_type
    body |= {
        "exportDate": label,
        "exportVersion": "v2",
        "requestTime": _request_time(now),
        "errorMsg": answer.error,
    }
    if extras and answer.status == FINISHED:
        body["manifest"] = (
            {t: answer.manifests.get(t, []) for t in DATA_TYPE_NAMES}
            if data_type is None
            else answer.manifests.get(data_type, [])
        )
    return body
