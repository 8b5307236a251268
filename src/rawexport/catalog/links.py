"""The SDK collectors' links in the catalog: page show times and login users' visitors, so
every node links a session's events alike (ingest/joins.py keeps the node's own copy)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, delete, select

from rawexport.catalog.tables import sdk_links


@dataclass(frozen=True)
class Link:
    ai: str
    kind: str  # "page" or "login"
    key: str  # 32 hex digits of a hash of what is linked by
    at: int
    visitor: str | None = None
    session: str | None = None


class LinkStore:
    engine: Engine

    def add_links(self, links: Sequence[Link], now: int) -> None:
        """Write links in one transaction, through the driver's own executemany: thousands
        a second, where SQLAlchemy's per-row parameter handling cost ~30 us each."""
        if not links:
            return
        mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        sql = (
            "INSERT INTO sdk_links (ai, kind, link_key, at, visitor, session, created_ms) "
            f"VALUES ({', '.join([mark] * 7)})"
        )
        rows = [
            (link.ai, link.kind, link.key, link.at, link.visitor, link.session, now)
            for link in links
        ]
        with self.engine.begin() as conn:
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.executemany(sql, rows)
            finally:
                cursor.close()

    def latest_link(self, ai: str, kind: str, key: str, at_most: int | None) -> Link | None:
        """The link of that key with the greatest time at or before `at_most`."""
        q = select(sdk_links.c.at, sdk_links.c.visitor, sdk_links.c.session).where(
            sdk_links.c.ai == ai, sdk_links.c.kind == kind, sdk_links.c.link_key == key
        )
        if at_most is not None:
            q = q.where(sdk_links.c.at <= at_most)
        with self.engine.connect() as conn:
            row = conn.execute(q.order_by(sdk_links.c.at.desc()).limit(1)).first()
        if row is None:
            return None
        return Link(ai, kind, key, int(row.at), row.visitor, row.session)

    def delete_links_before(self, created_ms: int) -> int:
        with self.engine.begin() as conn:
            done = conn.execute(delete(sdk_links).where(sdk_links.c.created_ms < created_ms))
        return int(done.rowcount or 0)
