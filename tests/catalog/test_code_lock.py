"""Codes of one key are issued one at a time: the key pair's row is locked until the commit.

Two /auth/token requests of one key, each between inserting its code and revoking what is
past `auth_max_live_codes`, must not both run: neither sees the other's new code, so each
keeps max_live codes besides it, and the key ends with max_live + 1 (or, revoking in
another order, the two deadlock). The test forces that interleaving instead of hoping for
it: each request, once its code is inserted, waits until the other has inserted too, or is
seen waiting for the lock (PostgreSQL's pg_stat_activity), which only the lock causes.

SQLite has one writer: a second transaction's insert waits for the first's commit, lock
or no lock, so the interleaving cannot happen there and the test runs on PostgreSQL.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import event, text

from rawexport.catalog import Catalog

MAX_LIVE = 3
DEADLINE = 60.0  # neither happened: something else is stuck


def test_two_codes_of_one_key_at_once_keep_max_live(catalog: Catalog) -> None:
    if catalog.engine.dialect.name != "postgresql":
        pytest.skip("SQLite serializes writers: the interleaving cannot happen")
    p = catalog.create_project("a")
    kp = catalog.create_key_pair(p.id)
    now = p.created_ms
    old = [
        catalog.issue_auth_code(kp.id, days=30, strict=False, now=now, max_live=MAX_LIVE)
        for _ in range(MAX_LIVE)
    ]
    inserted = 0
    changed = threading.Condition()

    def waiting_for_a_lock() -> bool:
        with catalog.engine.connect() as c:
            n = c.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        return int(n) > 0

    def after_insert(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        nonlocal inserted
        if not statement.lstrip().startswith("INSERT INTO auth_codes"):
            return
        with changed:
            inserted += 1
            changed.notify_all()
        deadline = time.monotonic() + DEADLINE
        while True:
            with changed:
                if inserted >= 2 or changed.wait(0.02) and inserted >= 2:
                    return  # both codes inserted, neither committed: the race is on
            if waiting_for_a_lock():
                return  # the other request waits for this one's commit
            assert time.monotonic() < deadline, "neither the second insert nor a lock wait"

    codes: list[str] = []
    errors: list[BaseException] = []

    def issue() -> None:
        try:
            code = catalog.issue_auth_code(
                kp.id, days=30, strict=False, now=now + 1, max_live=MAX_LIVE
            )
            codes.append(code)
        except BaseException as e:  # noqa: BLE001 - collected for the assertion below
            errors.append(e)

    event.listen(catalog.engine, "after_cursor_execute", after_insert)
    try:
        threads = [threading.Thread(target=issue) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(2 * DEADLINE)
    finally:
        event.remove(catalog.engine, "after_cursor_execute", after_insert)
    assert not errors, errors[0]
    assert len(codes) == 2
    live = [c for c in old + codes if catalog.auth_code_key(c, now + 1) is not None]
    assert len(live) == MAX_LIVE, f"{len(live)} live codes of one key, max {MAX_LIVE}"
    assert set(codes) <= set(live)  # the newest are kept
