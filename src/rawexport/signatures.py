"""The HMAC signature of GrowingIO's /auth/token: the API checks it, the client signs with it."""

from __future__ import annotations

import hashlib
import hmac


def sign_auth(private_key: str, project_uid: str, ai: str, tm: str) -> str:
    """The `auth` of /auth/token: lowercase hex HMAC-SHA256 over the documented string."""
    message = f"POST\n/auth/token\nproject={project_uid}&ai={ai}&tm={tm}"
    return hmac.new(private_key.encode(), message.encode(), hashlib.sha256).hexdigest()
