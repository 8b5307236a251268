"""/auth/token signatures and the credentials of data calls (auth codes, API tokens)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson

from rawexport.api.cache import Fresh
from rawexport.catalog import Catalog, KeyPair
from rawexport.errors import UserError
from rawexport.settings import Settings
from rawexport.signatures import sign_auth

__all__ = ["sign_auth"]  # re-exported: the API checks what clients sign

AUTH_FIELDS = ("project", "ai", "tm", "auth")
MAX_AUTH_BODY = 64 * 1024


class Unauthorized(UserError):
    """A credential is missing, wrong, or not allowed on what it asks for; str() says which
    (for the log), the client is told only `Unauthorized`."""

    status = 401

    def public(self) -> str:
        return "Unauthorized"


def _scalar(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str | int):
        return str(value)
    return None


def parse_auth_params(query: Mapping[str, str], body: bytes) -> dict[str, str]:
    """The four /auth/token fields from the query string and the body, whatever its type.

    Real clients send a raw `project=..&ai=..&tm=..&auth=..` body as text/plain (even
    `text/plain,text/plain`) or form-encoded, or put the fields in the query string; a JSON
    object body is accepted too. Body fields win over query fields of the same name.
    """
    params = {k: query[k] for k in AUTH_FIELDS if k in query}
    text = body.decode("utf-8", errors="replace").strip()
    found: dict[str, Any] = {}
    if text.startswith("{"):
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            found = parsed
    elif text:
        found = dict(parse_qsl(text, keep_blank_values=True))
    for k in AUTH_FIELDS:
        value = _scalar(found.get(k))
        if value is not None:
            params[k] = value
    return params


def _project_key_pairs(catalog: Catalog, ai: str, uid: str) -> list[KeyPair]:
    project = catalog.project(ai)
    if project is None or project.uid != uid:
        return []
    return catalog.key_pairs(project.id)


def verify(
    catalog: Catalog, settings: Settings, params: Mapping[str, str], client_id: str | None, now: int
) -> KeyPair:
    """The key pair that signed a /auth/token request, or raise Unauthorized.

    Without `X-Client-Id` the project's key pairs are tried in turn: the HMAC still needs
    a private key, so this only spares clients that forget the header.
    """
    try:
        uid, ai, tm, given = (params[k] for k in AUTH_FIELDS)
    except KeyError:
        raise Unauthorized("missing field") from None
    if not (tm.isascii() and tm.isdigit() and len(tm) <= 16):
        raise Unauthorized("bad tm")
    if abs(now - int(tm)) > settings.auth_skew_seconds * 1000:
        raise Unauthorized("stale tm")
    if client_id:
        kp = catalog.key_pair(client_id)
        candidates = [kp] if kp is not None else []
    else:
        candidates = _project_key_pairs(catalog, ai, uid)
    given_b = given.strip().lower().encode("utf-8", errors="replace")
    for kp in candidates:
        expected = sign_auth(kp.private_key, uid, ai, tm).encode()
        if not hmac.compare_digest(expected, given_b):
            continue
        project = catalog.project_by_id(kp.project_id)
        if project.uid != uid or project.ai != ai:
            break
        return kp
    raise Unauthorized("bad signature")


def issue_code(catalog: Catalog, settings: Settings, key_pair: KeyPair, now: int) -> str:
    """A new auth code of a key pair verify() returned."""
    return catalog.issue_auth_code(
        key_pair.id,
        days=settings.auth_code_days,
        strict=settings.strict_auth_codes,
        now=now,
        max_live=settings.auth_max_live_codes,
    )


@dataclass(frozen=True)
class Credential:
    project_id: int
    rate_key: str  # what the rate limit counts: one key pair or one API token


def bearer(header: str | None) -> str | None:
    """The code or token of an Authorization header: bare, `Token x` or `Bearer x`."""
    if not header:
        return None
    value = header.strip()
    scheme, _, rest = value.partition(" ")
    if rest and scheme.lower() in ("token", "bearer"):
        value = rest.strip()
    return value or None


def resolve(
    catalog: Catalog, authorization: str | None, client_id: str | None, now: int
) -> Credential:
    """The project a data call may read, from its auth code or static API token.

    A code must belong to the key pair named by `X-Client-Id` when the header is sent (a
    code alone identifies its key). A static token works alone; with `X-Client-Id` the key
    must be of the token's project.
    """
    return _resolve(catalog, authorization, client_id, now)[0]


def _resolve(
    catalog: Catalog, authorization: str | None, client_id: str | None, now: int
) -> tuple[Credential, int | None]:
    """resolve(), and until when the credential is valid (an auth code's expiry)."""
    secret = bearer(authorization)
    if secret is None:
        raise Unauthorized("no credential")
    found = catalog.auth_code_entry(secret, now)
    if found is not None:
        kp, expires_ms = found
        if client_id and not hmac.compare_digest(kp.public_key.encode(), client_id.encode()):
            raise Unauthorized("code of another key")
        return Credential(kp.project_id, f"k{kp.id}"), expires_ms
    project_id = catalog.project_for_token(secret)
    if project_id is None:
        raise Unauthorized("unknown credential")
    if client_id:
        named = catalog.key_pair(client_id)
        if named is None or named.project_id != project_id:
            raise Unauthorized("key of another project")
    return Credential(project_id, token_rate_key(secret)), None


def token_rate_key(token: str) -> str:
    """What the rate limit counts for a static API token (the console counts the same)."""
    return "t" + hashlib.sha256(token.encode()).hexdigest()[:16]


class Credentials:
    """resolve() behind a short-lived cache (api/cache.py) of the credentials it found.

    Only credentials that passed are kept (a wrong one is checked against the catalog
    every time); an auth code is kept no longer than it is valid.
    """

    def __init__(self, catalog: Catalog, cache_seconds: float) -> None:
        self.catalog = catalog
        self._found: Fresh[tuple[Credential, int | None]] = Fresh(
            lambda: catalog.generation, cache_seconds
        )

    def cached(
        self, authorization: str | None, client_id: str | None, now: int
    ) -> Credential | None:
        found = self._found.get((authorization, client_id))
        if found is None or (found[1] is not None and found[1] <= now):
            return None
        return found[0]

    def aging(self, authorization: str | None, client_id: str | None) -> bool:
        return self._found.aging((authorization, client_id))

    def times(
        self, authorization: str | None, client_id: str | None
    ) -> tuple[tuple[float, float], Credential, int | None] | None:
        """The cache times (api/cache.Fresh.times) of the cached credential, the
        credential, and its own expiry (an auth code's; None for a token)."""
        found = self._found.get((authorization, client_id))
        times = self._found.times((authorization, client_id))
        return None if found is None or times is None else (times, found[0], found[1])

    def resolve(self, authorization: str | None, client_id: str | None, now: int) -> Credential:
        """From the catalog (raises Unauthorized); kept for the next requests."""
        generation = self.catalog.generation
        credential, until = _resolve(self.catalog, authorization, client_id, now)
        self._found.put((authorization, client_id), (credential, until), generation)
        return credential
