"""Console sessions: signed cookies that carry the role and the CSRF token of a browser,
and the id of a sign-in the catalog keeps.

A cookie is `base64url(json).hex(HMAC-SHA256)`, signed with a catalog secret (so every
node of a cluster reads it). It is HttpOnly, SameSite=Strict, limited to the console's
path and Secure when the public URL is https. A signed-in session also lives server-side
(catalog/sessions.py, checked on every request): sign-out deletes it, and so does revoking
the API token a project session was opened with, so a copied cookie stops working at once
on every node. An operator session is also bound to the admin token it signed in with (a
new `admin_token` ends it). Before sign-in, an anonymous session only carries the sign-in
form's CSRF token and is kept nowhere.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

COOKIE = "rawexport_console"
SECRET_NAME = "console_sessions"
OPERATOR = "operator"
PROJECT = "project"
ANONYMOUS = "anonymous"  # before sign-in: holds only the sign-in form's CSRF token
ANONYMOUS_SECONDS = 3600


@dataclass(frozen=True)
class Session:
    role: str
    csrf: str
    expires_s: int
    project_id: int | None = None
    token_id: int | None = None
    admin: str = ""  # operator: a fingerprint of the admin token signed in with
    sid: str = ""  # signed in: the id of its row in the catalog
    rate_key: str = ""  # signed in: the API's rate-limit key of its credential

    def payload(self) -> dict[str, Any]:
        return {
            "r": self.role,
            "c": self.csrf,
            "e": self.expires_s,
            "p": self.project_id,
            "t": self.token_id,
            "a": self.admin,
            "s": self.sid,
            "k": self.rate_key,
        }


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    def __init__(self, secret: str, admin_token: str, lifetime_s: float, secure: bool) -> None:
        self._secret = secret.encode()
        self._admin = admin_token
        self.lifetime_s = lifetime_s
        self.secure = secure

    def _sign(self, text: str) -> str:
        return hmac.new(self._secret, text.encode(), hashlib.sha256).hexdigest()

    def admin_fingerprint(self) -> str:
        return self._sign("admin-token\n" + self._admin)[:32]

    def is_admin_token(self, candidate: str) -> bool:
        """Constant-time: the admin token is set and candidate is it."""
        if not self._admin:
            return False
        return hmac.compare_digest(candidate.encode(), self._admin.encode())

    def new(
        self,
        role: str,
        now_s: float,
        project_id: int | None = None,
        token_id: int | None = None,
        rate_key: str = "",
    ) -> Session:
        life = ANONYMOUS_SECONDS if role == ANONYMOUS else self.lifetime_s
        admin = self.admin_fingerprint() if role == OPERATOR else ""
        if role == OPERATOR:
            rate_key = "o" + admin[:16]  # one credential: the admin token
        csrf = secrets.token_urlsafe(32)
        sid = "" if role == ANONYMOUS else secrets.token_urlsafe(32)
        return Session(role, csrf, int(now_s + life), project_id, token_id, admin, sid, rate_key)

    def encode(self, session: Session) -> str:
        body = _b64(json.dumps(session.payload(), separators=(",", ":")).encode())
        return f"{body}.{self._sign(body)}"

    def decode(self, raw: str | None, now_s: float) -> Session | None:
        """The session of a cookie value, or None when it is missing, forged or expired."""
        if not raw or len(raw) > 4096 or "." not in raw:
            return None
        body, _, signature = raw.rpartition(".")
        if not hmac.compare_digest(self._sign(body).encode(), signature.encode()):
            return None
        try:
            d = json.loads(_unb64(body))
            session = Session(
                str(d["r"]),
                str(d["c"]),
                int(d["e"]),
                d["p"],
                d["t"],
                str(d.get("a", "")),
                str(d.get("s", "")),
                str(d.get("k", "")),
            )
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires_s <= now_s:
            return None
        if session.role == OPERATOR and not (
            self._admin and hmac.compare_digest(session.admin, self.admin_fingerprint())
        ):
            return None
        return session

    def cookie_header(self, value: str, path: str, max_age: int) -> str:
        parts = [
            f"{COOKIE}={value}",
            f"Path={path}",
            f"Max-Age={max_age}",
            "HttpOnly",
            "SameSite=Strict",
        ]
        if self.secure:
            parts.append("Secure")
        return "; ".join(parts)


def csrf_ok(session: Session | None, given: str | None) -> bool:
    """The form's CSRF token is the session's (compared in constant time)."""
    if session is None or not given:
        return False
    return hmac.compare_digest(session.csrf.encode(), given.encode("utf-8", errors="replace"))
