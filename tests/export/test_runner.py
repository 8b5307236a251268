"""An attempt run here end to end: Parquet hour in, gzip CSV parts out; the manifest they make."""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rawexport.blobs.local import LocalBlobStore
from rawexport.export.manifest import manifest_bytes
from rawexport.export.parts import GROUP_STRIDE
from rawexport.export.pipeline import Attempt, run_here
from rawexport.export.plan import parse_size
from rawexport.schema import DATA_TYPES, V1_TYPES
from rawexport.timeutil import parse_hour_arg
from rawexport.types import ExportResult
from tests.parquet_util import write_parquet

AI = "0123456789abcdef"
HOUR = parse_hour_arg("2024030112")


class RecordingStore(LocalBlobStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.order: list[str] = []

    def put(self, key: str, src: Path) -> None:
        super().put(key, src)
        self.order.append(key)

    def put_bytes(self, key: str, data: bytes) -> None:
        super().put_bytes(key, data)
        self.order.append(key)


def export(
    tmp_path: Path,
    files: list[Path],
    version: str = "v2",
    name: str = "page",
    part_bytes: int = 64 << 20,
    store: LocalBlobStore | None = None,
) -> ExportResult:
    at = Attempt(AI, version, name, HOUR, 1, 1, part_bytes, 1, "256MB", 2)
    return run_here(at, files, store or LocalBlobStore(tmp_path / "blobs"), tmp_path / "tmp")


def manifest(res: ExportResult, name: str, created_ms: int = 1) -> bytes:
    return manifest_bytes(
        res, ai=AI, version="v2", name=name, hour_ms=HOUR, revision=1, created_ms=created_ms
    )


def read_part(path: Path) -> list[list[str]]:
    with gzip.open(path, "rb") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        return list(csv.reader(text, quotechar='"', escapechar="\\"))


def enc(value: Any) -> str:
    """Reference encoder of one field (GrowingIO dialect)."""
    if value is None:
        return ""
    s = str(value)
    if any(ch in s for ch in ',"\\\n\r'):
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return s


NASTY = [
    "a,b",
    'q"q',
    "back\\",
    '\\"',
    "x\\y",
    "l1\nl2",
    "w\r\nz",
    "cr\ronly",
    "中文",
    "😀",
    "  pad  ",
    "00123",
    "1e5",
    "",
    "plain",
]


def test_gzip_round_trip_of_nasty_values(tmp_path: Path) -> None:
    rows = [
        {
            "visitUserId": f"u{i:02d}",
            "sessionId": s,
            "sendTime": 1000 + i,
            "time": None,
            "title": s,
            "page": s[::-1],
            "loginUserId": None if i % 2 else s,
            "appVariable": json.dumps(
                {"k": s, "n": str(i)}, separators=(",", ":"), ensure_ascii=False
            ),
        }
        for i, s in enumerate(NASTY)
    ]
    res = export(tmp_path, [write_parquet(tmp_path / "a.parquet", "page", rows)])
    assert res.rows == len(rows) and len(res.files) == 1
    got = read_part(tmp_path / "blobs" / res.files[0].key)
    names = list(DATA_TYPES["page"].column_names)
    assert got[0] == names
    for row, line in zip(rows, got[1:], strict=True):
        assert line == ["" if row.get(n) is None else str(row[n]) for n in names]


def page_rows(n: int, seed: int = 5) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    users = [f"{rnd.getrandbits(64):016x}" for _ in range(300)]
    rows: list[dict[str, Any]] = []
    for i in range(n):
        u = rnd.choice(users)
        row: dict[str, Any] = {
            "visitUserId": u,
            "sessionId": u[:8] + str(rnd.randrange(3)),
            "sendTime": HOUR + rnd.randrange(3_600_000) // 1000 * 1000,  # many equal keys
            "time": HOUR + rnd.randrange(3_600_000),
            "platform": rnd.choice(["web", "iOS", "Android"]),
            "domain": "shop.example.com",
            "page": f"/p/{rnd.randrange(200)}",
            "queryParameters": rnd.choice([None, "a=1&b=2", "q=x,y", 'q="z"']),
            "title": rnd.choice(["首页", 'Say "hi"', "back\\slash", "multi\nline", "Cart"]),
            "loginUserId": rnd.choice([None, f"user{rnd.randrange(100)}"]),
            "appVariable": rnd.choice([None, '{"k":"v"}', '{"city":"北京","n":"1"}']),
            "pageRequestId": f"{rnd.getrandbits(60):015x}",
        }
        if i % 50 == 0 and rows:
            row = dict(rows[-1])  # exact duplicates must survive too
        rows.append(row)
    return rows


def test_small_parts_over_an_hour_of_rows(tmp_path: Path) -> None:
    rows = page_rows(50_000)
    files = [write_parquet(tmp_path / f"{i}.parquet", "page", rows[i::3]) for i in range(3)]
    store = RecordingStore(tmp_path / "blobs")
    res = export(tmp_path, files, part_bytes=65536, store=store)
    names = list(DATA_TYPES["page"].column_names)
    assert len(res.files) > 5
    # Parts only, in order: the manifest is written by the commit (see test_worker).
    assert store.order == [p.key for p in res.files]
    got: list[list[str]] = []
    for p in res.files:
        path = store.path(p.key)
        assert path.stat().st_size == p.bytes <= 65536
        assert gzip.decompress(path.read_bytes()).startswith((",".join(names) + "\n").encode())
        part = read_part(path)
        assert part[0] == names and len(part) - 1 == p.rows
        got.extend(part[1:])
    assert res.rows == sum(p.rows for p in res.files) == len(rows) == len(got)
    assert res.bytes == sum(p.bytes for p in res.files)

    def line(r: dict[str, Any]) -> list[str]:
        return [enc(r.get(n)) for n in names]

    def keys(r: list[str]) -> tuple[str, str, int]:
        return (
            r[names.index("visitUserId")],
            r[names.index("sessionId")],
            int(r[names.index("sendTime")]),
        )

    # Sorted by the export keys; rows with equal keys may come in any (but a fixed) order.
    assert [keys(r) for r in got] == sorted(keys(r) for r in got)
    expected = [[("" if r.get(n) is None else str(r[n])) for n in names] for r in rows]
    assert sorted(got) == sorted(expected)


def test_manifest(tmp_path: Path) -> None:
    f = write_parquet(tmp_path / "a.parquet", "action_tag", [{"sendTime": 5, "ruleId": "中"}])
    res = export(tmp_path, [f], name="action_tag")
    raw = manifest(res, "action_tag", created_ms=HOUR + 7)
    assert b" " not in raw  # compact separators
    assert raw == manifest(res, "action_tag", created_ms=HOUR + 7)  # a pure function
    m = json.loads(raw)
    assert m["ai"] == AI and m["version"] == "v2" and m["dataType"] == "action_tag"
    assert m["exportHour"] == "2024030112" and m["hourStartMs"] == HOUR and m["revision"] == 1
    assert m["columns"] == ["sendTime", "actionRequestId", "ruleId"]
    assert m["rows"] == 1 and m["bytes"] == res.bytes and m["createdMs"] == HOUR + 7
    (p,) = res.files
    assert m["parts"] == [
        {"key": p.key, "part": 0, "rows": 1, "bytes": p.bytes, "sha256": p.sha256, "md5": p.md5}
    ]
    assert re.fullmatch(r"[0-9a-f]{4}_0123456789abcdef_action_tag_v2_202403010400", res.prefix)
    assert res.manifest_key == f"{res.prefix}/_manifest.json"


def test_no_files_and_no_rows(tmp_path: Path) -> None:
    res = export(tmp_path, [])
    assert res.files == [] and res.rows == 0 and res.bytes == 0
    m = json.loads(manifest(res, "page"))
    assert m["parts"] == [] and m["rows"] == 0
    empty = write_parquet(tmp_path / "e.parquet", "page", [])
    res = export(tmp_path, [empty])
    assert res.files == [] and res.rows == 0
    assert LocalBlobStore(tmp_path / "blobs").list("") == []
    assert list((tmp_path / "tmp").iterdir()) == []


def test_rerun_is_byte_identical(tmp_path: Path) -> None:
    rows = page_rows(3000, seed=9)
    a = [write_parquet(tmp_path / "a.parquet", "page", rows)]
    b = [write_parquet(tmp_path / f"b{i}.parquet", "page", rows[i::2]) for i in (1, 0)]
    first = export(tmp_path / "one", a, part_bytes=65536)
    second = export(tmp_path / "two", b, part_bytes=65536)
    assert [(p.key, p.sha256, p.rows) for p in first.files] == [
        (p.key, p.sha256, p.rows) for p in second.files
    ]


def _v1_source_row(source: str) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for i, c in enumerate(DATA_TYPES[source].store_columns):
        row[c.name] = {
            "string": f"{c.name},v",
            "bigint": 1000 + i,
            "double": 1.25 + i,
            "map": '{"ek":"ev","_cs1":"over"}',
        }[c.type]
    return row


def test_v1_export_of_every_type(tmp_path: Path) -> None:
    for name, v1 in V1_TYPES.items():
        src = _v1_source_row(v1.source)
        f = write_parquet(tmp_path / f"{name}.parquet", v1.source, [src])
        res = export(tmp_path / name, [f], version="v1", name=name)
        assert re.fullmatch(rf"[0-9a-f]{{4}}_{AI}_{name}_202403010400", res.prefix)
        assert res.files[0].key.endswith(".csv.gz") and "-c000" not in res.files[0].key
        header, values = read_part(tmp_path / name / "blobs" / res.files[0].key)
        assert header == list(v1.column_names)
        got = dict(zip(header, values, strict=True))
        for col in v1.columns:
            plain = re.fullmatch(r'"(\w+)"', col.expr)
            if plain:
                assert got[col.name] == str(src[plain.group(1)]), (name, col.name)
        special = {
            "eventType": {"visit": "vst", "page": "page"},
            "countryName": {"visit": ""},
            "resolution": {"visit": f"{src.get('screenWidth')}x{src.get('screenHeight')}"},
        }
        for col_name, per_type in special.items():
            if name in per_type:
                assert got[col_name] == per_type[name]
        if name == "custom_attr":
            attr = json.loads(got["attribute"])
            assert attr == {
                "_userId": src["visitUserId"],
                "_sessionId": src["sessionId"],
                "_eventTime": src["time"],
                "_domain": src["domain"],
                "_path": src["page"],
                "_query": src["queryParameters"],
                "_cs1": "over",
                "ek": "ev",
            }


def test_parse_size() -> None:
    assert parse_size("1GB") == 10**9
    assert parse_size("512MiB") == 512 << 20
    assert parse_size("1.5 gb") == 1_500_000_000
    assert parse_size("12345") == 12345
    with pytest.raises(ValueError):
        parse_size("lots")


def ranged_export(root: Path, files: list[Path], name: str, range_bytes: int) -> ExportResult:
    """A v2 export into root/blobs with 64 KiB parts, sorted range_bytes at a time."""
    at = Attempt(AI, "v2", name, HOUR, 1, 1, 65536, 1, "256MB", 2, range_bytes)
    return run_here(at, files, LocalBlobStore(root / "blobs"), root / "tmp")


def group_firsts(res: ExportResult) -> list[int]:
    """The first part number of each range group (where numbering jumps), checked to be
    multiples of one stride: a power of ten of at least GROUP_STRIDE."""
    numbers = [p.part for p in res.files]
    firsts = [n for i, n in enumerate(numbers) if i == 0 or n != numbers[i - 1] + 1]
    stride = firsts[1] if len(firsts) > 1 else GROUP_STRIDE
    assert stride >= GROUP_STRIDE and str(stride).strip("0") == "1"
    assert firsts == [i * stride for i in range(len(firsts))]
    return firsts


def part_lines(root: Path, res: ExportResult) -> list[list[str]]:
    return [r for p in res.files for r in read_part(root / "blobs" / p.key)[1:]]


def test_key_ranges_give_the_order_of_one_sort(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rawexport.export.rangesort as rangesort

    rows = page_rows(20_000, seed=11)
    for i, row in enumerate(rows):
        if i % 7 == 0:
            row["visitUserId"] = None  # null first keys sort last, as in one ORDER BY
        if i % 13 == 0:
            row["sessionId"] = None
    a = [write_parquet(tmp_path / "a.parquet", "page", rows)]
    b = [write_parquet(tmp_path / f"b{i}.parquet", "page", rows[i::3]) for i in (2, 0, 1)]
    plan = rangesort.plan_groups
    groups: list[int] = []

    def counting_plan(line_bytes: dict[int, int], group_bytes: int) -> list[list[int]]:
        out = plan(line_bytes, group_bytes)
        groups.append(len(out))
        return out

    monkeypatch.setattr("rawexport.export.pipeline.plan_groups", counting_plan)

    def run(name: str, files: list[Path], range_bytes: int) -> ExportResult:
        return ranged_export(tmp_path / name, files, "page", range_bytes)

    whole = run("whole", a, 1 << 40)
    assert groups == []
    ranged_a, ranged_b = run("ranged-a", a, 300_000), run("ranged-b", b, 300_000)
    assert len(groups) == 2 and all(n > 3 for n in groups)
    # The same files give the same parts, wherever and however often they are exported.
    again = run("ranged-a-again", a, 300_000)
    assert [(p.part, p.sha256) for p in again.files] == [(p.part, p.sha256) for p in ranged_a.files]
    # Each group has parts of its own, numbered from group * stride.
    assert len(group_firsts(ranged_a)) == groups[0]
    assert list((tmp_path / "ranged-a" / "tmp").iterdir()) == []
    got = part_lines(tmp_path / "whole", whole)
    assert part_lines(tmp_path / "ranged-a", ranged_a) == got
    assert part_lines(tmp_path / "ranged-b", ranged_b) == got
    assert whole.rows == ranged_a.rows == len(rows)
    names = list(DATA_TYPES["page"].column_names)
    assert got[-1][0] == "" and got[0][0] != ""
    keys = [(r[0] == "", r[0], r[1] == "", r[1], int(r[names.index("sendTime")])) for r in got]
    assert keys == sorted(keys)


def test_integer_key_ranges(tmp_path: Path) -> None:
    rnd = random.Random(3)
    rows = [
        {"sendTime": rnd.choice([None, rnd.randrange(500)]), "ruleId": f"r{rnd.randrange(9)}"}
        for _ in range(20_000)
    ]
    f = [write_parquet(tmp_path / "a.parquet", "action_tag", rows)]
    got = []
    for name, range_bytes in (("whole", 1 << 40), ("ranged", 20_000)):
        res = ranged_export(tmp_path / name, f, "action_tag", range_bytes)
        got.append(part_lines(tmp_path / name, res))
    assert got[0] == got[1] and len(got[0]) == len(rows)


def test_rebatch_cuts_fixed_chunks() -> None:
    from rawexport.export.rangesort import rebatch

    arrays = [pa.array([f"{i}\n" for i in range(a, b)]) for a, b in ((0, 3), (3, 3), (3, 11))]
    out = list(rebatch(arrays, 4))
    assert [len(x) for x in out] == [4, 4, 3]
    assert [v for x in out for v in x.to_pylist()] == [f"{i}\n" for i in range(11)]


def test_equal_hashes_of_equal_keys_are_ordered_by_line() -> None:
    import numpy as np

    from rawexport.export.rangesort import settle_ties

    # Rows 0-3 share a hash; rows 0, 2, 3 also share their keys, row 1 does not.
    keys = pa.table({"k0": ["u", "v", "u", "u", "w"], "k1": [1, 1, 1, 1, 2]})
    lines = pa.chunked_array([["c\n", "a\n"], ["b\n", "é\n", "z\n"]])
    hashes = np.array([7, 7, 7, 7, 9], dtype=np.uint64)
    perm = np.array([3, 0, 2, 1, 4])  # as an unstable sort might leave them
    got = settle_ties(perm, hashes, keys, lines)
    # u-rows by their bytes (b < c < é), then the v-row, then the rest untouched.
    assert got.tolist() == [2, 0, 3, 1, 4]
    assert settle_ties(perm, np.arange(5, dtype=np.uint64), keys, lines) is perm


def test_v2_reads_files_missing_columns_and_dictionaries(tmp_path: Path) -> None:
    full = page_rows(500, seed=3)
    a = write_parquet(tmp_path / "a.parquet", "page", full)
    partial = [{"visitUserId": f"z{i}", "sessionId": "s", "sendTime": i} for i in range(50)]
    b = tmp_path / "b.parquet"
    pq.write_table(pa.Table.from_pylist(partial), b)  # most page columns absent
    res = export(tmp_path, [a, b])
    rows = [r for p in res.files for r in read_part(tmp_path / "blobs" / p.key)[1:]]
    names = list(DATA_TYPES["page"].column_names)
    assert len(rows) == 550
    tail = [dict(zip(names, r, strict=True)) for r in rows if r[0].startswith("z")]
    assert len(tail) == 50
    assert all(r["domain"] == "" and r["appVariable"] == "" for r in tail)
    assert [r["sendTime"] for r in tail] == [
        str(i) for i in sorted(range(50), key=lambda i: f"z{i}")
    ]


def test_a_range_group_may_need_more_parts_than_the_smallest_stride(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rawexport.export.parts as parts

    monkeypatch.setattr(parts, "MIN_PART_BYTES", 8192)  # many parts from a small hour
    f = [write_parquet(tmp_path / "a.parquet", "page", page_rows(20_000, seed=12))]

    def export(name: str, range_bytes: int) -> ExportResult:
        at = Attempt(AI, "v2", "page", HOUR, 1, 1, 8192, 1, "256MB", 2, range_bytes)
        return run_here(at, f, LocalBlobStore(tmp_path / name / "blobs"), tmp_path / name / "tmp")

    ranged, whole = export("ranged", 1_500_000), export("whole", 1 << 40)
    firsts = group_firsts(ranged)
    assert len(firsts) > 1 and firsts[1] > GROUP_STRIDE  # a group of more than 100 parts
    assert max(p.bytes for p in ranged.files) <= 8192
    assert part_lines(tmp_path / "ranged", ranged) == part_lines(tmp_path / "whole", whole)
