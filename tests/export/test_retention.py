"""Re-export, backfill and retention through the real app, store and blob store."""

from __future__ import annotations

import hashlib
import json
import os
import urllib.parse
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, update
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from rawexport.api.app import create_app
from rawexport.blobs.local import LocalBlobStore
from rawexport.catalog.tables import export_jobs, issued_links
from rawexport.cli import main
from rawexport.demo.generate import generate
from rawexport.export.actions import export_now, reexport
from rawexport.export.keys import export_prefix
from rawexport.export.retention import SweepReport, sweep
from rawexport.node import Services, open_services
from rawexport.settings import Settings
from rawexport.timeutil import DAY_MS, HOUR_MS, beijing_hour_label
from tests.conftest import Clock
from tests.store_util import local

T0 = 1_735_689_600_000  # 2025-01-01 08:00 Beijing


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Services, TestClient, Clock, str, str]]:
    settings = Settings(home=tmp_path, rate_limit=1000, rate_burst=1000, public_url="http://t")
    services = open_services(settings)
    clock = Clock(T0 + 2 * HOUR_MS)
    p = services.catalog.create_project("r", export_since_ms=T0, retention_days=2)
    token = services.catalog.create_api_token(p.id)
    generate(services.store, p.ai, T0, 2, 300, data_types=["page"], seed=5)
    export_now(services.exporter, p, [T0, T0 + HOUR_MS], "page", clock.now)
    app = create_app(settings, services.catalog, services.blobs, clock=clock)
    with TestClient(app) as client:
        yield services, client, clock, p.ai, token
    services.close()


def sweep_at(services: Services, now: int) -> SweepReport:
    return sweep(services.catalog, services.store, services.blobs, now, orphan_age_ms=120_000)


def issued_links_left(services: Services) -> int:
    with services.catalog.tx() as c:
        return int(c.execute(select(func.count()).select_from(issued_links)).scalar_one())


def links(client: TestClient, ai: str, token: str, hour: int, expire: int = 5) -> dict[str, object]:
    r = client.get(
        f"/v2/insights/hour/page/{ai}/{beijing_hour_label(hour)}.json?expire={expire}",
        headers={"Authorization": token},
    )
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


def fetch(client: TestClient, link: str) -> int:
    u = urllib.parse.urlsplit(link)
    return int(client.get(f"{u.path}?{u.query}").status_code)


def test_rerun_makes_a_revision_and_old_links_live_until_they_expire(
    env: tuple[Services, TestClient, Clock, str, str],
) -> None:
    services, client, clock, ai, token = env
    first = links(client, ai, token, T0, expire=10)
    assert first["status"] == "FINISHED"
    old_link = first["downloadLinks"][0]  # type: ignore[index]
    project = services.catalog.project(ai)
    assert project is not None
    report = reexport(services.exporter, project, [T0], "page", clock.now)
    assert [(r["version"], r["revision"], r["status"]) for r in report] == [
        ("v2", 2, "finished"),
        ("v1", 2, "finished"),
    ]
    # New requests get revision 2 at once; the link issued for revision 1 keeps working
    # until it expires, so a sweep must keep revision 1's files meanwhile.
    new = links(client, ai, token, T0)
    assert new["status"] == "FINISHED" and new["downloadLinks"] != first["downloadLinks"]
    new_links = new["downloadLinks"]
    assert isinstance(new_links, list) and all(fetch(client, link) == 200 for link in new_links)
    # (v1 revision 1 was never linked: it may go at once.)
    first_sweep = sweep_at(services, clock.now)
    assert first_sweep.superseded_revisions == 1 and first_sweep.expired_links == 0
    assert issued_links_left(services) == 2  # the 10-minute and the 5-minute answer
    assert fetch(client, old_link) == 200  # still served
    clock.now += 11 * 60_000
    assert fetch(client, old_link) == 403
    report_sweep = sweep_at(services, clock.now)
    assert report_sweep.superseded_revisions == 1  # now v2 revision 1 too
    assert report_sweep.expired_links == 2 and issued_links_left(services) == 0
    jobs = services.catalog.jobs(project.id, "superseded")
    assert sorted((j.version, j.revision) for j in jobs) == [("v1", 1), ("v2", 1)]
    assert services.catalog.files(jobs[0].id) == []


def test_backfill_cli_and_retention(env: tuple[Services, TestClient, Clock, str, str]) -> None:
    services, client, clock, ai, token = env
    home = str(services.settings.home)
    runner = CliRunner()
    r = runner.invoke(
        main,
        ["export", "backfill", "--home", home, "--project", ai, "--data-type", "page"]
        + ["--from", beijing_hour_label(T0), "--to", beijing_hour_label(T0 + HOUR_MS)],
    )
    assert r.exit_code == 0, r.output
    assert '"revision": 2' in r.output
    r = runner.invoke(
        main, ["export", "rerun", "--home", home, "--project", ai, "--day", "20991231"]
    )
    assert r.exit_code == 1 and "only closed hours" in r.output
    assert links(client, ai, token, T0)["status"] == "FINISHED"
    # Two days later the first hour is past retention: files, events and rows go.
    clock.now = T0 + 2 * DAY_MS
    report = sweep_at(services, clock.now)
    assert report.expired_hours == 1 and report.deleted_jobs == 4 and report.store_hours == 1
    assert links(client, ai, token, T0)["status"] == "NOT_EXISTS"
    assert local(services.store).hour_files(ai, "page", T0) == []
    assert links(client, ai, token, T0 + HOUR_MS)["status"] == "FINISHED"


