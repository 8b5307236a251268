"""Signed, expiring download links (docs/design.md, decision 7), shaped to parse with real clients.

An object key is `{4hex}_{ai}_{type}[_v2]_{UTC yyyyMMddHHmm}/part-…`. Clients written for
GrowingIO's S3 links find the type and date by position: Java's `splitLink` searches for
'_' from index 63 (or 64) of the whole link, and expects the '_' right after the ai to be
the first one there. That holds only for one band of origin lengths, so a link's first
segment carries a hex prefix sized to its base URL (`link_path`): the '_' before the ai
lands at index <= 62 and the one after it at >= 64, for any base URL whose length plus
the slash is 16..61. The rest of the key is unchanged, so `url.split('/')[3]` and the
`part-…` file name still parse. A prefix of exactly 4 hex is the key itself; any other
link path is mapped back to its key by `api.downloads` (signed, so only issued paths are).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from urllib.parse import quote

from rawexport.timeutil import DAY_MS

SECRET_NAME = "link_signing"
MINUTE_MS = 60_000


# The '_' before the ai at index <= 62, the one after a 16-character ai at >= 64.
_LAST_PREFIX_END = 62
_SHORTEST_PREFIX_END = 60  # GrowingIO's S3 origin (56) plus its 4-hex prefix
STORED_PREFIX = 4
_FIRST = re.compile(
    r"(?P<prefix>[0-9a-f]+)_(?P<ai>[0-9a-f]+)_(?P<middle>[a-z0-9_]+)_(?P<stamp>\d{8}|\d{12})"
)


def prefix_length(base_url: str) -> int:
    """Hex characters before a link's first '_' for links under base_url.

    4 for GrowingIO's 56-character S3 origin; longer for shorter origins (44 for one of
    16), shorter down to 1 for origins of 57..61. Past 61 no prefix can work: 4.
    """
    start = len(base_url.rstrip("/")) + 1  # where the key starts in the link
    if start + 1 > _LAST_PREFIX_END:
        return STORED_PREFIX
    return min(max(STORED_PREFIX, _SHORTEST_PREFIX_END - start), _LAST_PREFIX_END - start)


def link_path(key: str, base_url: str) -> str:
    """The path a link to `key` carries under base_url: the key, its hex prefix resized."""
    first, sep, rest = key.partition("_")
    want = prefix_length(base_url)
    if not sep or want == len(first):
        return key
    if want < len(first):
        return f"{first[:want]}_{rest}"
    # From the first segment alone: every part of one folder keeps one prefix.
    folder = key.partition("/")[0]
    fill = hashlib.sha256(folder.encode()).hexdigest()[: want - len(first)]
    return f"{first}{fill}_{rest}"


_PART_UUID = re.compile(r"part-\d+-(?P<uuid>[0-9a-f-]{36})(?:-c000)?\.csv\.gz")


def day_alias(key: str, ai: str, name: str, day: str, n: int) -> str:
    """The v1 day path of a part: `{4hex}_{ai}_{name}_{yyyyMMdd}/part-{n:05d}-{uuid}.csv.gz`.

    GrowingIO's v1 day links had one prefix per type for the day and part numbers unique
    within it (clients name files `part-NNNNN` + date); the uuid is the part's own, so the
    download route finds the hour's file again.
    """
    m = _PART_UUID.fullmatch(key.rpartition("/")[2])
    if m is None:
        raise ValueError(f"not a part key: {key!r}")
    hex4 = hashlib.sha256(f"{ai}|v1|{name}|{day}".encode()).hexdigest()[:STORED_PREFIX]
    return f"{hex4}_{ai}_{name}_{day}/part-{n:05d}-{m['uuid']}.csv.gz"


def part_uuid(path: str) -> str | None:
    """The uuid of a part link path or key (`part-NNNNN-{uuid}[-c000].csv.gz`)."""
    m = _PART_UUID.fullmatch(path.rpartition("/")[2])
    return None if m is None else m["uuid"]


def parse_first_segment(path: str) -> tuple[str, str, str, str] | None:
    """(prefix, ai, `type[_v2]`, stamp) of a link path's first segment, or None."""
    m = _FIRST.fullmatch(path.partition("/")[0])
    return None if m is None else (m["prefix"], m["ai"], m["middle"], m["stamp"])


def sign(secret: str, key: str, expires: int) -> str:
    """hex HMAC-SHA256(secret, path + "\\n" + expires) over the unquoted link path."""
    message = f"{key}\n{expires}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def make_link(base_url: str, secret: str, path: str, expires: int) -> str:
    """`{base_url}/{path}?expires={unix ms}&sign={hmac}`; path is a key or a `link_path`."""
    quoted = quote(path, safe="/")
    return f"{base_url}/{quoted}?expires={expires}&sign={sign(secret, path, expires)}"


def verify(secret: str, key: str, expires: str | None, signature: str | None, now_ms: int) -> bool:
    """True when the link's signature is ours and it has not expired (constant-time)."""
    if not expires or not signature:
        return False
    if not (expires.isascii() and expires.isdigit() and len(expires) <= 16):
        return False
    when = int(expires)
    expected = sign(secret, key, when).encode()
    good = hmac.compare_digest(expected, signature.encode("utf-8", errors="replace"))
    return good and when > now_ms


def retained_until(hour_ms: int, retention_days: int) -> int:
    """When the files of the hour starting at hour_ms fall out of retention."""
    return hour_ms + retention_days * DAY_MS


def expiry(now_ms: int, expire_minutes: int, hour_ms: int, retention_days: int) -> int:
    """A link's expiry: `expire` minutes from now, never past its file's retention."""
    return min(now_ms + expire_minutes * MINUTE_MS, retained_until(hour_ms, retention_days))
