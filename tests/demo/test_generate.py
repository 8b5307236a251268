from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from rawexport.demo import generate as gen
from rawexport.demo.generate import generate, rows, split_counts
from rawexport.schema import DATA_TYPE_NAMES, DATA_TYPES
from rawexport.store import LocalEventStore
from rawexport.timeutil import HOUR_MS

AI = "0123456789abcdef"
H0 = 1_700_002_800_000
PER_HOUR = 3000
HOURS = 2
MAPS = {c.name for t in DATA_TYPES.values() for c in t.columns if c.type == "map"}


def _read(store: LocalEventStore, data_type: str, hour_ms: int) -> pa.Table:
    files = store.hour_files(AI, data_type, hour_ms)
    return pa.concat_tables([pq.read_table(f) for f in files])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalEventStore:
    s = LocalEventStore(tmp_path_factory.mktemp("events"))
    generate(s, AI, H0, HOURS, PER_HOUR, seed=7)
    return s


@pytest.fixture(scope="module")
def hour0(store: LocalEventStore) -> dict[str, pa.Table]:
    return {t: _read(store, t, H0) for t in DATA_TYPE_NAMES}


@pytest.fixture(scope="module")
def many() -> dict[str, pa.Table]:
    """20,000 rows of each type: enough to draw every pooled value many times."""
    refs = split_counts(200_000, DATA_TYPE_NAMES)
    return {t: rows(t, 0, AI, H0, refs, 0, 20_000) for t in DATA_TYPE_NAMES}


def _values(table: pa.Table, column: str) -> set[object]:
    return set(table.column(column).drop_null().to_pylist())


def _pairs(table: pa.Table) -> set[tuple[str, str]]:
    return set(zip(table["visitUserId"].to_pylist(), table["sessionId"].to_pylist(), strict=True))


def _strings(tables: dict[str, pa.Table]) -> Iterator[tuple[str, str, pa.ChunkedArray]]:
    for t, table in tables.items():
        for field in table.schema:
            if field.type == pa.string():
                yield t, field.name, table.column(field.name)


def test_split_counts() -> None:
    counts = split_counts(1000, DATA_TYPE_NAMES)
    assert sum(counts.values()) == 1000
    assert counts["page"] == 300 and counts["action"] == 250 and counts["visit"] == 80
    assert split_counts(7, ["page"]) == {"page": 7}
    small = split_counts(10, DATA_TYPE_NAMES)
    assert sum(small.values()) == 10 and min(small.values()) == 1
    assert sum(split_counts(3, DATA_TYPE_NAMES).values()) == 3
    assert split_counts(0, ["page", "visit"]) == {"page": 0, "visit": 0}


def test_row_counts(store: LocalEventStore) -> None:
    for hour in (H0, H0 + HOUR_MS):
        assert sum(_read(store, t, hour).num_rows for t in DATA_TYPE_NAMES) == PER_HOUR
    assert all(store.hours(AI, t) == [H0, H0 + HOUR_MS] for t in DATA_TYPE_NAMES)


def test_page_only(tmp_path: Path) -> None:
    s = LocalEventStore(tmp_path)
    assert generate(s, AI, H0, 3, 500, ["page"]) == {"page": 1500}
    assert s.hours(AI, "page") == [H0 + k * HOUR_MS for k in range(3)]
    assert _read(s, "page", H0).num_rows == 500
    assert s.hours(AI, "visit") == []


def test_chunks_bound_appends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gen, "CHUNK_ROWS", 300)
    s = LocalEventStore(tmp_path)
    generate(s, AI, H0, 1, 1000, ["page"])
    files = s.hour_files(AI, "page", H0)
    assert sorted(pq.read_metadata(f).num_rows for f in files) == [100, 300, 300, 300]


