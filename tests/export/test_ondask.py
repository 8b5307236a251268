"""Export attempts on a Dask cluster give the bytes of one process's export."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from distributed import Client, LocalCluster

from rawexport.catalog import LeaseLost
from rawexport.export import ondask
from rawexport.export.ondask import DaskExecutor, Hour, plan_slices
from rawexport.settings import Settings
from rawexport.types import ExportResult
from tests.export.test_runner import AI, HOUR, group_firsts, page_rows, ranged_export
from tests.parquet_util import write_parquet


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """Two single-threaded workers in this process (the e2e cluster test runs processes)."""
    with LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=2,
        threads_per_worker=1,
        processes=False,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address=None,
    ) as c:
        yield str(c.scheduler_address)


def settings_for(root: Path, address: str) -> Settings:
    return Settings(
        home=root,
        dask_address=address,
        part_bytes=65536,
        duckdb_memory_limit="256MB",
        duckdb_threads=2,
    )


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
    monkeypatch.setattr(ondask, "SLICE_ROWS", 4_000)  # several split tasks per file
    here = ranged_export(tmp_path / "here", hour_files, "page", range_bytes)
    settings = settings_for(tmp_path / "dask", cluster)
    executor = DaskExecutor(settings)
    try:
        hour = Hour(AI, "v2", "page", HOUR, 1, 1)
        there = executor.run(
            files=hour_files, hour=hour, lost=threading.Event(), range_bytes=range_bytes
        )
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
    assert plan_slices("v1", hour_files, slice_rows=1) == [ondask.Slice(str(f)) for f in hour_files]


def test_lost_lease_stops_the_wait(tmp_path: Path, cluster: str, hour_files: list[Path]) -> None:
    lost = threading.Event()
    lost.set()
    executor = DaskExecutor(settings_for(tmp_path, cluster))
    try:
        with pytest.raises(LeaseLost):
            executor.run(files=hour_files, hour=Hour(AI, "v2", "page", HOUR, 1, 1), lost=lost)
    finally:
        executor.close()


def test_a_task_error_reaches_the_coordinator(tmp_path: Path, cluster: str) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not parquet")
    executor = DaskExecutor(settings_for(tmp_path, cluster))
    try:
        with pytest.raises(Exception, match="(?i)parquet|magic|size"):
            executor.run(
                files=[bad], hour=Hour(AI, "v2", "page", HOUR, 1, 1), lost=threading.Event()
            )
    finally:
        executor.close()
    with Client(cluster, set_as_default=False) as client:  # type: ignore[no-untyped-call]
        assert client.run_on_scheduler(lambda: True)  # the cluster is still up
