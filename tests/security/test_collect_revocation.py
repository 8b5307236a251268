"""The collectors see a revoked key or token and a disabled export as the export API does
(issue 20, point 10): at once on the node that made the change, within `cache_seconds` on
the others (before: a fixed 5 s cache of their own, blind to both)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rawexport.api.collect import Gate
from rawexport.catalog import Catalog
from rawexport.ingest.codecs import Refused
from tests.ingest.test_collectors import NATIVE, Site, make_site

BODY = json.dumps([{"type": "page", "visitUserId": "v", "page": "/p"}])


def close(site: Site) -> None:
    site.ingestor.stop()
    site.client.close()
    site.catalog.close()


def test_a_revoke_through_the_node_refuses_the_next_batch(tmp_path: Path) -> None:
    site = make_site(tmp_path, cache_seconds=60.0)
    try:
        token = site.catalog.create_api_token(site.project.id)

        def by_token() -> int:
            path = NATIVE.format(ai=site.project.ai)
            headers = {"authorization": f"Token {token}"}
            return int(site.client.post(path, content=BODY, headers=headers).status_code)

        assert site.post(NATIVE, BODY).status_code == 200  # key and project now cached
        assert by_token() == 200
        site.catalog.revoke_key_pair(site.key.public_key)
        assert site.post(NATIVE, BODY).status_code == 403
        assert by_token() == 200
        site.catalog.revoke_api_token(token)
        assert by_token() == 403
        fresh = site.catalog.create_key_pair(site.project.id)
        assert site.post(NATIVE, BODY, x_client_id=fresh.public_key).status_code == 200
        site.catalog.set_export(site.project.ai, False)
        r = site.post(NATIVE, BODY, x_client_id=fresh.public_key)
        assert r.status_code == 403 and "disabled" in r.json()["message"]
        assert len(site.rows("page")) == 4
    finally:
        close(site)


def test_a_revoke_by_another_node_is_seen_within_cache_seconds(tmp_path: Path) -> None:
    site = make_site(tmp_path, cache_seconds=0.0)  # no caching: seen by the next request
    other_node = Catalog(site.settings.database_url)
    try:
        assert site.post(NATIVE, BODY).status_code == 200
        other_node.revoke_key_pair(site.key.public_key)
        assert site.post(NATIVE, BODY).status_code == 403
    finally:
        other_node.close()
        close(site)


def test_the_gate_keeps_what_it_read_for_cache_seconds(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    other_node = Catalog(site.settings.database_url)
    now = [0.0]
    gate = Gate(site.catalog, require_key=False, cache_seconds=2.0, clock=lambda: now[0])
    try:
        ai, key = site.project.ai, site.key.public_key
        assert gate.check(ai, key, None).id == site.project.id
        other_node.revoke_key_pair(key)
        other_node.set_export(ai, False)
        now[0] = 1.9
        assert gate.check(ai, key, None).id == site.project.id  # within the bound
        now[0] = 2.0
        with pytest.raises(Refused) as refused:
            gate.check(ai, key, None)
        assert refused.value.status == 403
        other_node.set_export(ai, True)
        now[0] = 4.0
        with pytest.raises(Refused, match="wrong key"):
            gate.check(ai, key, None)
    finally:
        other_node.close()
        close(site)
