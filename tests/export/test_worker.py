"""Export jobs end to end in-process: store -> pipeline -> catalog, retries, leases."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from sqlalchemy import event

from rawexport.blobs.local import LocalBlobStore
from rawexport.blobs.s3 import BlobStoreUnavailable
from rawexport.demo.generate import generate
from rawexport.export.actions import export_now
from rawexport.export.retention import sweep
from rawexport.export.scheduler import plan_due
from rawexport.export.worker import Exporter, backoff_ms
from rawexport.node import Services, open_services
from rawexport.settings import Settings
from rawexport.store import LocalEventStore
from rawexport.timeutil import HOUR_MS, hour_floor, now_ms
from tests.conftest import Clock, local_path
from tests.fsync_util import Recorder
from tests.store_util import local

T0 = 1_735_689_600_000  # 2025-01-01 00:00 UTC = 08:00 Beijing


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
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
        pq.read_metadata(f).num_rows
        for f in local(services.store).hour_files(p.ai, "page", page.hour_ms)
    )
    assert page.rows == store_rows
    data = local_path(services.blobs, files[0].key).read_bytes()
    assert gzip.decompress(data).startswith(b"visitUserId,sessionId,platform,")


class FlakyStore(LocalEventStore):
    """The event store failing at its boundary: listing an hour raises the next error."""

    def __init__(self, root: Path, errors: list[Exception]) -> None:
        super().__init__(root)
        self.errors = errors
        self.calls = 0

    def hour_files(self, ai: str, data_type: str, hour_ms: int) -> list[Path]:
        self.calls += 1
        raise self.errors[(self.calls - 1) % len(self.errors)]


@pytest.mark.parametrize(
    "errors",
    [
        [BlobStoreUnavailable("read of x: cannot reach the S3 endpoint")] * 3,  # transient
        [OSError("disk on fire"), OSError("disk full"), OSError("disk on fire")],  # unknown
    ],
)
def test_failures_retry_until_max_attempts(services: Services, errors: list[Exception]) -> None:
    """An outage is retried until max_attempts even while it says the same; an unknown
    failure too while it changes; then the job ends in ERROR with the last one."""
    clock = Clock(T0 + HOUR_MS)
    services.exporter.clock = clock
    store = FlakyStore(local(services.store).root, errors)
    services.exporter.store = store
    p = services.catalog.create_project("a", export_since_ms=T0, v1_enabled=False)
    services.catalog.plan(p.id, "v2", ["page"], [T0], clock.now)
    assert services.exporter.run_one("w")
    job = services.catalog.jobs(p.id)[0]
    assert job.status == "retrying" and job.next_attempt_ms == clock.now + 10_000
    assert not services.exporter.run_one("w")  # not due yet
    clock.now += 10_000
    assert services.exporter.run_one("w")
    assert services.catalog.job(job.id).status == "retrying"
    clock.now += 20_000
    assert services.exporter.run_one("w")
    job = services.catalog.job(job.id)
    assert store.calls == 3 and job.attempts == 3
    assert job.status == "error" and job.error == f"{type(errors[2]).__name__}: {errors[2]}"


def test_an_unreadable_parquet_file_fails_at_once_and_says_which(services: Services) -> None:
    """A stored file that is not Parquet: ERROR after one attempt, the file named."""
    p = services.catalog.create_project("a", export_since_ms=T0, v1_enabled=False)
    generate(services.store, p.ai, T0, 1, 50, data_types=["visit"], seed=4)
    bad = local(services.store).hour_dir(p.ai, "visit", T0) / f"{'0' * 32}.parquet"
    bad.write_bytes(b"PAR1 this is not a parquet file")
    assert bad in local(services.store).hour_files(p.ai, "visit", T0)
    services.catalog.plan(p.id, "v2", ["visit"], [T0], T0 + HOUR_MS)
    assert services.exporter.drain("w") == 1
    job = services.catalog.jobs(p.id)[0]
    assert job.status == "error" and job.attempts == 1
    assert job.error is not None and job.error.startswith("PermanentExportError: event file ")
    assert bad.name in job.error and "not readable Parquet" in job.error
    assert services.blobs.list("") == []  # nothing was written


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


class OtherHost(LocalEventStore):
    """The event store as a worker on another host sees it: this host's hour locks (flock)
    do not reach it."""

    @contextmanager
    def hour_lock(
        self, ai: str, data_type: str, hour_ms: int, *, exclusive: bool
    ) -> Iterator[None]:
        yield


class StolenMidWrite(LocalBlobStore):
    """Blobs of worker A: at A's first part, steal() runs (B takes the job over and commits),
    then A's write goes on. Records every key A writes."""

    def __init__(self, root: Path, steal: Callable[[], None]) -> None:
        super().__init__(root)
        self.steal: Callable[[], None] | None = steal
        self.written: list[str] = []

    def put(self, key: str, src: Path) -> None:
        if self.steal is not None:
            steal, self.steal = self.steal, None
            steal()
        super().put(key, src)
        self.written.append(key)

    def put_bytes(self, key: str, data: bytes) -> None:
        super().put_bytes(key, data)
        self.written.append(key)


