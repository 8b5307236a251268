"""`rawexport ingest`: NDJSON, Parquet and CSV imports, the CSV round trip, bad files."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from rawexport.cli.ingest import ingest
from rawexport.demo.generate import generate
from rawexport.export.actions import export_now
from rawexport.node import Services, open_services
from rawexport.settings import Settings
from rawexport.timeutil import HOUR_MS, now_ms
from tests.conftest import local_path
from tests.store_util import local

T0 = 1_735_689_600_000  # 2025-01-01 00:00 UTC


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    svc = open_services(Settings(home=tmp_path / "home", grace_seconds=0))
    yield svc
    svc.close()


def run(svc: Services, *args: str) -> tuple[int, Any]:
    result = CliRunner().invoke(ingest, ["--home", str(svc.settings.home), *args])
    if result.exit_code:
        return result.exit_code, result.output
    return 0, json.loads(result.output)


def all_rows(svc: Services, ai: str, data_type: str) -> list[dict[str, Any]]:
    files = [
        f
        for h in svc.store.hours(ai, data_type)
        for f in local(svc.store).hour_files(ai, data_type, h)
    ]
    rows: list[dict[str, Any]] = (
        pa.concat_tables([pq.read_table(f) for f in files]).to_pylist() if files else []
    )
    return rows


def test_ndjson_plain_and_gzip(services: Services, tmp_path: Path) -> None:
    p = services.catalog.create_project("a")
    events = [
        {"type": "page", "visitUserId": "v1", "sendTime": T0},
        {
            "type": "vstr",
            "visitUserId": "v2",
            "visitorVariable": {"k": "v"},
            "sendTime": T0 + HOUR_MS,
        },
    ]
    f = tmp_path / "e.ndjson"
    f.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    before = now_ms()
    code, out = run(services, "--project", p.ai, str(f))
    assert code == 0 and out["rows"] == {"page": 1, "vstr": 1} and out["total"] == 2
    assert all_rows(services, p.ai, "page")[0]["sendTime"] >= before  # stamped now
    g = tmp_path / "e.jsonl.gz"
    g.write_bytes(gzip.compress(f.read_bytes()))
    code, out = run(services, "--project", p.ai, "--keep-send-time", str(g))
    assert code == 0 and out["total"] == 2
    assert T0 + HOUR_MS in {r["sendTime"] for r in all_rows(services, p.ai, "vstr")}


def test_parquet_from_store_path_and_type_option(services: Services, tmp_path: Path) -> None:
    src = services.catalog.create_project("src")
    dst = services.catalog.create_project("dst")
    generate(services.store, src.ai, T0, 1, 100, ["page"], seed=1)
    [f] = local(services.store).hour_files(src.ai, "page", T0)
    code, out = run(services, "--project", dst.ai, "--keep-send-time", str(f))
    assert code == 0 and out["rows"] == {"page": pq.read_metadata(f).num_rows}
    copy = tmp_path / "x.parquet"
    copy.write_bytes(f.read_bytes())
    code, msg = run(services, "--project", dst.ai, str(copy))
    assert code == 1 and "pass --data-type" in msg
    code, out = run(services, "--project", dst.ai, "--data-type", "page", str(copy))
    assert code == 0
    assert sorted(all_rows(services, dst.ai, "page"), key=str) != []


def export_csv(svc: Services, ai: str, data_type: str) -> tuple[list[Path], bytes]:
    """The exported parts of (ai, type, T0) and their rows (header once)."""
    p = svc.catalog.project(ai)
    assert p is not None
    [row] = export_now(svc.exporter, p, [T0], data_type, T0 + 2 * HOUR_MS)
    assert row["status"] == "finished", row
    job = [j for j in svc.catalog.jobs(p.id) if j.data_type == data_type and j.version == "v2"][-1]
    paths = [local_path(svc.blobs, f.key) for f in svc.catalog.files(job.id)]
    lines: list[bytes] = []
    for i, path in enumerate(paths):
        text = gzip.decompress(path.read_bytes()).split(b"\n", 1)
        lines += [text[0] + b"\n"] if i == 0 else []
        lines.append(text[1])
    return paths, b"".join(lines)


@pytest.mark.parametrize("data_type", ["page", "custom_event", "vstr", "ads_track_activation"])
def test_csv_round_trip_is_identical(services: Services, data_type: str) -> None:
    src = services.catalog.create_project("src", export_since_ms=T0, v1_enabled=False)
    dst = services.catalog.create_project("dst", export_since_ms=T0, v1_enabled=False)
    generate(services.store, src.ai, T0, 1, 3000, [data_type], seed=4)
    services.settings = services.settings.replace(part_bytes=65536)
    services.exporter.settings = services.settings
    parts, want = export_csv(services, src.ai, data_type)
    assert len(parts) > 1 or data_type != "page"
    code, out = run(services, "--project", dst.ai, "--keep-send-time", *map(str, parts))
    assert code == 0, out
    _, got = export_csv(services, dst.ai, data_type)
    assert got == want


def test_csv_escapes_and_nulls(services: Services, tmp_path: Path) -> None:
    p = services.catalog.create_project("a")
    f = tmp_path / "page.csv"
    f.write_text(
        "visitUserId,sessionId,title,time,sendTime,appVariable\n"
        'v1,,"a,\\"b\\"\nc",5,' + str(T0) + ',"{\\"k\\":\\"v\\"}"\n'
    )
    code, out = run(services, "--project", p.ai, "--data-type", "page", "--keep-send-time", str(f))
    assert code == 0, out
    [row] = all_rows(services, p.ai, "page")
    assert row["sessionId"] is None and row["title"] == 'a,"b"\nc' and row["time"] == 5
    assert row["appVariable"] == '{"k":"v"}' and row["sendTime"] == T0


@pytest.mark.parametrize(
    ("name", "content", "error"),
    [
        ("a.ndjson", '{"type":"page","visitUserId":"v"}\n{"type":', "line 2 is not valid JSON"),
        (
            "b.ndjson",
            '{"type":"page","visitUserId":"v"}\n{"type":"page"}\n',
            "line 2: visitUserId",
        ),
        ("c.csv", "visitUserId,bogus\nv,1\n", "columns not of page: bogus"),
        ("d.csv", "visitUserId,deviceOrientation\nv,xxxxxxxxxxx\n", "longer than 10"),
        ("e.csv", "visitUserId,time\nv,notanumber\n", "invalid value"),
        ("f.csv", "visitUserId,appVariable\nv,[1]\n", "is not a JSON object"),
        ("g.csv", "sessionId\ns\n", "visitUserId: required"),
        ("h.txt", "x", "not .ndjson"),
        ("i.csv.gz", "not gzip", "i.csv.gz"),
    ],
)
def test_bad_files_store_nothing(
    services: Services, tmp_path: Path, name: str, content: str, error: str
) -> None:
    p = services.catalog.create_project("a")
    f = tmp_path / name
    f.write_text(content)
    code, msg = run(services, "--project", p.ai, "--data-type", "page", str(f))
    assert code == 1 and error in msg and "Traceback" not in msg
    assert len(msg.strip().splitlines()) == 1
    assert services.store.hours(p.ai, "page") == []


def test_keep_send_time_needs_send_time(services: Services, tmp_path: Path) -> None:
    p = services.catalog.create_project("a")
    f = tmp_path / "page.csv"
    f.write_text("visitUserId\nv\n")
    code, msg = run(services, "--project", p.ai, "--data-type", "page", "--keep-send-time", str(f))
    assert code == 1 and "sendTime: required" in msg
    code, msg = run(services, "--project", "0000000000000000", str(f))
    assert code == 1 and "no project" in msg


def test_type_of_export_folders() -> None:
    from rawexport.ingest.files import BadFile, type_of

    for ai, t in [("0123456789abcdef", "ads_track_click"), ("00000000000abcde", "action_tag")]:
        path = Path(f"/x/abcd_{ai}_{t}_v2_202501010000/part-00000-u-c000.csv.gz")
        assert type_of(path, None) == t
    assert type_of(Path("/e/0123456789abcdef/page/2025010100/f.parquet"), None) == "page"
    with pytest.raises(BadFile):
        type_of(Path("/x/abcd_0123456789abcdef_custom_attr_202501010000/p.csv.gz"), None)


def test_ndjson_in_chunks_reports_the_right_line(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rawexport.ingest.files as ic

    monkeypatch.setattr(ic, "BLOCK_BYTES", 70)  # two lines a block
    p = services.catalog.create_project("a")
    good = '{"type":"page","visitUserId":"v"}\n'
    f = tmp_path / "e.ndjson"
    f.write_text(good * 4 + "\n" + good * 2)
    code, out = run(services, "--project", p.ai, str(f))
    assert code == 0 and out["total"] == 6
    f.write_text(good * 4 + "\n" + good + '{"type":"page"}\n' + good)
    code, msg = run(services, "--project", p.ai, str(f))
    assert code == 1 and "line 7: visitUserId: required" in msg
    assert len(all_rows(services, p.ai, "page")) == 6
