from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rawexport.schema import DATA_TYPES
from rawexport.store import LocalEventStore
from rawexport.store.events import arrow_schema, encode_map
from rawexport.timeutil import HOUR_MS

AI = "0123456789abcdef"
H0 = 1_700_002_800_000  # 2023-11-14 23:00 UTC
H1 = H0 + HOUR_MS


def _tag_rows(send_times: list[int | None]) -> pa.Table:
    return pa.table(
        {
            "sendTime": pa.array(send_times, pa.int64()),
            "actionRequestId": [f"wa:0:{i}:1356477892:0" for i in range(len(send_times))],
            "ruleId": ["99ae0dec"] * len(send_times),
        }
    )


def _all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_arrow_schema_follows_store_columns() -> None:
    for name, dt in DATA_TYPES.items():
        schema = arrow_schema(name)
        assert schema.names == [c.name for c in dt.store_columns]
        assert all(f.nullable for f in schema)
    visit = arrow_schema("visit")
    assert visit.field("time").type == pa.int64()
    assert visit.field("latitude").type == pa.float64()
    assert visit.field("domain").type == pa.string()
    assert arrow_schema("page").field("appVariable").type == pa.string()
    assert arrow_schema("ads_track_click").names[-1] == "sendTime"
    with pytest.raises(ValueError):
        arrow_schema("nope")


def test_encode_map_is_compact_json() -> None:
    assert encode_map({"城市": "北京", "q": 'a,"b"'}) == '{"城市":"北京","q":"a,\\"b\\""}'
    assert encode_map(None) is None


def test_append_partitions_by_utc_hour(tmp_path: Path) -> None:
    store = LocalEventStore(tmp_path)
    table = _tag_rows([H0, H1 + 5, H0 + HOUR_MS - 1, H1 + HOUR_MS - 1, H0 + 7])
    assert store.append(AI, "action_tag", table) == {H0: 3, H1: 2}

    assert store.hours(AI, "action_tag") == [H0, H1]
    assert store.hour_dir(AI, "action_tag", H0) == tmp_path / AI / "action_tag" / "2023111423"
    assert store.hour_dir(AI, "action_tag", H1).name == "2023111500"
    (f0,) = store.hour_files(AI, "action_tag", H0)
    assert f0.suffix == ".parquet" and len(f0.stem) == 32
    got = pq.read_table(f0)
    assert got.schema == arrow_schema("action_tag")
    assert got.column("sendTime").to_pylist() == [H0, H0 + HOUR_MS - 1, H0 + 7]
    # a small file: see SMALL_FILE_ROWS
    assert pq.ParquetFile(f0).metadata.row_group(0).column(0).compression == "SNAPPY"

    store.append(AI, "action_tag", _tag_rows([H0 + 1]))
    assert len(store.hour_files(AI, "action_tag", H0)) == 2
    assert store.hours(AI, "page") == []
    assert store.hour_files(AI, "page", H0) == []


def test_append_casts_and_fills_missing_columns(tmp_path: Path) -> None:
    store = LocalEventStore(tmp_path)
    table = pa.table(
        {
            "pageRequestId": ["p1", "p2"],
            "sendTime": pa.array([H0 + 1, H0 + 2], pa.uint64()),
            "domain": pa.array(["a.com", None], pa.large_string()),
            "appVariable": [encode_map({"k": "v"}), None],
        }
    )
    assert store.append(AI, "page", table) == {H0: 2}
    (f,) = store.hour_files(AI, "page", H0)
    got = pq.read_table(f)
    assert got.schema == arrow_schema("page")
    assert got.column("sendTime").to_pylist() == [H0 + 1, H0 + 2]
    assert got.column("domain").to_pylist() == ["a.com", None]
    assert got.column("appVariable").to_pylist() == ['{"k":"v"}', None]
    assert got.column("title").null_count == 2


@pytest.mark.parametrize(
    "table, message",
    [
        (pa.table({"sendTime": [H0], "bogus": ["x"]}), "unknown columns"),
        (pa.table({"sendTime": pa.array([H0, None], pa.int64())}), "no sendTime"),
        (pa.table({"sendTime": ["not a number"]}), "sendTime"),
        (pa.table({"sendTime": [H0 + 0.5]}), "sendTime"),
        (pa.table({"ruleId": ["r"]}), "no sendTime"),
    ],
)
def test_append_rejects_bad_tables_and_writes_nothing(
    tmp_path: Path, table: pa.Table, message: str
) -> None:
    store = LocalEventStore(tmp_path)
    with pytest.raises(ValueError, match=message):
        store.append(AI, "action_tag", table)
    assert _all_files(tmp_path) == []


