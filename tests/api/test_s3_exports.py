"""Exports on an S3 store (moto's server): the same bytes as on disk, links that redirect to
presigned URLs, HEAD from the object's metadata, and `rawexport pull` verifying them."""

from __future__ import annotations

import datetime
import hashlib
import json
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from rawexport.api.app import create_app
from rawexport.blobs.s3 import S3BlobStore
from rawexport.client.client import ExportClient
from rawexport.client.pull import pull
from rawexport.demo.generate import generate
from rawexport.export.actions import export_now
from rawexport.node import Services, open_services
from rawexport.settings import Settings
from rawexport.timeutil import DAY_MS, HOUR_MS, beijing_hour_label, hour_floor, now_ms
from tests.blobs.conftest import fake_aws_env, moto_s3  # noqa: F401  (fixtures)
from tests.conftest import Clock
from tests.e2e_util import free_port, serve_in_thread

HOUR = hour_floor(now_ms()) - 30 * HOUR_MS
LABEL = beijing_hour_label(HOUR)
AI = "5e3e0123456789ab"


@dataclass
class Site:
    s3: Services
    local: Services
    base: str
    token: str


def _export(settings: Settings) -> tuple[Services, str]:
    services = open_services(settings)
    p = services.catalog.create_project("s3", ai=AI, export_since_ms=HOUR - DAY_MS)
    token = services.catalog.create_api_token(p.id, "s3 tests")
    generate(services.store, AI, HOUR, 1, 3_000, ["page", "visit"], seed=5)
    export_now(services.exporter, p, [HOUR], None, now_ms())
    return services, token


@pytest.fixture(scope="module")
def site(
    moto_s3: tuple[str, str],  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Site]:
    endpoint, bucket = moto_s3
    port = free_port()
    common: dict[str, Any] = {"part_bytes": 65536, "rate_limit": 1e6, "rate_burst": 1_000_000}
    base = f"http://127.0.0.1:{port}"
    s3_settings = Settings(
        home=tmp_path_factory.mktemp("s3"),
        public_url=base,
        blobs_url=f"s3://{bucket}/exports",
        s3_endpoint_url=endpoint,
        **common,
    )
    local_settings = Settings(home=tmp_path_factory.mktemp("local"), **common)
    s3, token = _export(s3_settings)
    local, _ = _export(local_settings)
    app = create_app(s3_settings, s3.catalog, s3.blobs)
    try:
        with serve_in_thread(app, port):
            yield Site(s3, local, base, token)
    finally:
        s3.close()
        local.close()


def _files(services: Services) -> dict[str, str]:
    """Every committed part: key -> sha256, from the catalog."""
    out = {}
    for job in services.catalog.jobs(None, "finished"):
        for f in services.catalog.files(job.id):
            out[f.key] = f.sha256
    return out


def test_an_export_to_s3_has_the_same_keys_and_bytes_as_on_disk(site: Site) -> None:
    s3_files, local_files = _files(site.s3), _files(site.local)
    assert len(s3_files) > 4 and s3_files == local_files  # same keys, same checksums
    assert isinstance(site.s3.blobs, S3BlobStore)
    for key, sha in s3_files.items():
        body = b"".join(site.s3.blobs.open_range(key, 0, site.s3.blobs.stat(key).size))  # type: ignore[union-attr]
        assert hashlib.sha256(body).hexdigest() == sha
        assert hashlib.sha256(site.local.blobs.path(key).read_bytes()).hexdigest() == sha  # type: ignore[attr-defined]


