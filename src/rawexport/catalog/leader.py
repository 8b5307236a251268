"""Who runs the scheduler when several `rawexport serve` nodes share one catalog.

On PostgreSQL a node leads while it holds a session advisory lock, on a connection of its
own: when the node dies its session ends, the lock is released, and the next node that
asks (every `plan_interval`) takes over. On SQLite (one machine) every process may plan:
planning is idempotent (a (type, hour) that has a job is not planned again).
"""

from __future__ import annotations

import hashlib
import logging
import threading

from sqlalchemy import Connection, Engine, func, select

log = logging.getLogger("rawexport.leader")


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for a name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class Leadership:
    """`lead()` is True while this process holds the lock named `name` (it asks again when
    it does not); `release()` gives it up."""

    def __init__(
        self, engine: Engine, name: str = "rawexport.scheduler", role: str = "the scheduler"
    ) -> None:
        self.engine = engine
        self.key = lock_key(name)
        self.role = role
        self.shared = engine.dialect.name == "postgresql"
        self._conn: Connection | None = None
        self._lock = threading.Lock()

    def lead(self) -> bool:
        if not self.shared:
            return True
        with self._lock:
            if self._conn is not None:
                try:  # still ours while our session lives
                    self._conn.execute(select(1))
                    return True
                except Exception:
                    log.warning("lost the scheduler lock's connection", exc_info=True)
                    self._drop()
            conn = self.engine.connect()
            try:
                got = bool(conn.execute(select(func.pg_try_advisory_lock(self.key))).scalar())
                conn.commit()
            except Exception:
                conn.close()
                raise
            if not got:
                conn.close()
                return False
            log.info("this node now runs %s", self.role, extra={"event": "leader"})
            self._conn = conn
            return True

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.invalidate()  # never back to the pool with the lock held
            finally:
                self._conn = None

    def release(self) -> None:
        with self._lock:
            if self._conn is None:
                return
            try:
                self._conn.execute(select(func.pg_advisory_unlock(self.key)))
                self._conn.commit()
            except Exception:
                log.warning("could not unlock the scheduler lock", exc_info=True)
            self._drop()
