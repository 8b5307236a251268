"""Group commit durability, and re-export of late rows into exported hours."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rawexport.catalog import Catalog
from rawexport.export.actions import export_now
from rawexport.ingest import validate as ingest
from rawexport.ingest.group_commit import Ingestor, commit, requeue_exported
from rawexport.node import Services, open_services
from rawexport.settings import Settings
from rawexport.store import LocalEventStore
from rawexport.timeutil import HOUR_MS, parse_export_date
from tests.conftest import BASE_URL, World
from tests.fsync_util import Recorder
from tests.store_util import local

T0 = 1_735_689_600_000  # 2025-01-01 00:00 UTC


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    svc = open_services(Settings(home=tmp_path, grace_seconds=0))
    yield svc
    svc.close()


def page_table(n: int, send: int, prefix: str = "v") -> pa.Table:
    return ingest.native(
        [{"type": "page", "visitUserId": f"{prefix}{i}"} for i in range(n)], send
    ).tables["page"]


def test_group_commit_acks_only_durable_rows(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each batch is acknowledged only after the file holding its rows was fsynced, renamed
    into place and its directory fsynced. The callbacks only record the ack; every check
    runs here, in the test's thread (an exception in a callback would be swallowed)."""
    p = services.catalog.create_project("a")
    ingestor = Ingestor(services.store, services.catalog, window_ms=200, max_rows=10_000)
    rec = Recorder(monkeypatch)
    futures = []
    for i in range(20):
        fut = ingestor.submit(p.id, p.ai, {"page": page_table(5, T0 + i, f"b{i}-")})
        fut.add_done_callback(lambda _f, i=i: rec.add("ack", str(i)))  # type: ignore[misc]
        futures.append(fut)
    for f in futures:
        f.result(10)
    ingestor.stop()
    files = local(services.store).hour_files(p.ai, "page", T0)
    assert 1 <= ingestor.commits == len(files) < 20  # grouped
    holder = {}
    for path in files:
        for vid in pq.read_table(path).column("visitUserId").to_pylist():
            holder[vid.split("-")[0]] = path
    assert sorted(holder) == sorted(f"b{i}" for i in range(20))
    for i in range(20):
        acked = rec.index("ack", str(i))
        renamed, dir_synced = rec.durable(holder[f"b{i}"])
        assert renamed < dir_synced < acked, i


def test_group_commit_splits_by_hour_and_project(services: Services) -> None:
    a = services.catalog.create_project("a")
    b = services.catalog.create_project("b")
    ingestor = Ingestor(services.store, services.catalog, window_ms=100)
    both = pa.concat_tables([page_table(3, T0), page_table(2, T0 + HOUR_MS)])
    futures = [
        ingestor.submit(a.id, a.ai, {"page": both}),
        ingestor.submit(b.id, b.ai, {"page": both}),
    ]
    for f in futures:
        f.result(10)
    ingestor.stop()
    for p in (a, b):
        assert services.store.hours(p.ai, "page") == [T0, T0 + HOUR_MS]
        assert len(local(services.store).hour_files(p.ai, "page", T0)) == 1


class FullDisk(LocalEventStore):
    def append(self, ai: str, data_type: str, table: pa.Table) -> dict[int, int]:
        raise OSError("No space left on device")


def test_a_failed_write_fails_every_waiter_and_stores_nothing(services: Services) -> None:
    p = services.catalog.create_project("a")
    store = FullDisk(local(services.store).root)
    ingestor = Ingestor(store, services.catalog, window_ms=50)
    futures = [ingestor.submit(p.id, p.ai, {"page": page_table(2, T0)}) for _ in range(3)]
    for f in futures:
        with pytest.raises(OSError, match="No space"):
            f.result(10)
    assert store.hours(p.ai, "page") == []
    ingestor.stop()


def test_stop_commits_what_is_queued(services: Services) -> None:
    p = services.catalog.create_project("a")
    ingestor = Ingestor(services.store, services.catalog, window_ms=1000)
    futures = [ingestor.submit(p.id, p.ai, {"page": page_table(1, T0)}) for _ in range(5)]
    threading.Thread(target=ingestor.stop).start()
    for f in futures:
        f.result(10)
    files = local(services.store).hour_files(p.ai, "page", T0)
    assert sum(pq.read_metadata(x).num_rows for x in files) == 5