def test_append_rejects_bad_names(tmp_path: Path) -> None:
    store = LocalEventStore(tmp_path)
    with pytest.raises(ValueError):
        store.append(AI, "nope", _tag_rows([H0]))
    for ai in ("", "..", "a/b", "../x"):
        with pytest.raises(ValueError):
            store.append(ai, "action_tag", _tag_rows([H0]))
    with pytest.raises(ValueError):
        store.hour_dir(AI, "page", H0 + 1)
    assert _all_files(tmp_path) == []


def test_empty_table_writes_nothing(tmp_path: Path) -> None:
    store = LocalEventStore(tmp_path)
    assert store.append(AI, "action_tag", _tag_rows([])) == {}
    assert _all_files(tmp_path) == []


def test_no_staging_files_left(tmp_path: Path) -> None:
    store = LocalEventStore(tmp_path)
    store.append(AI, "action_tag", _tag_rows([H0, H1]))
    names = [p.name for p in _all_files(tmp_path)]
    assert len(names) == 2
    assert not [n for n in names if n.startswith(".") or n.endswith(".tmp")]


def test_staging_files_are_ignored(tmp_path: Path) -> None:
    store = LocalEventStore(tmp_path)
    store.append(AI, "action_tag", _tag_rows([H0]))
    d0 = store.hour_dir(AI, "action_tag", H0)
    (d0 / ".abc.parquet.tmp").write_bytes(b"partial")
    (d0 / ".abc.parquet").write_bytes(b"hidden")
    d1 = store.hour_dir(AI, "action_tag", H1)
    d1.mkdir()
    (d1 / ".def.parquet.tmp").write_bytes(b"partial")
    for junk in ("2023999999", "notanhour", ".2023111501.x.deleting"):
        (d0.parent / junk).mkdir()
        (d0.parent / junk / "x.parquet").write_bytes(b"")
    assert len(store.hour_files(AI, "action_tag", H0)) == 1
    assert store.hour_files(AI, "action_tag", H1) == []
    assert store.hours(AI, "action_tag") == [H0]


def test_failed_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalEventStore(tmp_path)
    real_write = pq.write_table
    calls = []

    def write_then_fail(table: pa.Table, where: object, **kwargs: object) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        real_write(table, where, **kwargs)

    monkeypatch.setattr(pq, "write_table", write_then_fail)  # what the store calls
    with pytest.raises(OSError, match="disk full"):
        store.append(AI, "action_tag", _tag_rows([H0, H1]))
    assert _all_files(tmp_path) == []
    assert store.hours(AI, "action_tag") == []


def test_delete_hour(tmp_path: Path) -> None:
    store = LocalEventStore(tmp_path)
    store.append(AI, "action_tag", _tag_rows([H0, H1]))
    store.delete_hour(AI, "action_tag", H0)
    assert store.hours(AI, "action_tag") == [H1]
    assert store.hour_files(AI, "action_tag", H0) == []
    assert not store.hour_dir(AI, "action_tag", H0).exists()
    assert [p.name for p in (tmp_path / AI / "action_tag").iterdir()] == ["2023111500"]
    store.delete_hour(AI, "action_tag", H0)  # already gone: no error
    store.delete_hour(AI, "page", H0)


def test_small_files_are_written_cheaply_and_large_ones_small(tmp_path: Path) -> None:
    """An ingest file below SMALL_FILE_ROWS rows: snappy, no dictionaries (its cost is
    per column chunk); a larger one: zstd with dictionaries. Both read back as written."""
    from rawexport.store.events import SMALL_FILE_ROWS, write_event_file

    for rows, codec, dictionary in ((10, "SNAPPY", False), (SMALL_FILE_ROWS, "ZSTD", True)):
        table = _tag_rows([H0 + i for i in range(rows)])
        path = tmp_path / f"{rows}.parquet"
        write_event_file(table, path)
        column = pq.ParquetFile(path).metadata.row_group(0).column(2)  # ruleId: one value
        assert column.compression == codec
        assert ("RLE_DICTIONARY" in column.encodings) is dictionary
        assert pq.read_table(path).equals(table)
