"""The catalog's files half: the parts each export job committed, and the links issued
for them (a repeated call within a link's life gets the same links)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Engine, insert, select

from rawexport.catalog.tables import export_files, issued_links
from rawexport.types import PartInfo

FileRow = PartInfo  # a committed part, as the catalog lists it


class FileStore:
    """Committed parts and issued links; mixed into Catalog."""

    engine: Engine

    def files(self, job_id: int) -> list[FileRow]:
        with self.engine.begin() as c:
            rows = c.execute(
                select(export_files)
                .where(export_files.c.job_id == job_id)
                .order_by(export_files.c.part)
            ).all()
        return [FileRow(r.part, r.key, r.rows, r.bytes, r.md5, r.sha256) for r in rows]

    def part_md5(self, key: str) -> str | None:
        """The md5 the catalog holds of a committed part's object key, if any."""
        with self.engine.begin() as c:
            md5 = c.execute(select(export_files.c.md5).where(export_files.c.key == key).limit(1))
            value = md5.scalar()
        return str(value) if value else None

    def files_of(self, job_ids: Iterable[int]) -> dict[int, list[FileRow]]:
        ids = list(job_ids)
        out: dict[int, list[FileRow]] = {i: [] for i in ids}
        if not ids:
            return out
        with self.engine.begin() as c:
            rows = c.execute(
                select(export_files)
                .where(export_files.c.job_id.in_(ids))
                .order_by(export_files.c.job_id, export_files.c.part)
            ).all()
        for r in rows:
            out[r.job_id].append(FileRow(r.part, r.key, r.rows, r.bytes, r.md5, r.sha256))
        return out

    # ---- issued links ----------------------------------------------------------------

    def issued(
        self, project_id: int, scope: str, fingerprint: str, now: int
    ) -> tuple[Any, int] | None:
        with self.engine.begin() as c:
            row = c.execute(
                select(issued_links.c.links, issued_links.c.expires_ms)
                .where(
                    issued_links.c.project_id == project_id,
                    issued_links.c.scope == scope,
                    issued_links.c.fingerprint == fingerprint,
                    issued_links.c.expires_ms > now,
                )
                .order_by(issued_links.c.id.desc())
                .limit(1)
            ).first()
        return (json.loads(row[0]), int(row[1])) if row else None

    def save_issued(
        self, project_id: int, scope: str, fingerprint: str, links: Any, expires_ms: int, now: int
    ) -> None:
        with self.engine.begin() as c:
            c.execute(
                insert(issued_links).values(
                    project_id=project_id,
                    scope=scope,
                    fingerprint=fingerprint,
                    links=json.dumps(links, separators=(",", ":")),
                    expires_ms=expires_ms,
                    created_ms=now,
                )
            )
