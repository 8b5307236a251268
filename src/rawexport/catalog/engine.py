"""Catalog engines by URL: SQLite (WAL, full sync) by default, PostgreSQL by URL; migrations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from rawexport.fsutil import create_private

# What a catalog call raises when its database fails (unreachable, restarting, locked):
# callers outside the catalog name it so, not by its library.
DatabaseError = SQLAlchemyError


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def engine_url(url: str) -> str:
    """The SQLAlchemy URL of a catalog URL: `postgresql://` and `postgres://` use psycopg 3."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme) :]
    return url


def make_engine(url: str) -> Engine:
    """An engine for a catalog URL: SQLite (WAL, full sync, a 30 s busy wait) or PostgreSQL."""
    url = engine_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            # Private keys and the link-signing secret live here: owner only. SQLite gives
            # its -wal and -shm files the database file's mode.
            create_private(Path(path))
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if not url.startswith("postgresql+psycopg://"):
        raise ValueError(f"catalog_url must be sqlite:/// or postgresql://, not {url!r}")
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def catalog_unavailable(e: BaseException) -> bool:
    """Whether e says the catalog database cannot be used right now, so the same call may
    work later: unreachable or restarting (PostgreSQL's OperationalError: refused, reset,
    shutting down, starting up), a connection lost mid-call, SQLite's lock timeout, no free
    connection in the pool. A TransientError outage, though SQLAlchemy raises it."""
    if isinstance(e, OperationalError | InterfaceError | PoolTimeout):
        return True
    return isinstance(e, DBAPIError) and e.connection_invalidated


def migrate(engine: Engine) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", "rawexport.catalog:migrations")
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
