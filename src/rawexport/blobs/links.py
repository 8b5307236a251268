"""Signed, expiring download links of the local blob store (DESIGN decision 7)."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote

from rawexport.timeutil import DAY_MS

SECRET_NAME = "link_signing"
MINUTE_MS = 60_000


def sign(secret: str, key: str, expires: int) -> str:
    """hex HMAC-SHA256(secret, key + "\\n" + expires) over the unquoted key."""
    message = f"{key}\n{expires}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def make_link(base_url: str, secret: str, key: str, expires: int) -> str:
    """`{base_url}/{key}?expires={unix ms}&sign={hmac}`; the key stays the first segments."""
    path = quote(key, safe="/")
    return f"{base_url}/{path}?expires={expires}&sign={sign(secret, key, expires)}"


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
