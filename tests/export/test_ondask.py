"""Export attempts on a Dask cluster give the bytes of one process's export."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from distributed import Client

from rawexport.catalog import LeaseLost
from rawexport.demo.generate import generate
from rawexport.export.ondask import DaskRunner
from rawexport.export.pipeline import Attempt, run_attempt
from rawexport.export.plan import Slice, plan_slices
from rawexport.export.worker import Exporter
from rawexport.node import open_services
from rawexport.settings import Settings
from rawexport.timeutil import HOUR_MS, hour_floor, now_ms
from rawexport.types import ExportResult
from tests.conftest import Clock, local_path
from tests.dask_util import threads_cluster
from tests.export.test_runner import AI, HOUR, group_firsts, page_rows, ranged_export
from tests.parquet_util import write_parquet

T = TypeVar("T")


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """Two single-threaded workers in this process (the e2e cluster test runs processes)."""
    with threads_cluster() as address:
        yield address


def settings_for(root: Path, address: str) -> Settings:
    return Settings(
        home=root,
        dask_address=address,
        part_bytes=65536,
        duckdb_memory_limit="256MB",
        duckdb_threads=2,
    )


def page_attempt(settings: Settings, range_bytes: int | None = None) -> Attempt:
    return replace(Attempt.of(settings, AI, "v2", "page", HOUR, 1, 1), range_bytes=range_bytes)


def digest(res: ExportResult) -> list[tuple[int, int, str]]:
    return [(p.part, p.rows, p.sha256) for p in res.files]


@pytest.fixture(scope="module")
def hour_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("events")
    rows = page_rows(30_000, seed=21)
    return [write_parquet(d / f"{i}.parquet", "page", rows[i::2]) for i in range(2)]


@pytest.mark.parametrize("range_bytes", [250_000, 1 << 40], ids=["ranged", "whole"])
def test_dask_export_is_byte_identical_to_one_process(
    tmp_path: Path, cluster: str, hour_files: list[Path], range_bytes: int, monkeypatch: Any
) -> None:
    here = ranged_export(tmp_path / "here", hour_files, "page", range_bytes)
    settings = settings_for(tmp_path / "dask", cluster)
    executor = DaskRunner(settings)
    executor.slice_size = 4_000  # several split tasks per file
    try:
        at = page_attempt(settings, range_bytes)
        there = run_attempt(at, hour_files, executor, threading.Event())
    finally:
        executor.close()
    assert digest(there) == digest(here)
    assert [p.key for p in there.files] == [p.key for p in here.files]  # same attempt, same keys
    assert there.rows == 30_000
    exports = tmp_path / "dask" / "exports"
    for p in there.files:
        assert (exports / p.key).stat().st_size == p.bytes
    assert not (exports / "_work").exists() or not any((exports / "_work").rglob("*.spill"))
    if range_bytes < 1 << 40:
        assert len(group_firsts(there)) > 2


def test_slices_cut_row_groups(hour_files: list[Path]) -> None:
    slices = plan_slices("v2", hour_files, slice_rows=1)
    assert all(s.row_groups is not None for s in slices)
    assert plan_slices("v1", hour_files, slice_rows=1) == [Slice((str(f),)) for f in hour_files]
    assert plan_slices("v2", hour_files, None) == [Slice(tuple(map(str, hour_files)))]
    both = [Slice(tuple(map(str, hour_files)))]  # small files are packed into one slice
    assert plan_slices("v2", hour_files, 30_000) == both == plan_slices("v1", hour_files, 30_000)
    assert plan_slices("v2", hour_files, 20_000) == [Slice((str(f),)) for f in hour_files]


def test_lost_lease_stops_the_wait(tmp_path: Path, cluster: str, hour_files: list[Path]) -> None:
    lost = threading.Event()
    lost.set()
    settings = settings_for(tmp_path, cluster)
    executor = DaskRunner(settings)
    try:
        with pytest.raises(LeaseLost):
            run_attempt(page_attempt(settings), hour_files, executor, lost)
    finally:
        executor.close()


def test_a_task_error_reaches_the_coordinator(tmp_path: Path, cluster: str) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not parquet")
    settings = settings_for(tmp_path, cluster)
    executor = DaskRunner(settings)
    try:
        with pytest.raises(Exception, match="(?i)parquet|magic|size"):
            run_attempt(page_attempt(settings), [bad], executor, threading.Event())
    finally:
        executor.close()
    with Client(cluster, set_as_default=False) as client:  # type: ignore[no-untyped-call]
        assert client.run_on_scheduler(lambda: True)  # the cluster is still up


class Recording(Executor):
    """An executor that notes the attempt number of each task it is given."""

    def __init__(self, pool: Executor, attempts: list[int]) -> None:
        self.pool, self.attempts = pool, attempts

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        self.attempts.append(args[1].attempt)  # fn(where, attempt, ...)
        return self.pool.submit(fn, *args, **kwargs)


class ClaimedAgainAfterTheTasks(DaskRunner):
    """The cluster runs an attempt's tasks; then, before its coordinator commits, once:
    `claim_again` (the attempt's lease ran out and the job was claimed again). Records the
    attempt number of each task."""

    def __init__(self, settings: Settings, claim_again: Callable[[], None]) -> None:
        super().__init__(settings)
        self.claim_again: Callable[[], None] | None = claim_again
        self.attempts: list[int] = []

    def executor(self) -> AbstractContextManager[Executor]:
        return self._then_claim_again()

    @contextmanager
    def _then_claim_again(self) -> Iterator[Executor]:
        with super().executor() as pool:
            yield Recording(pool, self.attempts)
        if self.claim_again is not None:
            claim_again, self.claim_again = self.claim_again, None
            claim_again()


def test_a_stale_attempt_reaching_commit_on_dask_is_refused(tmp_path: Path, cluster: str) -> None:
    """The same owner's older attempt reaches its commit after the job was claimed again:
    only the attempt count tells them apart (docs/design.md, decision 9). The stale commit is
    refused; the newer attempt's parts, under its own keys, are what the job commits."""
    settings = Settings(
        home=tmp_path,
        dask_address=cluster,
        part_bytes=65536,
        lease_seconds=60,  # no renewal tick during the test: the commit's fence decides
        grace_seconds=0,
        duckdb_memory_limit="256MB",
        duckdb_threads=2,
    )
    services = open_services(settings)
    clock = Clock(now_ms())
    newer = []

    def claim_again() -> None:
        clock.now += 61_000  # the stale attempt's lease has run out
        newer.append(services.catalog.claim("w", clock.now, 60_000))

    dask = ClaimedAgainAfterTheTasks(settings, claim_again)
    try:
        hour = hour_floor(clock.now) - 3 * HOUR_MS
        p = services.catalog.create_project("a", export_since_ms=hour, v1_enabled=False)
        generate(services.store, p.ai, hour, 1, 3000, data_types=["page"], seed=1)
        services.catalog.plan(p.id, "v2", ["page"], [hour], clock.now)
        exporter = Exporter(
            settings, services.catalog, services.store, services.blobs, clock=clock, dask=dask
        )
        stale = services.catalog.claim("w", clock.now, 60_000)
        assert stale is not None and stale.attempts == 1
        assert exporter.execute(stale, "w") == "lost"
        [current] = newer
        assert current is not None and (current.id, current.attempts) == (stale.id, 2)
        job = services.catalog.job(stale.id)
        assert job.status == "running" and services.catalog.files(job.id) == []
        assert exporter.execute(current, "w") == "finished"
        assert dask.attempts == [1, 2]  # one whole-hour task each

        job = services.catalog.job(stale.id)
        assert (job.status, job.attempts, job.rows) == ("finished", 2, 3000)
        committed = services.catalog.files(job.id)
        assert committed and job.manifest_key is not None
        by_attempt = {
            a: Attempt.of(settings, p.ai, "v2", "page", hour, job.revision, a).part_key
            for a in (1, 2)
        }
        assert [f.key for f in committed] == [by_attempt[2](f.part) for f in committed]
        for f in committed:  # the stale attempt's parts exist, under keys of their own
            assert services.blobs.stat(by_attempt[1](f.part)) is not None
            data = local_path(services.blobs, f.key).read_bytes()
            assert (len(data), hashlib.sha256(data).hexdigest()) == (f.bytes, f.sha256)
        manifest = json.loads(local_path(services.blobs, job.manifest_key).read_bytes())
        assert [e["key"] for e in manifest["parts"]] == [f.key for f in committed]
        assert manifest["createdMs"] == job.finished_ms
    finally:
        dask.close()
        services.close()


def test_a_delivery_runs_its_parts_on_dask(tmp_path: Path, cluster: str) -> None:
    """A delivery is a step of the same pipeline: with dask_address set its part tasks
    (here: Parquet conversions) run on the cluster's workers, and the hour arrives whole."""
    from distributed import Client, get_task_stream

    from rawexport.export.destinations import add_destination

    settings = Settings(
        home=tmp_path / "home",
        dask_address=cluster,
        part_bytes=65536,
        grace_seconds=0,
        duckdb_memory_limit="256MB",
    )
    services = open_services(settings)
    try:
        now = now_ms()
        hour = hour_floor(now) - 3 * HOUR_MS
        p = services.catalog.create_project("a", export_since_ms=hour, v1_enabled=False)
        generate(services.store, p.ai, hour, 1, 20_000, data_types=["page"], seed=4)
        services.catalog.plan(p.id, "v2", ["page"], [hour], now)
        assert services.exporter.drain("w") == 1
        add_destination(
            services.catalog,
            services.box,
            p.id,
            "lake",
            kind="dir",
            location=str(tmp_path / "lake"),
            format="parquet",
            template="{data_type}/{revision}/",
            start_hour_ms=hour,
            now=now,
        )
        with Client(cluster, set_as_default=False) as client:  # type: ignore[no-untyped-call]
            with get_task_stream(client=client) as stream:
                assert services.deliverer.drain("d") == 1
            ran = [str(t["key"]).split("-")[0] for t in stream.data]
        [job] = services.catalog.jobs(p.id)
        parts = services.catalog.files(job.id)
        assert ran.count("deliver_part_task") == len(parts) > 1
        manifest = json.loads((tmp_path / "lake" / "page" / "1" / "_manifest.json").read_text())
        assert manifest["rows"] == job.rows and len(manifest["files"]) == len(parts)
        assert (tmp_path / "lake" / "page" / "1" / "_SUCCESS").exists()
    finally:
        services.close()