def test_links_redirect_to_presigned_urls_and_head_answers_here(site: Site) -> None:
    client = TestClient(create_app(site.s3.settings, site.s3.catalog, site.s3.blobs))
    url = f"/v2/insights/hour/page/{AI}/{LABEL}.json?expire=30"
    body = client.get(url, headers={"Authorization": site.token}).json()
    assert body["status"] == "FINISHED" and len(body["downloadLinks"]) >= 2
    for link in body["downloadLinks"]:
        path = link[len(site.base) :]
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 302
        location = r.headers["location"]
        assert "X-Amz-Signature=" in location and "X-Amz-Expires=" in location
        expires = int(location.split("X-Amz-Expires=")[1].split("&")[0])
        # the link's remaining life, no more (the answer may reuse links another test of
        # this site asked for with a longer expire: they keep at least the 30 min asked)
        link_ms = int(urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)["expires"][0])
        remaining_s = (link_ms - now_ms()) / 1000
        assert expires >= 29 * 60 and remaining_s - 5 <= expires <= remaining_s + 1
        with urllib.request.urlopen(location, timeout=10) as s3r:
            data = s3r.read()
            md5 = s3r.headers["x-amz-meta-md5-hash"]
        assert md5 == hashlib.md5(data).hexdigest()
        head = client.head(path)
        assert head.status_code == 200 and head.headers["x-amz-meta-md5-hash"] == md5
        assert int(head.headers["content-length"]) == len(data)
        # A tampered link is refused before any redirect.
        assert (
            client.get(path.replace("sign=", "sign=0"), follow_redirects=False).status_code == 403
        )


def test_a_redirect_is_presigned_for_the_links_remaining_life(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link used 20 minutes into its 30 redirects to a URL that dies with it: presigned
    for the 10 minutes left, not for the link's whole lifetime."""
    issued = now_ms()
    clock = Clock(issued)

    def signing_time(remove_tzinfo: bool = True) -> datetime.datetime:
        at = datetime.datetime.fromtimestamp(clock.now / 1000, datetime.UTC)
        return at.replace(tzinfo=None) if remove_tzinfo else at

    # botocore signs at its own clock reading: make it this test's clock.
    monkeypatch.setattr("botocore.auth.get_current_datetime", signing_time)
    client = TestClient(create_app(site.s3.settings, site.s3.catalog, site.s3.blobs, clock=clock))
    url = f"/v2/insights/hour/page/{AI}/{LABEL}.json?expire=30"
    body = client.get(url, headers={"Authorization": site.token}).json()
    links = body["downloadLinks"]
    assert body["status"] == "FINISHED" and links
    for link in links:
        path = link[len(site.base) :]
        expires_ms = int(urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)["expires"][0])
        assert issued < expires_ms <= issued + 30 * 60_000
        for left_ms in (expires_ms - issued, 10 * 60_000 - 500, 600):  # 30, 10 min, 0.6 s left
            clock.now = expires_ms - left_ms
            r = client.get(path, follow_redirects=False)
            assert r.status_code == 302, (left_ms, r.text)
            q = urllib.parse.parse_qs(urllib.parse.urlsplit(r.headers["location"]).query)
            signed = datetime.datetime.strptime(q["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ")
            signed_s = int(signed.replace(tzinfo=datetime.UTC).timestamp())
            assert signed_s == clock.now // 1000
            dies_s = signed_s + int(q["X-Amz-Expires"][0])
            # The presigned URL dies with the link (give or take the second it rounds to).
            assert expires_ms // 1000 <= dies_s <= expires_ms // 1000 + 1, (left_ms, q)
        clock.now = expires_ms  # expired: refused, nothing presigned
        assert client.get(path, follow_redirects=False).status_code == 403


def test_pull_verifies_parts_through_the_redirects(site: Site, tmp_path: Path) -> None:
    client = ExportClient(site.base, AI, token=site.token, sleep=lambda s: None)
    try:
        result = pull(client, "hour", None, LABEL, tmp_path)
    finally:
        client.close()
    assert set(result.files) >= {"page", "visit"}
    manifests = list(tmp_path.rglob("_manifest.json"))
    assert manifests
    for m in manifests:
        for entry in json.loads(m.read_text())["parts"]:
            name = entry["key"].rsplit("/", 1)[1][:10] + ".csv.gz"
            data = (m.parent / name).read_bytes()
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
