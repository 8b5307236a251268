"""One suite for both event stores: the local directory and objects on S3 (moto's server)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rawexport.blobs.s3 import S3BlobStore
from rawexport.demo.generate import generate
from rawexport.export.actions import export_now
from rawexport.node import open_services
from rawexport.settings import Settings
from rawexport.store import EventStore, LocalEventStore, S3EventStore, open_event_store
from rawexport.store.compaction import compact_all, compact_hour
from rawexport.timeutil import HOUR_MS

AI = "0123456789abcdef"
H0 = 1_700_002_800_000  # 2023-11-14 23:00 UTC
H1 = H0 + HOUR_MS


def tags(send_times: list[int], tag: str = "r") -> pa.Table:
    return pa.table(
        {
            "sendTime": pa.array(send_times, pa.int64()),
            "actionRequestId": [f"{tag}{i}" for i in range(len(send_times))],
            "ruleId": [tag] * len(send_times),
        }
    )


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    if request.param == "local":
        yield LocalEventStore(tmp_path / "events")
        return
    endpoint, bucket = request.getfixturevalue("moto_s3")
    blobs = S3BlobStore(bucket, f"events-{uuid.uuid4().hex}", endpoint_url=endpoint)
    yield S3EventStore(blobs, tmp_path / "tmp")


def ids(store: EventStore, hour: int) -> list[str]:
    with store.open_hour(AI, "action_tag", hour) as files:
        return sorted(
            v for f in files for v in pq.read_table(f.path)["actionRequestId"].to_pylist()
        )


def compact(store: EventStore, hour: int, small: int = 1 << 30) -> int:
    return compact_hour(store, AI, "action_tag", hour, small_bytes=small)


def test_append_partitions_by_hour_and_reads_back(store: EventStore) -> None:
    assert store.append(AI, "action_tag", tags([H0 + 5, H1 + 1, H0 + 9])) == {H0: 2, H1: 1}
    store.append(AI, "action_tag", tags([H1 + 2], "s"))
    assert store.hours(AI, "action_tag") == [H0, H1]
    assert ids(store, H0) == ["r0", "r2"] and ids(store, H1) == ["r1", "s0"]
    assert ids(store, H0 + 2 * HOUR_MS) == [] and store.hours(AI, "page") == []


def test_a_failed_append_leaves_nothing(store: EventStore, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    if isinstance(store, LocalEventStore):
        import rawexport.store.local as module
        from rawexport.store.events import write_event_file

        real: Callable[..., None] = write_event_file
        target: object = module
        name = "write_event_file"
    else:
        assert isinstance(store, S3EventStore)
        real = store.blobs.put
        target, name = store.blobs, "put"

    def second_fails(*args: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        real(*args)

    monkeypatch.setattr(target, name, second_fails)
    with pytest.raises(OSError, match="disk full"):
        store.append(AI, "action_tag", tags([H0, H1]))
    monkeypatch.undo()
    assert calls["n"] == 2
    assert store.hours(AI, "action_tag") == [] and ids(store, H0) == []


def test_compaction_merges_and_reads_every_row_once(store: EventStore) -> None:
    for i in range(4):
        store.append(AI, "action_tag", tags([H0 + i], f"b{i}-"))
    with store.open_hour(AI, "action_tag", H0) as files:
        assert len(files) == 4
    assert compact(store, H0) == 4
    with store.open_hour(AI, "action_tag", H0) as files:
        assert len(files) == 1
    assert ids(store, H0) == ["b0-0", "b1-0", "b2-0", "b3-0"]
    assert compact(store, H0) == 0  # one file: nothing to do


def test_an_interrupted_object_compaction_is_read_once_and_finished(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not isinstance(store, S3EventStore):
        pytest.skip("the local store's crash points are in test_compaction.py")
    for i in range(3):
        store.append(AI, "action_tag", tags([H0 + i], f"c{i}-"))
    real_delete = store.blobs.delete

    def crash_on_input_delete(key: str) -> None:
        if key.endswith(".parquet"):
            raise KeyboardInterrupt  # the process dies after journal and merged object
        real_delete(key)

    monkeypatch.setattr(store.blobs, "delete", crash_on_input_delete)
    with pytest.raises(KeyboardInterrupt):
        compact(store, H0)
    monkeypatch.undo()
    assert ids(store, H0) == ["c0-0", "c1-0", "c2-0"]  # inputs left out: merged has them
    assert compact(store, H0) == 0  # finishes: inputs and journal deleted
    names = [b.key.rsplit("/", 1)[-1] for b in store.blobs.list("")]
    assert len(names) == 1 and names[0].startswith("compact-")
    assert ids(store, H0) == ["c0-0", "c1-0", "c2-0"]


def test_compact_all_and_delete_hour(store: EventStore) -> None:
    settings = Settings(compact_min_files=3, compact_small_bytes=1 << 30)
    for i in range(3):
        store.append(AI, "action_tag", tags([H0 + i, H1 + i], f"d{i}-"))
    assert compact_all(store, settings) == 6
    store.delete_hour(AI, "action_tag", H0)
    assert store.hours(AI, "action_tag") == [H1] and ids(store, H0) == []
    assert len(ids(store, H1)) == 3


def test_bad_names_are_refused(store: EventStore) -> None:
    with pytest.raises(ValueError):
        store.append("../x", "action_tag", tags([H0]))
    with pytest.raises(ValueError):
        store.append(AI, "nope", tags([H0]))


def test_events_url_picks_the_store(tmp_path: Path, moto_s3: tuple[str, str]) -> None:
    endpoint, bucket = moto_s3
    assert isinstance(open_event_store(Settings(home=tmp_path)), LocalEventStore)
    local = open_event_store(Settings(home=tmp_path, events_url=f"file://{tmp_path}/ev"))
    assert isinstance(local, LocalEventStore) and local.root == tmp_path / "ev"
    s3 = open_event_store(
        Settings(home=tmp_path, events_url=f"s3://{bucket}/ev", s3_endpoint_url=endpoint)
    )
    assert isinstance(s3, S3EventStore)


def test_an_hour_on_s3_is_exported_from_its_objects(
    tmp_path: Path, moto_s3: tuple[str, str]
) -> None:
    endpoint, bucket = moto_s3
    settings = Settings(
        home=tmp_path,
        events_url=f"s3://{bucket}/events-{uuid.uuid4().hex}",
        s3_endpoint_url=endpoint,
    )
    services = open_services(settings)
    try:
        assert isinstance(services.store, S3EventStore)
        p = services.catalog.create_project("s3", export_since_ms=H0)
        generate(services.store, p.ai, H0, 1, 400, data_types=["page"], seed=3)
        (row,) = [r for r in export_now(services.exporter, p, [H0], "page", H0 + 2 * HOUR_MS)
                  if r["version"] == "v2"]  # fmt: skip
        assert row["status"] == "finished" and row["rows"] == 400
        assert list((tmp_path / "tmp").glob("events-*")) == []  # local copies removed
    finally:
        services.close()