def _digests(data: bytes) -> tuple[str, str]:
    return hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()


def test_a_worker_that_lost_its_lease_changes_nothing_committed(tmp_path: Path) -> None:
    """Two workers on one job; A's lease is taken by B while A writes its first part, and
    rows arrive in between, so B's parts differ from A's. B commits; A's late writes go to
    keys of its own attempt, its commit is refused, and what B committed stays byte for
    byte what the catalog and the manifest say. The sweeper later drops A's orphans."""
    s = Settings(home=tmp_path, part_bytes=65536, lease_seconds=60, grace_seconds=0)
    services = open_services(s)
    try:
        clock = Clock(now_ms())
        hour = hour_floor(clock.now) - 3 * HOUR_MS
        p = services.catalog.create_project("a", export_since_ms=hour, v1_enabled=False)
        generate(services.store, p.ai, hour, 1, 4000, data_types=["page"], seed=1)
        services.catalog.plan(p.id, "v2", ["page"], [hour], clock.now)
        other = OtherHost(local(services.store).root)
        b = Exporter(s, services.catalog, other, LocalBlobStore(s.exports_dir), clock=clock)
        b_status: list[str] = []

        def steal() -> None:
            clock.now += 61_000  # A's lease has run out
            generate(other, p.ai, hour, 1, 500, data_types=["page"], seed=2)  # late rows
            b_job = services.catalog.claim("B", clock.now, 60_000)
            assert b_job is not None and b_job.attempts == 2
            b_status.append(b.execute(b_job, "B"))

        blobs = StolenMidWrite(s.exports_dir, steal)
        a = Exporter(s, services.catalog, services.store, blobs, clock=clock)
        assert a.run_one("A")  # A's execute returns once its commit was refused
        assert b_status == ["finished"]
        job = services.catalog.jobs(p.id)[0]
        assert (job.status, job.attempts, job.rows) == ("finished", 2, 4500)
        assert job.lease_owner is None and job.manifest_key is not None

        committed = services.catalog.files(job.id)
        manifest = json.loads(blobs.path(job.manifest_key).read_bytes())
        assert manifest["rows"] == 4500 and manifest["createdMs"] == job.finished_ms
        assert [
            (f["key"], f["rows"], f["bytes"], f["md5"], f["sha256"]) for f in manifest["parts"]
        ] == [(f.key, f.rows, f.bytes, f.md5, f.sha256) for f in committed]
        for f in committed:
            data = blobs.path(f.key).read_bytes()
            assert (len(data), *_digests(data)) == (f.bytes, f.md5, f.sha256)
        # A did write after B's commit (all its parts), but only under its own keys.
        assert len(blobs.written) > 1
        assert not set(blobs.written) & {f.key for f in committed}
        assert job.manifest_key not in blobs.written
        a_parts = [services.blobs.stat(k) for k in blobs.written]
        assert all(info is not None for info in a_parts)

        # The sweeper drops A's orphans once older than the lease, and nothing else.
        lease_ms = int(s.lease_seconds * 1000)
        young = sweep(
            services.catalog, services.store, services.blobs, clock.now, orphan_age_ms=3_600_000
        )
        assert young.orphan_files == 0
        later = clock.now + 3_600_000 + lease_ms
        report = sweep(
            services.catalog, services.store, services.blobs, later, orphan_age_ms=lease_ms
        )
        assert report.orphan_files == len(blobs.written)
        assert all(services.blobs.stat(k) is None for k in blobs.written)
        left = {i.key for i in services.blobs.list(f"{job.prefix}/")}
        assert left == {f.key for f in committed} | {job.manifest_key}
    finally:
        services.close()


def test_parts_are_durable_before_the_commit_and_the_manifest_last(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An export is acknowledged by its catalog commit: every part is fsynced, renamed into
    place and its directory fsynced before it; the manifest after the parts, before it."""
    p = services.catalog.create_project("a", export_since_ms=T0, v1_enabled=False)
    generate(services.store, p.ai, T0, 1, 4000, data_types=["page"], seed=1)
    services.exporter.settings = dataclasses.replace(services.settings, part_bytes=65536)
    services.catalog.plan(p.id, "v2", ["page"], [T0], T0 + HOUR_MS)
    rec = Recorder(monkeypatch)
    catalog = services.catalog
    real_complete = catalog.complete

    def complete(*args: Any, **kw: Any) -> None:
        rec.add("complete")
        real_complete(*args, **kw)

    monkeypatch.setattr(catalog, "complete", complete)
    event.listen(catalog.engine, "commit", lambda _conn: rec.add("commit"))
    assert services.exporter.drain("w") == 1

    job = catalog.jobs(p.id)[0]
    assert job.status == "finished" and job.manifest_key is not None
    files = catalog.files(job.id)
    assert len(files) > 1
    start = rec.index("complete")
    committed = rec.index("commit", after=start)
    parts = [rec.durable(local_path(services.blobs, f.key)) for f in files]
    assert all(dir_synced < start for _, dir_synced in parts)
    renamed, dir_synced = rec.durable(local_path(services.blobs, job.manifest_key))
    assert max(d for _, d in parts) < renamed and dir_synced < committed