def test_rows_do_not_depend_on_chunking() -> None:
    refs = split_counts(5000, DATA_TYPE_NAMES)
    for t in DATA_TYPE_NAMES:
        whole = rows(t, 1, AI, H0, refs, 0, 400)
        parts = pa.concat_tables(
            [rows(t, 1, AI, H0, refs, 0, 150), rows(t, 1, AI, H0, refs, 150, 400)]
        )
        assert whole.equals(parts), t


def test_deterministic(tmp_path: Path) -> None:
    tables = []
    for name in ("a", "b"):
        s = LocalEventStore(tmp_path / name)
        generate(s, AI, H0, 1, 500, seed=3)
        tables.append({t: _read(s, t, H0).sort_by("sendTime") for t in DATA_TYPE_NAMES})
    assert all(tables[0][t].equals(tables[1][t]) for t in DATA_TYPE_NAMES)


def test_seed_hour_and_project_change_ids() -> None:
    refs = split_counts(1000, DATA_TYPE_NAMES)

    def ids(seed: int, ai: str, hour: int) -> set[str]:
        return set(rows("page", seed, ai, hour, refs, 0, 300).column("pageRequestId").to_pylist())

    base = ids(0, AI, H0)
    assert len(base) == 300
    assert not base & ids(1, AI, H0)
    assert not base & ids(0, AI, H0 + HOUR_MS)
    assert not base & ids(0, "fedcba9876543210", H0)


def test_times_within_hour(store: LocalEventStore) -> None:
    for hour in (H0, H0 + HOUR_MS):
        for t in DATA_TYPE_NAMES:
            table = _read(store, t, hour)
            send = table.column("sendTime")
            assert send.null_count == 0
            assert pc.min(send).as_py() >= hour and pc.max(send).as_py() < hour + HOUR_MS
            client = "eventTime" if t == "ads_track_click" else "time"
            if client in table.column_names:
                lag = pc.subtract(send, table.column(client))
                assert pc.min(lag).as_py() > 0 and pc.max(lag).as_py() < 5_000, t


def test_ids_unique_and_shaped(hour0: dict[str, pa.Table]) -> None:
    for t, column, length in [
        ("visit", "vstRequestId", 16),
        ("page", "pageRequestId", 20),
        ("visit", "visitUserId", 36),
        ("visit", "sessionId", 36),
    ]:
        values = hour0[t].column(column)
        assert values.null_count == 0
        assert len(set(values.to_pylist())) == len(values), column
        assert set(pc.utf8_length(values).to_pylist()) == {length}
    actions = hour0["action"].column("actionRequestId").to_pylist()
    assert len(set(actions)) == len(actions)
    for a in actions:
        kind, *numbers = a.split(":")
        assert kind in ("wa", "ma") and len(numbers) == 4 and all(n.isdigit() for n in numbers)


def test_joins_hold(hour0: dict[str, pa.Table]) -> None:
    visit, page, action = hour0["visit"], hour0["page"], hour0["action"]
    assert _values(page, "vstRequestId") == _values(visit, "vstRequestId")  # every visit has a page
    page_ids = _values(page, "pageRequestId")
    for t in ("action", "custom_event", "pvar"):
        assert _values(hour0[t], "pageRequestId") <= page_ids, t
    assert _values(hour0["action_tag"], "actionRequestId") <= _values(action, "actionRequestId")
    for t in ("page", "action", "custom_event", "pvar", "evar", "vstr"):
        assert _pairs(hour0[t]) <= _pairs(visit), t
    assert _values(hour0["ads_track_activation"], "visitUserId") <= _values(visit, "visitUserId")

    shared = ["vstRequestId", "visitUserId", "sessionId", "platform", "domain"]
    by_visit = {r["vstRequestId"]: r for r in visit.select(shared).to_pylist()}
    for r in page.select(shared).to_pylist():
        assert r == by_visit[r["vstRequestId"]]
    page_rows = {r["pageRequestId"]: r for r in page.to_pylist()}
    same = ("visitUserId", "sessionId", "domain", "page")
    for r in action.to_pylist() + hour0["custom_event"].to_pylist() + hour0["pvar"].to_pylist():
        p = page_rows[r["pageRequestId"]]
        assert [r[k] for k in same] == [p[k] for k in same]
        assert r.get("pageTime", p["time"]) == p["time"]


