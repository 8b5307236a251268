"""Export jobs end to end in-process: store -> runner -> catalog, retries, leases."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rawexport.catalog import Job
from rawexport.cli.services import Services, open_services
from rawexport.export.actions import export_now
from rawexport.export.scheduler import plan_due
from rawexport.export.worker import PermanentExportError, backoff_ms
from rawexport.ingest.generate import generate
from rawexport.settings import Settings
from rawexport.timeutil import HOUR_MS

T0 = 1_735_689_600_000  # 2025-01-01 00:00 UTC = 08:00 Beijing


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def services(tmp_path: Path) -> Services:
    s = Settings(home=tmp_path, grace_seconds=0, retry_base_seconds=10, max_attempts=3)
    svc = open_services(s)
    yield svc
    svc.close()


def test_backoff_is_capped_exponential() -> None:
    assert [backoff_ms(a, 5, 30) for a in (1, 2, 3, 4, 5)] == [5000, 10000, 20000, 30000, 30000]


def test_planned_hours_export_and_commit(services: Services) -> None:
    p = services.catalog.create_project("a", export_since_ms=T0)
    generate(services.store, p.ai, T0, 2, 300, seed=3)
    assert plan_due(services.catalog, services.settings, T0 + 2 * HOUR_MS) == 2 * 17
    ran = services.exporter.drain("w")
    assert ran == 34
    jobs = services.catalog.jobs(p.id)
    assert {j.status for j in jobs} == {"finished"}
    page = next(j for j in jobs if j.version == "v2" and j.data_type == "page")
    files = services.catalog.files(page.id)
    assert sum(f.rows for f in files) == page.rows
    store_rows = sum(
        pq.read_metadata(f).num_rows for f in services.store.hour_files(p.ai, "page", page.hour_ms)
    )
    assert page.rows == store_rows
    data = services.blobs.path(files[0].key).read_bytes()
    assert gzip.decompress(data).startswith(b"visitUserId,sessionId,platform,")


def test_transient_failure_retries_then_errors(services: Services) -> None:
    clock = Clock(T0 + HOUR_MS)
    services.exporter.clock = clock
    p = services.catalog.create_project("a", export_since_ms=T0, v1_enabled=False)
    calls: list[int] = []

    def flaky(job: Job) -> None:
        calls.append(job.attempts)
        raise OSError("disk on fire")

    services.exporter.fail_hook = flaky
    services.catalog.plan(p.id, "v2", ["page"], [T0], clock.now)
    assert services.exporter.run_one("w")
    job = services.catalog.jobs(p.id)[0]
    assert job.status == "retrying" and job.next_attempt_ms == clock.now + 10_000
    assert not services.exporter.run_one("w")  # not due yet
    clock.now += 10_000
    assert services.exporter.run_one("w")
    clock.now += 20_000
    assert services.exporter.run_one("w")
    job = services.catalog.job(job.id)
    assert calls == [1, 2, 3]
    assert job.status == "error" and job.error == "OSError: disk on fire"


def test_permanent_failure_errors_at_once(services: Services) -> None:
    p = services.catalog.create_project("a", export_since_ms=T0, v1_enabled=False)

    def broken(job: Job) -> None:
        raise PermanentExportError("column sendTime missing in store file")

    services.exporter.fail_hook = broken
    services.catalog.plan(p.id, "v2", ["visit"], [T0], T0 + HOUR_MS)
    services.exporter.drain("w")
    job = services.catalog.jobs(p.id)[0]
    assert job.status == "error" and job.attempts == 1
    assert "column sendTime missing" in (job.error or "")


def test_lost_worker_job_is_picked_up_after_lease(services: Services) -> None:
    clock = Clock(T0 + HOUR_MS)
    services.exporter.clock = clock
    p = services.catalog.create_project("a", export_since_ms=T0, v1_enabled=False)
    generate(services.store, p.ai, T0, 1, 100, data_types=["page"], seed=1)
    services.catalog.plan(p.id, "v2", ["page"], [T0], clock.now)
    dead = services.catalog.claim("dead-worker", clock.now, 60_000)
    assert dead is not None
    assert not services.exporter.run_one("w2")
    clock.now += 61_000
    assert services.exporter.run_one("w2")
    job = services.catalog.job(dead.id)
    assert job.status == "finished" and job.attempts == 2 and job.rows == 100


def test_export_now_preview_and_idempotence(services: Services) -> None:
    p = services.catalog.create_project("a", export_since_ms=T0)
    generate(services.store, p.ai, T0, 2, 200, data_types=["page"], seed=2)
    now = T0 + HOUR_MS + 60_000  # hour T0 closed, hour T0+1h open
    first = export_now(services.exporter, p, [T0], "page", now)
    assert [(r["version"], r["data_type"], r["status"]) for r in first] == [
        ("v2", "page", "finished"),
        ("v1", "page", "finished"),
    ]
    again = export_now(services.exporter, p, [T0], "page", now)
    assert [r["revision"] for r in again] == [1, 1]
    preview = export_now(services.exporter, p, [T0 + HOUR_MS], "page", now)
    assert all(r["preview"] and r["status"] == "finished" for r in preview)
    assert services.catalog.hour_jobs(p.id, "v2", T0 + HOUR_MS, T0 + 2 * HOUR_MS) == {}
