"""How an export job ends: the error tree decides retries, a failure that repeats ends the
job, and attempts that die unrecorded are bounded by max_attempts too."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from sqlalchemy.exc import OperationalError

from rawexport.blobs.s3 import BlobStoreError, BlobStoreUnavailable
from rawexport.catalog import CatalogBusy, Job, LeaseLost
from rawexport.demo.generate import generate
from rawexport.errors import PermanentError, TransientError
from rawexport.export import worker
from rawexport.export.parts import RowTooLarge
from rawexport.export.worker import (
    PERMANENT,
    TRANSIENT,
    UNKNOWN,
    PermanentExportError,
    failure_kind,
)
from rawexport.node import Services, open_services
from rawexport.settings import Settings
from rawexport.timeutil import HOUR_MS
from tests.conftest import Clock

T0 = 1_735_689_600_000  # 2025-01-01 00:00 UTC


@pytest.fixture
def make_services(tmp_path: Path) -> Iterator[Callable[..., Services]]:
    made: list[Services] = []

    def make(**settings: Any) -> Services:
        home = tmp_path / f"s{len(made)}"
        s = Settings(home=home, grace_seconds=0, retry_base_seconds=10, max_attempts=5, **settings)
        made.append(open_services(s))
        made[-1].exporter.clock = Clock(T0 + HOUR_MS)
        return made[-1]

    yield make
    for svc in made:
        svc.close()


@pytest.fixture
def services(make_services: Callable[..., Services]) -> Services:
    return make_services()


def run_until_done(services: Services, job_id: int, limit: int = 20) -> int:
    """Run the job's attempts as they come due (the clock jumps to each retry); how many
    ran before it ended."""
    clock = services.exporter.clock
    assert isinstance(clock, Clock)
    for ran in range(1, limit + 1):
        assert services.exporter.run_one("w")
        job = services.catalog.job(job_id)
        if job.status in ("finished", "error"):
            return ran
        assert job.status == "retrying"
        clock.now = job.next_attempt_ms
    raise AssertionError(f"job {job_id} still {job.status} after {limit} attempts")


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (PermanentExportError("event file x is not readable Parquet"), PERMANENT),
        (RowTooLarge("a row of 9 MB"), PERMANENT),
        (BlobStoreUnavailable("upload of x: cannot reach the S3 endpoint"), TRANSIENT),
        (CatalogBusy("could not allocate a revision number"), TRANSIENT),
        (OperationalError("SELECT 1", {}, Exception("connection refused")), TRANSIENT),
        (ConnectionResetError("reset by peer"), TRANSIENT),
        (BlobStoreError("access denied to s3://b/: check the credentials"), UNKNOWN),
        (duckdb.OutOfMemoryException("Out of Memory Error"), UNKNOWN),
        (OSError("disk on fire"), UNKNOWN),
        (KeyError("bug"), UNKNOWN),
    ],
)
def test_the_error_tree_decides_the_kind(error: Exception, kind: str) -> None:
    assert failure_kind(error) == kind
    assert isinstance(error, PermanentError) == (kind == PERMANENT)
    if isinstance(error, TransientError):
        assert kind == TRANSIENT
    assert not isinstance(LeaseLost("x"), TransientError | PermanentError)


def test_an_hour_too_big_for_the_memory_budget_ends_in_error(
    make_services: Callable[..., Services],
) -> None:
    """The measured case, made small: DuckDB runs out of its memory limit on every attempt
    (a v1 export, whose columns DuckDB computes). The second identical out-of-memory failure
    ends the job in ERROR with DuckDB's message, instead of retrying it max_attempts times
    (or forever)."""
    services = make_services(duckdb_memory_limit="2MB")
    p = services.catalog.create_project("a", export_since_ms=T0, v1_enabled=True)
    generate(services.store, p.ai, T0, 1, 20_000, data_types=["page"], seed=1)
    services.catalog.plan(p.id, "v1", ["page"], [T0], T0 + HOUR_MS)
    (job,) = services.catalog.jobs(p.id)
    started = time.monotonic()
    assert run_until_done(services, job.id) == 2
    assert time.monotonic() - started < 30
    job = services.catalog.job(job.id)
    assert job.status == "error" and job.attempts == 2
    assert job.error is not None
    assert job.error.startswith("OutOfMemoryException: Out of Memory Error: ")


def test_out_of_memory_in_other_words_is_the_same_failure(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs of one out-of-memory failure name different allocations: still a repeat."""
    said = iter(
        [
            "Out of Memory Error: could not allocate block of size 116.0 KiB (296.0 KiB used)",
            "Out of Memory Error: failed to allocate data of size 16.0 KiB (396.0 KiB used)",
        ]
    )

    def run_attempt(*args: Any) -> Any:
        raise duckdb.OutOfMemoryException(next(said))

    job = one_job(services, monkeypatch, run_attempt)
    assert run_until_done(services, job.id) == 2
    job = services.catalog.job(job.id)
    assert job.status == "error"
    assert job.error == "OutOfMemoryException: Out of Memory Error: failed to allocate data " + (
        "of size 16.0 KiB (396.0 KiB used)"
    )


def one_job(
    services: Services, monkeypatch: pytest.MonkeyPatch, run_attempt: Callable[..., Any]
) -> Job:
    """A page hour's v2 job, planned; its attempts run `run_attempt`."""
    monkeypatch.setattr(worker, "run_attempt", run_attempt)
    p = services.catalog.create_project("a", export_since_ms=T0, v1_enabled=False)
    generate(services.store, p.ai, T0, 1, 50, data_types=["page"], seed=1)
    services.catalog.plan(p.id, "v2", ["page"], [T0], T0 + HOUR_MS)
    (job,) = services.catalog.jobs(p.id)
    return job


def test_an_outage_that_repeats_is_retried_until_max_attempts(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    def run_attempt(*args: Any) -> Any:
        raise BlobStoreUnavailable("upload of x: cannot reach the S3 endpoint")

    job = one_job(services, monkeypatch, run_attempt)
    assert run_until_done(services, job.id) == 5
    assert services.catalog.job(job.id).status == "error"


def test_attempts_that_die_unrecorded_end_at_max_attempts(services: Services) -> None:
    """Each attempt's worker dies (killed out of memory, say) before it records anything:
    the job is taken again after each lease, but not past max_attempts; then it ends in
    ERROR, with the last failure an attempt recorded."""
    clock = services.exporter.clock
    assert isinstance(clock, Clock)
    catalog = services.catalog
    p = catalog.create_project("a", export_since_ms=T0, v1_enabled=False)
    catalog.plan(p.id, "v2", ["page"], [T0], clock.now)
    first = catalog.claim("w0", clock.now, 60_000, 5)
    assert first is not None
    catalog.fail(first, "w0", "OSError: disk on fire", retry_at=clock.now, now=clock.now)
    for attempt in range(2, 6):
        job = catalog.claim(f"w{attempt}", clock.now, 60_000, 5)
        assert job is not None and job.attempts == attempt  # then its worker dies
        clock.now += 61_000
    assert catalog.claim("w6", clock.now, 60_000, 5) is None
    job = catalog.job(first.id)
    assert job.status == "error" and job.attempts == 5 and job.finished_ms == clock.now
    assert job.error == (
        "stopped after 5 attempts, the last without a result (its worker was killed, for "
        "instance out of memory, or lost its lease); the last failure recorded: OSError: "
        "disk on fire"
    )
    assert job.lease_owner is None
    assert not services.exporter.run_one("w7")