def test_late_rows_reexport_an_exported_hour(services: Services) -> None:
    catalog: Catalog = services.catalog
    p = catalog.create_project("a", export_since_ms=T0)
    now = T0 + 3 * HOUR_MS
    commit(services.store, catalog, p.id, p.ai, {"custom_event": _custom(3, T0)}, now)
    export_now(services.exporter, p, [T0], "custom_event", now)
    first = {(j.version, j.data_type): j for j in catalog.jobs(p.id)}
    assert first[("v2", "custom_event")].rows == 3
    assert first[("v1", "custom_attr")].status == "finished"

    commit(services.store, catalog, p.id, p.ai, {"custom_event": _custom(2, T0 + 10)}, now)
    queued = [j for j in catalog.jobs(p.id) if j.status == "queued"]
    assert sorted((j.version, j.data_type, j.revision) for j in queued) == [
        ("v1", "custom_attr", 2),
        ("v2", "custom_event", 2),
    ]
    # More late rows while the new revision waits: it will read them, no third revision.
    commit(services.store, catalog, p.id, p.ai, {"custom_event": _custom(1, T0 + 20)}, now)
    assert len([j for j in catalog.jobs(p.id) if j.status == "queued"]) == 2
    services.exporter.drain("w")
    newest = max((j for j in catalog.jobs(p.id) if j.version == "v2"), key=lambda j: j.revision)
    assert (newest.revision, newest.status, newest.rows) == (2, "finished", 6)
    # An hour nobody exported yet is left to the planner.
    assert requeue_exported(catalog, p.id, "custom_event", [T0 + HOUR_MS], now) == 0


def test_a_running_export_gets_a_new_revision(services: Services) -> None:
    catalog = services.catalog
    p = catalog.create_project("a", export_since_ms=T0, v1_enabled=False)
    now = T0 + 2 * HOUR_MS
    catalog.plan(p.id, "v2", ["page"], [T0], now)
    job = catalog.claim("w", now, 60_000)
    assert job is not None and job.status == "running"
    # It may have listed the hour's files before the new ones: a new revision is queued.
    assert requeue_exported(catalog, p.id, "page", [T0], now) == 1
    assert requeue_exported(catalog, p.id, "page", [T0], now) == 0
    # The open hour is never re-exported: only its preview can exist.
    catalog.new_revision(p.id, "v2", "page", T0 + 2 * HOUR_MS, preview=True, now=now)
    assert requeue_exported(catalog, p.id, "page", [T0 + 2 * HOUR_MS], now) == 0


def _custom(n: int, send: int) -> pa.Table:
    events = [
        {"type": "custom_event", "visitUserId": f"v{i}", "eventName": "e", "sendTime": send + i}
        for i in range(n)
    ]
    return ingest.native(events, None).tables["custom_event"]


def test_the_api_links_the_new_revision_after_a_backfill(world: World) -> None:
    """Decision 3: an import into an exported hour exports it again, and links follow."""
    from rawexport.export.worker import Exporter

    store = LocalEventStore(world.settings.events_dir)
    exporter = Exporter(world.settings, world.catalog, store, world.blobs, clock=world.clock)
    p = world.project
    hour = parse_export_date("hour", "2025011009").start_ms
    url = f"/v2/insights/hour/custom_event/{p.ai}/2025011009.json"

    def links() -> list[str]:
        body = world.client.get(url, headers=world.token_headers()).json()
        assert body["status"] == "FINISHED", body
        return list(body["downloadLinks"])

    commit(store, world.catalog, p.id, p.ai, {"custom_event": _custom(3, hour)}, world.clock())
    world.catalog.plan(p.id, "v2", ["custom_event"], [hour], world.clock())
    exporter.drain("w")
    first = links()
    commit(store, world.catalog, p.id, p.ai, {"custom_event": _custom(2, hour + 5)}, world.clock())
    exporter.drain("w")
    second = links()
    assert second != first
    [url2] = second
    data = world.client.get(url2.removeprefix(BASE_URL)).content
    assert gzip.decompress(data).count(b"\n") == 1 + 5


class Crash(BaseException):
    pass


class DiesAfterAppend(LocalEventStore):
    def append(self, ai: str, data_type: str, table: pa.Table) -> dict[int, int]:
        super().append(ai, data_type, table)
        raise Crash  # the process dies right after the rows became durable


def test_a_crash_right_after_a_backfill_still_reexports(services: Services) -> None:
    catalog = services.catalog
    p = catalog.create_project("a", export_since_ms=T0, v1_enabled=False)
    now = T0 + 3 * HOUR_MS
    commit(services.store, catalog, p.id, p.ai, {"custom_event": _custom(3, T0)}, now)
    export_now(services.exporter, p, [T0], "custom_event", now)
    dying = DiesAfterAppend(local(services.store).root)
    with pytest.raises(Crash):
        commit(dying, catalog, p.id, p.ai, {"custom_event": _custom(2, T0 + 10)}, now)
    [queued] = [j for j in catalog.jobs(p.id) if j.status == "queued"]
    assert (queued.data_type, queued.hour_ms, queued.revision) == ("custom_event", T0, 2)
    services.exporter.drain("w")
    assert catalog.job(queued.id).rows == 5