def test_ads_clicks_and_activations_share_devices_and_links(hour0: dict[str, pa.Table]) -> None:
    clicks, acts = hour0["ads_track_click"], hour0["ads_track_activation"]
    assert _values(clicks, "linkId") & _values(acts, "linkId")
    assert _values(clicks, "channelId") & _values(acts, "channelId")
    devices = {"idfa", "imei", "androidId", "OAID"}
    assert any(_values(clicks, c) & _values(acts, c) for c in devices)
    for table in (clicks, acts):
        ios = pc.equal(table["platform"], "iOS")
        assert pc.all(pc.equal(pc.is_null(table["idfa"]), pc.invert(ios))).as_py()
        assert pc.all(pc.equal(pc.is_null(table["androidId"]), ios)).as_py()
    assert all(u.startswith("https://datayi.cn/r") for u in clicks["clickUrl"].to_pylist())


def test_lengths_respected(many: dict[str, pa.Table]) -> None:
    for t, column, values in _strings(many):
        limit = DATA_TYPES[t].column(column).length
        if limit is not None and values.null_count < len(values):
            assert pc.max(pc.utf8_length(values)).as_py() <= limit, (t, column)


def test_no_empty_strings(many: dict[str, pa.Table]) -> None:
    for t, column, values in _strings(many):
        assert not pc.any(pc.equal(values, "")).as_py(), (t, column)


def test_special_characters_present(hour0: dict[str, pa.Table]) -> None:
    text = "\x00".join(
        v for _, _, values in _strings(hour0) for v in values.drop_null().to_pylist()
    )
    for needle in (",", '"', "\\", "\n", "\r\n", "北京", "商城", "🎉"):
        assert needle in text, repr(needle)
    page = hour0["page"]
    for column in ("title", "queryParameters", "page"):
        values = page.column(column).drop_null().to_pylist()
        special = [v for v in values if any(c in v for c in ',"\\\n')]
        assert len(special) > len(values) / 10, column


def test_map_columns_are_compact_json(hour0: dict[str, pa.Table]) -> None:
    for t, column, values in _strings(hour0):
        if column not in MAPS:
            continue
        assert 0 < values.null_count < len(values), (t, column)
        for text in values.drop_null().to_pylist():
            parsed = json.loads(text)
            assert 1 <= len(parsed) <= 4 and all(isinstance(v, str) for v in parsed.values())
            assert text == json.dumps(parsed, separators=(",", ":"), ensure_ascii=False)


def test_nulls_and_numbers(hour0: dict[str, pa.Table]) -> None:
    action, visit, event = hour0["action"], hour0["visit"], hour0["custom_event"]
    for table, column in [(action, "href"), (action, "index"), (event, "eventNumber")]:
        assert 0 < table.column(column).null_count < len(table), column
    assert pc.max(action["index"]).as_py() < 50
    for column in ("latitude", "longitude"):
        values = visit.column(column).drop_null().to_pylist()
        assert values and all(round(v, 5) == v for v in values)
    assert pc.all(
        pc.equal(pc.is_null(visit["idfa"]), pc.not_equal(visit["platform"], "iOS"))
    ).as_py()


def test_bad_arguments(tmp_path: Path) -> None:
    s = LocalEventStore(tmp_path)
    with pytest.raises(ValueError):
        generate(s, AI, H0 + 1, 1, 10)
    with pytest.raises(ValueError):
        generate(s, AI, H0, 1, 10, ["page", "nope"])
    with pytest.raises(ValueError):
        generate(s, AI, H0, -1, 10)
    assert generate(s, AI, H0, 0, 10) == dict.fromkeys(DATA_TYPE_NAMES, 0)
    assert list(tmp_path.iterdir()) == []
