"""The export pipeline in this process: how an attempt is cut into tasks, and its fence."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from rawexport.blobs.local import LocalBlobStore
from rawexport.errors import LeaseLost
from rawexport.export import pipeline
from rawexport.export.pipeline import Attempt, run_attempt
from rawexport.export.runners import LocalRunner, LocalWorkspace
from rawexport.types import ExportResult
from tests.export.test_runner import AI, HOUR, group_firsts, page_rows, ranged_export
from tests.parquet_util import write_parquet


@pytest.fixture(scope="module")
def hour_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("events")
    rows = page_rows(24_000, seed=5)
    return [write_parquet(d / f"{i}.parquet", "page", rows[i::3]) for i in range(3)]


def page_attempt(range_bytes: int | None = 200_000) -> Attempt:
    return Attempt(
        AI,
        "v2",
        "page",
        HOUR,
        1,
        1,
        part_bytes=65536,
        compress_level=1,
        memory_limit="256MB",
        threads=2,
        range_bytes=range_bytes,
    )


def runner_in(root: Path, **cut: Any) -> LocalRunner:
    return LocalRunner(LocalWorkspace(LocalBlobStore(root / "blobs"), root / "tmp"), **cut)


def digest(res: ExportResult) -> list[tuple[int, str, int, str]]:
    return [(p.part, p.key, p.rows, p.sha256) for p in res.files]


def test_how_an_attempt_is_cut_into_tasks_does_not_change_a_byte(
    tmp_path: Path, hour_files: list[Path]
) -> None:
    """One slice and one group task (the local default), or a task per 2,000 rows and
    per group (as on Dask): the same parts, under the same keys."""
    at = page_attempt()
    default = run_attempt(at, hour_files, runner_in(tmp_path / "a"), threading.Event())
    cut = runner_in(tmp_path / "b", slice_size=2_000, group_size=1)
    fine = run_attempt(at, hour_files, cut, threading.Event())
    assert len(group_firsts(default)) > 2
    assert digest(fine) == digest(default)
    again = ranged_export(tmp_path / "c", hour_files, "page", 200_000)  # run_here
    assert digest(again) == digest(default)
    for root in ("a", "b"):  # no work files or scratch left
        assert list((tmp_path / root / "tmp").iterdir()) == []


def test_a_lost_lease_ends_the_attempt_and_cancels_the_tasks_not_started(
    tmp_path: Path, hour_files: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The coordinator watches the lease while tasks run: once it is lost, the attempt
    ends with LeaseLost and the tasks still queued never run (here: 3 slices, one task
    each; the lease is lost while the first runs)."""
    lost = threading.Event()
    ran: list[int] = []
    real_split = pipeline.split_task

    def split_task(*args: Any) -> Any:
        ran.append(args[2])
        if len(ran) == 1:
            threading.Timer(0.2, lost.set).start()
            assert lost.wait(10)
        return real_split(*args)

    monkeypatch.setattr(pipeline, "split_task", split_task)
    monkeypatch.setattr(pipeline, "POLL_SECONDS", 0.05)
    runner = runner_in(tmp_path, slice_size=8_000)
    started = time.monotonic()
    with pytest.raises(LeaseLost):
        run_attempt(page_attempt(), hour_files, runner, lost)
    assert time.monotonic() - started < 5
    assert ran == [0]
    assert not (tmp_path / "blobs").exists() or not any((tmp_path / "blobs").rglob("*.gz"))
    assert list((tmp_path / "tmp").iterdir()) == []  # the scratch of the attempt is gone


def test_a_failed_task_ends_the_attempt_with_its_error(
    tmp_path: Path, hour_files: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def group_task(*args: Any) -> Any:
        raise OSError("disk on fire")

    monkeypatch.setattr(pipeline, "group_task", group_task)
    with pytest.raises(OSError, match="disk on fire"):
        run_attempt(page_attempt(), hour_files, runner_in(tmp_path), threading.Event())
    assert list((tmp_path / "tmp").iterdir()) == []


def test_an_hour_without_files_has_no_parts(tmp_path: Path) -> None:
    res = run_attempt(page_attempt(), [], runner_in(tmp_path), threading.Event())
    assert (res.files, res.rows, res.bytes) == ([], 0, 0)
    assert res.manifest_key == f"{res.prefix}/_manifest.json"
