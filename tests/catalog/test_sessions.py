"""Console sessions in the catalog (SQLite and PostgreSQL): live until ended, expired, or
their token revoked; only hashes of session ids are stored."""

from __future__ import annotations

from sqlalchemy import select

from rawexport.catalog import Catalog
from rawexport.catalog.tables import console_sessions


def test_a_session_lives_until_it_ends(catalog: Catalog) -> None:
    p = catalog.create_project("p")
    token = catalog.create_api_token(p.id)
    found = catalog.token_identity(token)
    assert found is not None
    token_id = found[0]
    catalog.open_console_session("op-sid", "operator", None, None, now=1000, expires_ms=5000)
    catalog.open_console_session("pj-sid", "project", p.id, token_id, now=1000, expires_ms=5000)
    assert catalog.console_session_live("op-sid", 1001)
    assert catalog.console_session_live("pj-sid", 1001)
    assert not catalog.console_session_live("op-sid", 5000)  # expired
    assert not catalog.console_session_live("nope", 1001)
    with catalog.tx() as c:
        ids = set(c.execute(select(console_sessions.c.id_sha256)).scalars())
    assert len(ids) == 2 and not {"op-sid", "pj-sid"} & ids  # hashes only
    assert catalog.end_console_session("op-sid") and not catalog.end_console_session("op-sid")
    assert not catalog.console_session_live("op-sid", 1001)
    assert catalog.revoke_api_token_id(p.id, token_id)
    assert not catalog.console_session_live("pj-sid", 1001)
    catalog.open_console_session("later", "operator", None, None, now=6000, expires_ms=9000)
    with catalog.tx() as c:  # the expired and ended ones are gone
        assert len(c.execute(select(console_sessions)).all()) == 1
