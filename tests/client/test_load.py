"""Parquet and DuckDB loading of real export parts: types, row counts, idempotent replace."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rawexport.client.load import HOUR_COLUMN, to_duckdb, to_parquet
from rawexport.client.pull import hour_dir
from rawexport.demo.generate import generate
from rawexport.export.actions import export_now
from rawexport.node import open_services
from rawexport.schema import DATA_TYPE_NAMES, DATA_TYPES
from rawexport.settings import Settings
from rawexport.timeutil import DAY_MS, HOUR_MS, beijing_hour_label, hour_floor, now_ms
from tests.conftest import local_path

FIRST = hour_floor(now_ms()) - 30 * HOUR_MS
HOURS = [FIRST, FIRST + HOUR_MS]
LABELS = [beijing_hour_label(h) for h in HOURS]
ARROW = {"string": pa.string(), "bigint": pa.int64(), "double": pa.float64()}


@pytest.fixture(scope="module")
def pulled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """Two exported hours of all 10 types laid out as `pull` writes them; manifest rows per
    type (key "t") and per type and hour (key "t@yyyyMMddHH")."""
    home = tmp_path_factory.mktemp("load")
    services = open_services(Settings(home=home, part_bytes=65536))
    try:
        p = services.catalog.create_project(
            "load", export_since_ms=FIRST - DAY_MS, v1_enabled=False
        )
        generate(services.store, p.ai, FIRST, 2, 3000, seed=7)
        export_now(services.exporter, p, HOURS, None, now_ms())
        to = home / "pulled"
        rows: dict[str, int] = {}
        jobs = services.catalog.hour_jobs(p.id, "v2", FIRST, FIRST + 2 * HOUR_MS)
        for (t, hour), found in jobs.items():
            job = found[0]
            assert job.status == "finished" and job.manifest_key
            manifest = json.loads(local_path(services.blobs, job.manifest_key).read_bytes())
            rows[t] = rows.get(t, 0) + manifest["rows"]
            rows[f"{t}@{beijing_hour_label(hour)}"] = manifest["rows"]
            target = hour_dir(to, t, beijing_hour_label(hour))
            target.mkdir(parents=True)
            for part in manifest["parts"]:
                name = f"part-{part['part']:05d}.csv.gz"
                shutil.copy(local_path(services.blobs, part["key"]), target / name)
    finally:
        services.close()
    return to, rows


def per_type(rows: dict[str, int], hour: str | None = None) -> dict[str, int]:
    return {t: rows[f"{t}@{hour}"] if hour else rows[t] for t in DATA_TYPE_NAMES}


def files_of(to: Path, hours: list[str] = LABELS) -> dict[str, list[Path]]:
    return {
        t: sorted(p for h in hours for p in hour_dir(to, t, h).glob("part-*.csv.gz"))
        for t in DATA_TYPE_NAMES
    }


def test_parquet_has_the_schema_types_and_the_manifest_rows(
    pulled: tuple[Path, dict[str, int]], tmp_path: Path
) -> None:
    to, rows = pulled
    out = to_parquet(files_of(to), tmp_path, "day1")
    assert set(out) == set(DATA_TYPE_NAMES)
    for t, (path, n) in out.items():
        assert path == tmp_path / t / "day1.parquet"
        table = pq.read_table(path)
        assert n == table.num_rows == rows[t] > 0, t
        want = [
            pa.field(
                c.name, pa.map_(pa.string(), pa.string()) if c.type == "map" else ARROW[c.type]
            )
            for c in DATA_TYPES[t].columns
        ]
        got = table.schema
        assert [f.name for f in got] == [f.name for f in want] + [HOUR_COLUMN], t
        for f in want:
            assert got.field(f.name).type.equals(f.type), (t, f.name, got.field(f.name).type)
        assert set(table.column(HOUR_COLUMN).to_pylist()) == set(LABELS)


def expected_value(type_: str, raw: str) -> object:
    if raw == "":
        return None  # null and the empty string are both an empty field in the export
    if type_ == "map":
        return {k: v if isinstance(v, str) else json.dumps(v) for k, v in json.loads(raw).items()}
    if type_ == "bigint":
        return int(raw)
    if type_ == "double":
        return float(raw)
    return raw


@pytest.mark.parametrize("data_type", ["page", "custom_event", "visit", "ads_track_click"])
def test_every_value_survives_the_csv_dialect(
    pulled: tuple[Path, dict[str, int]], tmp_path: Path, data_type: str
) -> None:
    to, _ = pulled
    part = files_of(to)[data_type][0]
    with gzip.open(part, "rt", encoding="utf-8", newline="") as f:
        header, *lines = list(csv.reader(f, quotechar='"', escapechar="\\"))
    ((path, _),) = to_parquet({data_type: [part]}, tmp_path, "x").values()
    got = pq.read_table(path).to_pylist()
    assert len(got) == len(lines) > 0
    types = {c.name: c.type for c in DATA_TYPES[data_type].columns}
    special = 0
    for line, row in zip(lines, got, strict=True):
        for name, raw in zip(header, line, strict=True):
            value = row[name]
            if types[name] == "map" and value is not None:
                value = dict(value)
            assert value == expected_value(types[name], raw), (name, raw)
            special += any(ch in raw for ch in ',"\\\n')
    if data_type == "page":
        assert special > 0, "the sample should exercise quoting and escapes"


def test_duckdb_load_replaces_the_pulled_hours(
    pulled: tuple[Path, dict[str, int]], tmp_path: Path
) -> None:
    to, rows = pulled
    db = tmp_path / "gio.duckdb"
    total = per_type(rows)

    def counts() -> dict[str, int]:
        with duckdb.connect(str(db)) as con:
            found = {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone() for t in total}
        return {t: int(r[0]) for t, r in found.items() if r is not None}

    assert to_duckdb(files_of(to), db, LABELS) == total
    assert counts() == total
    assert to_duckdb(files_of(to), db, LABELS) == total
    assert counts() == total, "loading the same hours twice must not duplicate rows"
    # the second hour pulled again with no parts (say, re-exported empty): only its rows go
    to_duckdb({t: [] for t in total}, db, LABELS[1:])
    assert counts() == per_type(rows, LABELS[0])
    # and loading only the second hour brings it back without touching the first
    to_duckdb(files_of(to, LABELS[1:]), db, LABELS[1:])
    assert counts() == total
