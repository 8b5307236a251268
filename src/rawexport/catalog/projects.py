"""The catalog's face: projects and credentials, on top of the job half (jobs.py).

SQLite (WAL) is the embedded default; PostgreSQL is chosen by URL. Every write that must
be all-or-nothing (committing an export revision) runs in one transaction.
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
import string
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from rawexport.catalog.deliveries import DeliveryStore
from rawexport.catalog.engine import make_engine, migrate
from rawexport.catalog.files import FileStore
from rawexport.catalog.jobs import CatalogError, JobStore, _pk
from rawexport.catalog.links import LinkStore
from rawexport.catalog.sessions import SessionStore, end_token_sessions
from rawexport.catalog.sweeping import SweepStore
from rawexport.catalog.tables import (
    api_tokens,
    auth_codes,
    key_pairs,
    meta,
    projects,
)
from rawexport.catalog.webhooks import WebhookStore
from rawexport.timeutil import DAY_MS, now_ms

ALNUM = string.ascii_letters + string.digits


def random_alnum(n: int) -> str:
    return "".join(secrets.choice(ALNUM) for _ in range(n))


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Project:
    id: int
    ai: str
    uid: str
    name: str
    export_enabled: bool
    export_since_ms: int | None
    retention_days: int
    v1_enabled: bool
    created_ms: int

    def public(self) -> dict[str, Any]:
        return {
            "ai": self.ai,
            "uid": self.uid,
            "name": self.name,
            "export_enabled": self.export_enabled,
            "export_since_ms": self.export_since_ms,
            "retention_days": self.retention_days,
            "v1_enabled": self.v1_enabled,
        }


@dataclass(frozen=True)
class KeyPair:
    id: int
    project_id: int
    public_key: str
    private_key: str


@dataclass(frozen=True)
class Credential:
    """A key pair or API token as listed: never its secret (the private key, the token)."""

    kind: str  # "key" or "token"
    id: int
    label: str  # the public key, or the token's masked display
    description: str
    created_ms: int
    revoked: bool


def _key_id(c: Connection, public_key: str) -> int | None:
    kp = c.execute(select(key_pairs.c.id).where(key_pairs.c.public_key == public_key)).scalar()
    return None if kp is None else int(kp)


# Writes that never make a cached read stale: a new auth code (a cache holds only codes it
# has seen), issued links (the link cache itself), the SDK links and console sessions (no
# cache holds them).
_HARMLESS_WRITES = (
    "INSERT INTO auth_codes",
    "INSERT INTO issued_links",
    "INSERT INTO sdk_links",
    "DELETE FROM sdk_links",
    "INSERT INTO console_sessions",
    "DELETE FROM console_sessions",
)
_WROTE = "rawexport_wrote"


class Catalog(
    JobStore,
    FileStore,
    LinkStore,
    SessionStore,
    SweepStore,
    DeliveryStore,
    WebhookStore,
):
    def __init__(self, url: str, *, run_migrations: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._writes = itertools.count(1)  # next() is atomic: no increment is lost
        self._generation = 0
        event.listen(self.engine, "after_cursor_execute", self._saw_statement)
        event.listen(self.engine.pool, "checkin", self._checked_in)
        if run_migrations:
            migrate(self.engine)

    @property
    def generation(self) -> int:
        """A number that grows after every write through this catalog (any thread, any
        table but the harmless ones above): a cache of catalog reads taken at one
        generation is stale once it differs. Writes by other processes are not seen here."""
        return self._generation

    def _saw_statement(self, conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        head = statement.lstrip()[:6].upper()
        if head in ("INSERT", "UPDATE", "DELETE") and not statement.lstrip().startswith(
            _HARMLESS_WRITES
        ):
            conn.info[_WROTE] = True

    def _checked_in(self, _dbapi_conn: Any, record: Any) -> None:
        # Counted once the connection is back in the pool, i.e. after its commit (or
        # rollback): a reader that sees the new generation also sees the written rows.
        if record is not None and record.info.pop(_WROTE, False):
            self._generation = next(self._writes)

    def close(self) -> None:
        self.engine.dispose()

    # ---- meta ------------------------------------------------------------------------

    def secret(self, name: str) -> str:
        """A server-wide secret (created once, shared by every node using this catalog)."""
        with self.tx() as c:
            row = c.execute(select(meta.c.value).where(meta.c.key == name)).first()
            if row:
                return str(row[0])
        value = secrets.token_hex(32)
        try:
            with self.tx() as c:
                c.execute(insert(meta).values(key=name, value=value))
            return value
        except IntegrityError:
            with self.tx() as c:
                return str(c.execute(select(meta.c.value).where(meta.c.key == name)).scalar_one())

    # ---- projects --------------------------------------------------------------------

    def create_project(
        self,
        name: str,
        *,
        ai: str | None = None,
        uid: str | None = None,
        export_enabled: bool = True,
        export_since_ms: int | None = None,
        retention_days: int = 15,
        v1_enabled: bool = True,
    ) -> Project:
        now = now_ms()
        values = {
            "ai": ai or secrets.token_hex(8),
            "uid": uid or random_alnum(8),
            "name": name,
            "export_enabled": export_enabled,
            "export_since_ms": (now if export_since_ms is None else export_since_ms)
            if export_enabled
            else None,
            "retention_days": retention_days,
            "v1_enabled": v1_enabled,
            "created_ms": now,
        }
        try:
            with self.tx() as c:
                c.execute(insert(projects).values(**values))
        except IntegrityError:
            raise CatalogError(f"a project with ai {values['ai']} or uid exists") from None
        project = self.project(str(values["ai"]))
        assert project is not None
        return project

    def project(self, ai: str) -> Project | None:
        with self.tx() as c:
            row = c.execute(select(projects).where(projects.c.ai == ai)).first()
        return Project(**row._asdict()) if row else None

    def project_by_id(self, project_id: int) -> Project:
        with self.tx() as c:
            row = c.execute(select(projects).where(projects.c.id == project_id)).one()
        return Project(**row._asdict())

    def projects(self) -> list[Project]:
        with self.tx() as c:
            rows = c.execute(select(projects).order_by(projects.c.id)).all()
        return [Project(**r._asdict()) for r in rows]

    def set_retention(self, ai: str, days: int) -> Project:
        """Keep the project's exports `days` days (1..3650); the sweeper applies it."""
        if not 1 <= days <= 3650:
            raise CatalogError(f"retention must be 1..3650 days, got {days}")
        project = self.project(ai)
        if project is None:
            raise CatalogError(f"no project {ai}")
        with self.tx() as c:
            c.execute(
                update(projects).where(projects.c.id == project.id).values(retention_days=days)
            )
        return self.project_by_id(project.id)

    def set_export(self, ai: str, enabled: bool, since_ms: int | None = None) -> Project:
        project = self.project(ai)
        if project is None:
            raise CatalogError(f"no project {ai}")
        values: dict[str, Any] = {"export_enabled": enabled}
        if enabled and (since_ms is not None or project.export_since_ms is None):
            values["export_since_ms"] = now_ms() if since_ms is None else since_ms
        with self.tx() as c:
            c.execute(update(projects).where(projects.c.id == project.id).values(**values))
        result = self.project(ai)
        assert result is not None
        return result

    # ---- credentials -----------------------------------------------------------------

    def create_key_pair(self, project_id: int) -> KeyPair:
        public, private = random_alnum(32), random_alnum(32)
        with self.tx() as c:
            res = c.execute(
                insert(key_pairs).values(
                    project_id=project_id,
                    public_key=public,
                    private_key=private,
                    created_ms=now_ms(),
                    revoked=False,
                )
            )
            key_id = _pk(res)
        return KeyPair(key_id, project_id, public, private)

    def key_pair(self, public_key: str) -> KeyPair | None:
        with self.tx() as c:
            row = c.execute(
                select(key_pairs).where(
                    key_pairs.c.public_key == public_key, key_pairs.c.revoked.is_(False)
                )
            ).first()
        if row is None:
            return None
        return KeyPair(row.id, row.project_id, row.public_key, row.private_key)

    def key_pairs(self, project_id: int) -> list[KeyPair]:
        """The project's key pairs that are not revoked, oldest first."""
        with self.tx() as c:
            rows = c.execute(
                select(key_pairs)
                .where(key_pairs.c.project_id == project_id, key_pairs.c.revoked.is_(False))
                .order_by(key_pairs.c.id)
            ).all()
        return [KeyPair(r.id, r.project_id, r.public_key, r.private_key) for r in rows]

    def ping(self) -> None:
        """One round trip to the database; raises DatabaseError when it does not answer."""
        with self.engine.connect() as c:
            c.execute(text("SELECT 1"))

    def create_api_token(self, project_id: int, description: str = "") -> str:
        token = random_alnum(48)
        with self.tx() as c:
            c.execute(
                insert(api_tokens).values(
                    project_id=project_id,
                    token_sha256=sha256_hex(token),
                    display=f"{token[:5]}*{token[-5:]}",
                    description=description,
                    created_ms=now_ms(),
                    revoked=False,
                )
            )
        return token

    def project_for_token(self, token: str) -> int | None:
        with self.tx() as c:
            row = c.execute(
                select(api_tokens.c.project_id).where(
                    api_tokens.c.token_sha256 == sha256_hex(token),
                    api_tokens.c.revoked.is_(False),
                )
            ).first()
        return int(row[0]) if row else None

    def issue_auth_code(
        self, key_pair_id: int, *, days: int, strict: bool, now: int, max_live: int = 0
    ) -> str:
        """A new code of the key pair, valid for days from now (the caller's clock).

        With max_live > 0 the key keeps at most that many live codes: the oldest beyond
        it are revoked (one captured signed request cannot mint an unbounded number).
        """
        code = random_alnum(64)
        with self.tx() as c:
            # Codes of one key are issued one at a time (the key's row is locked until the
            # commit; SQLite has one writer anyway): two at once each revoking the other's
            # older codes deadlocked on PostgreSQL.
            c.execute(select(key_pairs.c.id).where(key_pairs.c.id == key_pair_id).with_for_update())
            if strict:
                c.execute(
                    update(auth_codes)
                    .where(auth_codes.c.key_pair_id == key_pair_id)
                    .values(revoked=True)
                )
            c.execute(
                insert(auth_codes).values(
                    key_pair_id=key_pair_id,
                    code_sha256=sha256_hex(code),
                    created_ms=now,
                    expires_ms=now + days * DAY_MS,
                    revoked=False,
                )
            )
            if max_live > 0:
                older = (
                    c.execute(
                        select(auth_codes.c.id)
                        .where(
                            auth_codes.c.key_pair_id == key_pair_id,
                            auth_codes.c.revoked.is_(False),
                            auth_codes.c.expires_ms > now,
                        )
                        .order_by(auth_codes.c.created_ms.desc(), auth_codes.c.id.desc())
                        .offset(max_live)
                    )
                    .scalars()
                    .all()
                )
                if older:
                    c.execute(
                        update(auth_codes).where(auth_codes.c.id.in_(older)).values(revoked=True)
                    )
        return code

    def revoke_key_pair(self, public_key: str) -> bool:
        """Revoke a key pair and every code issued to it; False when there is no such key."""
        with self.tx() as c:
            kp = _key_id(c, public_key)
            if kp is None:
                return False
            c.execute(update(key_pairs).where(key_pairs.c.id == kp).values(revoked=True))
            c.execute(update(auth_codes).where(auth_codes.c.key_pair_id == kp).values(revoked=True))
        return True

    def revoke_auth_codes(self, public_key: str) -> int | None:
        """Revoke every live code of a key (the key stays); None when there is no such key."""
        with self.tx() as c:
            kp = _key_id(c, public_key)
            if kp is None:
                return None
            res = c.execute(
                update(auth_codes)
                .where(auth_codes.c.key_pair_id == kp, auth_codes.c.revoked.is_(False))
                .values(revoked=True)
            )
        return int(res.rowcount)

    def revoke_api_token(self, token: str) -> bool:
        """Revoke a static API token, named by its value, and end the console sessions
        opened with it; False when it is unknown."""
        with self.tx() as c:
            found = c.execute(
                select(api_tokens.c.id).where(api_tokens.c.token_sha256 == sha256_hex(token))
            ).scalar()
            if found is None:
                return False
            c.execute(update(api_tokens).where(api_tokens.c.id == found).values(revoked=True))
            end_token_sessions(c, int(found))
        return True

    def delete_dead_auth_codes(self, now: int) -> int:
        """Delete expired and revoked codes (they can never be used again)."""
        with self.tx() as c:
            res = c.execute(
                auth_codes.delete().where(
                    (auth_codes.c.expires_ms <= now) | auth_codes.c.revoked.is_(True)
                )
            )
        return int(res.rowcount)

    def auth_code_key(self, code: str, now: int) -> KeyPair | None:
        """The key pair an unexpired, unrevoked auth code was issued to."""
        found = self.auth_code_entry(code, now)
        return None if found is None else found[0]

    def auth_code_entry(self, code: str, now: int) -> tuple[KeyPair, int] | None:
        """The key pair of an unexpired, unrevoked auth code, and when the code expires."""
        with self.tx() as c:
            row = c.execute(
                select(key_pairs, auth_codes.c.expires_ms)
                .join(auth_codes, auth_codes.c.key_pair_id == key_pairs.c.id)
                .where(
                    auth_codes.c.code_sha256 == sha256_hex(code),
                    auth_codes.c.revoked.is_(False),
                    auth_codes.c.expires_ms > now,
                    key_pairs.c.revoked.is_(False),
                )
            ).first()
        if row is None:
            return None
        kp = KeyPair(row.id, row.project_id, row.public_key, row.private_key)
        return kp, int(row.expires_ms)

    # ---- credentials as listed (console, `key list`, `token list`) ---------------------

    def credentials(self, project_id: int) -> list[Credential]:
        """The project's key pairs, then its API tokens, oldest first, without secrets."""
        with self.tx() as c:
            keys = c.execute(
                select(key_pairs).where(key_pairs.c.project_id == project_id).order_by("id")
            ).all()
            tokens = c.execute(
                select(api_tokens).where(api_tokens.c.project_id == project_id).order_by("id")
            ).all()
        return [
            Credential("key", r.id, r.public_key, "", r.created_ms, r.revoked) for r in keys
        ] + [
            Credential("token", r.id, r.display, r.description, r.created_ms, r.revoked)
            for r in tokens
        ]

    def token_identity(self, token: str) -> tuple[int, int] | None:
        """(token id, project id) of a live API token."""
        with self.tx() as c:
            row = c.execute(
                select(api_tokens.c.id, api_tokens.c.project_id).where(
                    api_tokens.c.token_sha256 == sha256_hex(token),
                    api_tokens.c.revoked.is_(False),
                )
            ).first()
        return (int(row[0]), int(row[1])) if row else None

    def revoke_api_token_id(self, project_id: int, token_id: int) -> bool:
        """Revoke the project's API token with this id and end the console sessions opened
        with it; False when it has none such."""
        with self.tx() as c:
            res = c.execute(
                update(api_tokens)
                .where(api_tokens.c.id == token_id, api_tokens.c.project_id == project_id)
                .values(revoked=True)
            )
            if res.rowcount:
                end_token_sessions(c, token_id)
        return bool(res.rowcount)