def test_permanent_failure_shows_in_error_msg(
    env: tuple[Services, TestClient, Clock, str, str],
) -> None:
    """A truly unreadable store file ends the hour in ERROR, and errorMsg names it."""
    services, client, clock, ai, token = env
    project = services.catalog.project(ai)
    assert project is not None
    hour = T0 + 2 * HOUR_MS
    generate(services.store, ai, hour, 1, 30, data_types=["page"], seed=6)
    bad = local(services.store).hour_dir(ai, "page", hour) / f"{'e' * 32}.parquet"
    bad.write_bytes(b"\x00" * 64)  # a disk fault: the file's bytes are gone
    clock.now = hour + HOUR_MS + 1000
    services.catalog.plan(project.id, "v2", ["page"], [hour], clock.now)
    services.exporter.drain("w")
    body = links(client, ai, token, hour)
    assert body["status"] == "ERROR" and body["downloadLinks"] == []
    msg = str(body["errorMsg"])
    assert msg.startswith(f"PermanentExportError: event file …/{bad.name} ")
    assert "not readable Parquet" in msg and str(bad.parent) not in msg  # no server path
    [job] = services.catalog.jobs(project.id, since_hour_ms=hour)
    assert job.attempts == 1  # no pointless retries


def test_sweep_drops_scratch_of_interrupted_cluster_exports(
    env: tuple[Services, TestClient, Clock, str, str],
) -> None:
    services, _, clock, ai, _ = env
    project = services.catalog.project(ai)
    assert project is not None
    reexport(services.exporter, project, [T0], "page", clock.now, wait=False)
    pending = export_prefix(ai, "v2", "page", T0, 2)  # revision 2 is queued
    dead = export_prefix(ai, "v2", "page", T0 + HOUR_MS, 7)
    keys = [f"_work/{p}/a1/s00000-r00001.spill" for p in (pending, dead)]
    for key in keys:
        services.blobs.put_bytes(key, b"lines")
    assert sweep_at(services, clock.now).orphan_files == 0  # written "now": kept
    assert isinstance(services.blobs, LocalBlobStore)
    written = (clock.now - 121_000) / 1000  # older than the lease
    for key in keys:
        os.utime(services.blobs.path(key), (written, written))
    assert sweep_at(services, clock.now).orphan_files == 1
    assert [b.key for b in services.blobs.list("_work/")] == keys[:1]  # its job may run yet


def _old_hex(ai: str, revision: int) -> str:
    """The 4 hex digits rawexport gave a v2 page revision of T0 before they were made
    unique per hour: a hash of the revision itself."""
    return hashlib.sha256(f"{ai}|v2|page|{T0}|{revision}".encode()).hexdigest()[:4]


def test_revisions_that_drew_one_hex_keep_their_own_manifests(
    env: tuple[Services, TestClient, Clock, str, str],
) -> None:
    """Two revisions of an hour whose 4-hex prefixes were the same shared one
    `_manifest.json`: the rerun overwrote the old one, the sweep of the old revision then
    deleted the current one (FINISHED, a 404 manifest link, `pull` exiting 6)."""
    services, client, clock, ai, token = env
    project = services.catalog.project(ai)
    assert project is not None
    finished = services.catalog.jobs(project.id, "finished")
    [old] = [j for j in finished if j.version == "v2" and j.hour_ms == T0]
    assert old.revision == 1
    # the revision whose hex was revision 1's: number the finished job so that the rerun
    # gets it (revisions are the slot's highest + 1)
    clash = next(r for r in range(2, 1_000_000) if _old_hex(ai, r) == _old_hex(ai, 1))
    with services.catalog.tx() as c:
        c.execute(update(export_jobs).where(export_jobs.c.id == old.id).values(revision=clash - 1))
    reexport(services.exporter, project, [T0], "page", clock.now)
    new = max(
        (j for j in services.catalog.jobs(project.id, "finished") if j.version == "v2"),
        key=lambda j: j.revision,
    )
    assert (new.hour_ms, new.revision) == (T0, clash)
    assert new.prefix != old.prefix and new.manifest_key != old.manifest_key
    clock.now += 11 * 60_000
    sweep_at(services, clock.now)  # the old revision goes
    body = client.get(
        f"/v2/insights/hour/page/{ai}/{beijing_hour_label(T0)}.json?manifest=true",
        headers={"Authorization": token},
    ).json()
    assert body["status"] == "FINISHED"
    [manifest_link] = body["manifest"]
    u = urllib.parse.urlsplit(manifest_link)
    r = client.get(f"{u.path}?{u.query}")
    assert r.status_code == 200, r.text
    manifest = json.loads(r.content)
    assert manifest["parts"] and [p["key"].rsplit("/", 1)[1] for p in manifest["parts"]] == [
        urllib.parse.urlsplit(link).path.rsplit("/", 1)[1] for link in body["downloadLinks"]
    ]
    assert all(fetch(client, link) == 200 for link in body["downloadLinks"])
