"""Compaction of the event store on S3 (moto's server) crashed at each of its steps.

The twin of the local store's crash points (test_compaction.py): every row is read exactly
once right after the crash, after each crash of the compactions that recover from it, and
once a later compaction has finished, which leaves one merged object and nothing else.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rawexport.blobs.s3 import S3BlobStore
from rawexport.store import S3EventStore
from tests.store.test_stores import AI, H0, compact, ids, tags

INPUTS = 3
# What a clean compaction of INPUTS objects changes in the bucket: the journal and the merged
# object are stored, the inputs and then the journal deleted. A crash comes before any one.
STEPS = 2 + INPUTS + 1


class Crash(Exception):
    """The compacting process dies here."""


class Crashing:
    """The store's blobs, raising Crash before their `crash_at`-th change since `arm`
    (put, put_bytes, delete; counted from 0) and recording the changes made."""

    def __init__(self, blobs: S3BlobStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.crash_at: int | None = None
        self.done: list[str] = []
        for name in ("put", "put_bytes", "delete"):
            monkeypatch.setattr(blobs, name, self._change(name, getattr(blobs, name)))

    def _change(self, name: str, real: Callable[..., None]) -> Callable[..., None]:
        def change(key: str, *args: object) -> None:
            if self.crash_at is not None and len(self.done) == self.crash_at:
                raise Crash(f"before {name} {key}")
            real(key, *args)
            self.done.append(f"{name} {key.rsplit('/', 1)[-1]}")

        return change

    def arm(self, crash_at: int | None) -> None:
        self.crash_at, self.done = crash_at, []


@pytest.fixture
def store(moto_s3: tuple[str, str], tmp_path: Path) -> Iterator[S3EventStore]:
    endpoint, bucket = moto_s3
    blobs = S3BlobStore(bucket, f"events-{uuid.uuid4().hex}", endpoint_url=endpoint)
    yield S3EventStore(blobs, tmp_path / "tmp")


def fill(store: S3EventStore) -> list[str]:
    for i in range(INPUTS):
        store.append(AI, "action_tag", tags([H0 + i, H0 + 10 + i], f"c{i}-"))
    want = ids(store, H0)
    assert len(want) == 2 * INPUTS == len(set(want))
    return want


def names(store: S3EventStore) -> list[str]:
    return sorted(b.key.rsplit("/", 1)[-1] for b in store.blobs.list(""))


def test_a_clean_compaction_makes_the_steps_the_crashes_cover(
    store: S3EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    want = fill(store)
    crashing = Crashing(store.blobs, monkeypatch)  # type: ignore[arg-type]
    crashing.arm(None)
    assert compact(store, H0) == INPUTS
    assert len(crashing.done) == STEPS, crashing.done
    assert ids(store, H0) == want
    [merged] = names(store)
    assert merged.startswith("compact-")


@pytest.mark.parametrize("crash_at", range(STEPS))
def test_a_crash_at_any_step_reads_every_row_once(
    store: S3EventStore, monkeypatch: pytest.MonkeyPatch, crash_at: int
) -> None:
    want = fill(store)
    crashing = Crashing(store.blobs, monkeypatch)  # type: ignore[arg-type]
    crashing.arm(crash_at)
    with pytest.raises(Crash) as crash:
        compact(store, H0)
    done = crashing.done
    crashing.arm(None)
    assert ids(store, H0) == want, f"after {done}, crashed {crash.value}"
    # Later compactions, each crashing one step further on than the last, until one ends.
    for n in range(4 * STEPS):
        crashing.arm(n)
        try:
            compact(store, H0)
        except Crash as again:
            done = crashing.done
            crashing.arm(None)
            assert ids(store, H0) == want, f"a later compaction, after {done}, crashed {again}"
            continue
        break
    else:
        raise AssertionError("no compaction finished")
    crashing.arm(None)
    assert ids(store, H0) == want
    [merged] = names(store)  # no input, journal or second merged object is left
    assert merged.startswith("compact-")
    assert compact(store, H0) == 0
    assert ids(store, H0) == want
