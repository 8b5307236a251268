"""The console's form bodies, read within a size limit and parsed with their field count
checked before they are split.

starlette's form parser read any body whole and spent about 0.25 µs a byte on it, on the
event loop and before the session was looked at: 32 MiB of `&&&…` posted to /signin by
anyone held every other request for 8 s. The console's pages send small urlencoded forms
(a CSRF token and a few fields), so a form is at most MAX_FORM_BYTES and `max_fields`
fields; urllib's parser counts the fields before it splits them.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

MAX_FORM_BYTES = 64 * 1024


async def read_form(request: Request, max_fields: int) -> dict[str, str] | None:
    """The urlencoded form of a POST (a repeated field: its last value); None when it is
    larger than MAX_FORM_BYTES or has more than `max_fields` fields."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        # latin-1 then %-decoding as UTF-8: what starlette's parser does
        pairs = parse_qsl(body.decode("latin-1"), keep_blank_values=True, max_num_fields=max_fields)
    except ValueError:  # more fields than max_fields
        return None
    return dict(pairs)
