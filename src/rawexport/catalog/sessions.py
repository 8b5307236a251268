"""Console sessions in the catalog: a sign-in lives while its row does, on every node that
shares the catalog. Only a hash of each session id is stored."""

from __future__ import annotations

import hashlib

from sqlalchemy import Connection, Engine, delete, insert, select

from rawexport.catalog.tables import api_tokens, console_sessions


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


def end_token_sessions(c: Connection, token_id: int) -> None:
    """Within a token's revocation: its console sessions end with it."""
    c.execute(delete(console_sessions).where(console_sessions.c.token_id == token_id))


class SessionStore:
    engine: Engine

    def open_console_session(
        self,
        session_id: str,
        role: str,
        project_id: int | None,
        token_id: int | None,
        now: int,
        expires_ms: int,
    ) -> None:
        """Record a new sign-in (and forget the sessions that have expired)."""
        with self.engine.begin() as c:
            c.execute(delete(console_sessions).where(console_sessions.c.expires_ms <= now))
            c.execute(
                insert(console_sessions).values(
                    id_sha256=_hash(session_id),
                    role=role,
                    project_id=project_id,
                    token_id=token_id,
                    created_ms=now,
                    expires_ms=expires_ms,
                )
            )

    def console_session_live(self, session_id: str, now: int) -> bool:
        """The session is signed in: not ended, not expired, and its token (if it was
        opened with one) not revoked."""
        s = console_sessions.c
        query = (
            select(s.token_id, api_tokens.c.revoked)
            .select_from(console_sessions)
            .outerjoin(api_tokens, api_tokens.c.id == s.token_id)
            .where(s.id_sha256 == _hash(session_id), s.expires_ms > now)
        )
        with self.engine.connect() as c:
            row = c.execute(query).first()
        if row is None:
            return False
        return row.token_id is None or (row.revoked is not None and not row.revoked)

    def end_console_session(self, session_id: str) -> bool:
        """Sign-out; False when the session had ended already."""
        with self.engine.begin() as c:
            done = c.execute(
                delete(console_sessions).where(console_sessions.c.id_sha256 == _hash(session_id))
            )
        return bool(done.rowcount)
