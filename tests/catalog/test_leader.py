"""One scheduler among nodes: the PostgreSQL advisory lock, and its takeover."""

from __future__ import annotations

import time

from sqlalchemy import text

from rawexport.catalog import Catalog
from rawexport.catalog.leader import Leadership, lock_key
from tests.pg_util import PostgresCluster


def test_sqlite_processes_always_plan(tmp_path: object) -> None:
    c = Catalog(f"sqlite:///{tmp_path}/c.db")
    assert Leadership(c.engine).lead() and Leadership(c.engine).lead()
    c.close()


def test_one_leader_then_takeover_when_its_session_dies(postgres: PostgresCluster) -> None:
    url = postgres.create_database("leader")
    node_a, node_b = Catalog(url), Catalog(url, run_migrations=False)
    try:
        a, b = Leadership(node_a.engine), Leadership(node_b.engine)
        assert a.lead() and not b.lead()
        assert a.lead() and not b.lead()  # asking again changes nothing
        # Node A dies: its session is terminated (what PostgreSQL does when a client
        # vanishes). pg_terminate_backend only signals it: the lock goes when it has exited.
        with node_b.engine.connect() as admin:
            admin.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND objid = (:k & 4294967295)::oid"
                ),
                {"k": lock_key("rawexport.scheduler")},
            )
            admin.commit()
        deadline = time.monotonic() + 10
        while not b.lead() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert b.lead()
        assert not a.lead()  # A notices it lost the lock and does not plan
        b.release()
        assert a.lead()
        a.release()
    finally:
        node_a.close()
        node_b.close()
