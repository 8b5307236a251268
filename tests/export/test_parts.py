"""PartWriter: gzip parts never over part_bytes, cut on rows, header first, exact counts."""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from isal import isal_zlib

from rawexport.blobs.local import LocalBlobStore
from rawexport.export.parts import (
    FINISH_RESERVE,
    PartWriter,
    RowTooLarge,
    deflate_bound,
    line_buffers,
    write_lanes,
    write_parts,
)

HEADER = b"a,b,c\n"


def make_writer(tmp_path: Path, part_bytes: int = 65536, level: int = 1) -> PartWriter:
    return PartWriter(
        header=HEADER,
        part_bytes=part_bytes,
        level=level,
        tmp_dir=tmp_path / "tmp",
        blobs=LocalBlobStore(tmp_path / "blobs"),
        key_for=lambda n: f"prefix/part-{n:05d}.csv.gz",
    )


def mixed_lines(n: int, seed: int = 1) -> list[bytes]:
    """Compressible and incompressible lines of varied length, utf-8 included."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            body = f"user{rnd.randrange(1000)},session,{rnd.randrange(10**12)}"
        elif kind == 1:
            body = base64.b64encode(rnd.randbytes(rnd.randrange(1, 900))).decode()
        else:
            body = "中文😀" * rnd.randrange(0, 50)
        out.append((body + "\n").encode())
    return out


def check_parts(tmp_path: Path, writer: PartWriter, lines: list[bytes]) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    got: list[bytes] = []
    for i, p in enumerate(writer.parts):
        assert p.part == i and p.key == f"prefix/part-{i:05d}.csv.gz"
        blob = store.path(p.key).read_bytes()
        assert len(blob) == p.bytes <= writer.part_bytes
        assert hashlib.md5(blob).hexdigest() == p.md5
        assert hashlib.sha256(blob).hexdigest() == p.sha256
        text = gzip.decompress(blob)
        assert text.startswith(HEADER)
        rows = text[len(HEADER) :].splitlines(keepends=True)
        assert len(rows) == p.rows > 0
        got.extend(rows)
    assert got == lines
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_deflate_bound_holds_on_adversarial_input(level: int) -> None:
    rnd = random.Random(level)
    inputs = [
        rnd.randbytes(1),
        rnd.randbytes(300),
        rnd.randbytes(65537),
        rnd.randbytes(1 << 20),
        bytes(rnd.randrange(128, 256) for _ in range(100_000)),
        bytes(rnd.choice(b"\x00\xff") for _ in range(100_000)),
        "中文😀".encode() * 10_000,
    ]
    for data in inputs:
        comp = isal_zlib.compressobj(level, isal_zlib.DEFLATED, 31)
        comp.compress(b"header\n")
        comp.flush(isal_zlib.Z_SYNC_FLUSH)
        out = comp.compress(data) + comp.flush(isal_zlib.Z_SYNC_FLUSH)
        assert len(out) <= deflate_bound(len(data), level)
        assert len(comp.flush(isal_zlib.Z_FINISH)) <= FINISH_RESERVE


@pytest.mark.parametrize("level", [0, 1, 3])
def test_small_parts_respect_the_limit(tmp_path: Path, level: int) -> None:
    lines = mixed_lines(3000)
    writer = make_writer(tmp_path, level=level)
    arr = pa.array([x.decode() for x in lines])
    for start in range(0, len(lines), 700):  # uneven chunks, sliced arrays
        writer.write(arr.slice(start, 700))
    writer.close()
    assert len(writer.parts) > 3
    check_parts(tmp_path, writer, lines)
    # Parts are filled close to the limit, not cut early.
    assert all(p.bytes > 65536 - 4096 for p in writer.parts[:-1])


def test_incompressible_rows_near_the_limit(tmp_path: Path) -> None:
    rnd = random.Random(7)
    lines = [(rnd.randbytes(15_000).hex()[: rnd.randrange(20_000, 30_000)] + "\n").encode()]
    lines += [(base64.b64encode(rnd.randbytes(40_000)).decode() + "\n").encode() for _ in range(8)]
    writer = make_writer(tmp_path)
    writer.write(pa.array([x.decode() for x in lines]))
    writer.close()
    check_parts(tmp_path, writer, lines)


def test_row_too_large(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    big = base64.b64encode(os.urandom(70_000)).decode() + "\n"
    writer.write(pa.array(["ok\n"]))
    with pytest.raises(RowTooLarge, match="raise part_bytes"):
        writer.write(pa.array([big]))
    assert list((tmp_path / "tmp").iterdir()) == []


def test_no_rows_no_parts(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    writer.write(pa.array([], pa.string()))
    assert writer.close() == []


def test_settings_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        make_writer(tmp_path, part_bytes=65535)
    with pytest.raises(ValueError):
        make_writer(tmp_path, level=4)


def test_line_buffers_of_every_string_layout() -> None:
    lines = ["a,b\n", "中文\n", "x\n", "last\n"]
    for arr in (
        pa.array(lines),
        pa.array(lines, pa.large_string()),
        pa.array(lines, pa.string_view()),
        pa.array([x.encode() for x in lines], pa.binary()),
        pa.chunked_array([lines[:2], lines[2:]]),
    ):
        offsets, data = line_buffers(arr)
        assert bytes(data[offsets[0] : offsets[-1]]) == "".join(lines).encode()
        sliced = arr.slice(1, 2)
        offsets, data = line_buffers(sliced)
        assert len(offsets) == 3
        assert bytes(data[offsets[0] : offsets[-1]]) == "中文\nx\n".encode()
    with pytest.raises(ValueError):
        line_buffers(pa.array(["a\n", None]))


def test_write_parts_in_a_thread(tmp_path: Path) -> None:
    lines = mixed_lines(2000, seed=3)
    arr = pa.array([x.decode() for x in lines])
    writer = make_writer(tmp_path)
    parts = write_parts((arr.slice(i, 100) for i in range(0, 2000, 100)), writer, queue_size=2)
    assert parts == writer.parts
    check_parts(tmp_path, writer, lines)


def test_write_parts_reports_writer_errors(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    chunks = [pa.array(["ok\n"]), pa.array(["x" * 100_000 + "\n"]), pa.array(["more\n"])]
    with pytest.raises(RowTooLarge):
        write_parts(iter(chunks), writer)
    assert [p.rows for p in writer.parts] == [1]  # full parts are published as they close
    assert list((tmp_path / "tmp").iterdir()) == []


def test_write_parts_aborts_when_the_reader_fails(tmp_path: Path) -> None:
    def chunks() -> Iterator[pa.Array]:
        yield pa.array(["row\n"] * 10)
        raise OSError("reader broke")

    writer = make_writer(tmp_path)
    with pytest.raises(OSError, match="reader broke"):
        write_parts(chunks(), writer)
    assert writer.parts == []
    assert not (tmp_path / "blobs").exists() or LocalBlobStore(tmp_path / "blobs").list("") == []
    assert list((tmp_path / "tmp").iterdir()) == []


def grouped_writer(tmp_path: Path, stride: int = 100) -> PartWriter:
    return PartWriter(
        header=HEADER,
        part_bytes=65536,
        level=1,
        tmp_dir=tmp_path / "tmp",
        blobs=LocalBlobStore(tmp_path / "blobs"),
        key_for=lambda n: f"prefix/part-{n:05d}.csv.gz",
        group_stride=stride,
    )


def group_items(groups: int, seed: int) -> list[tuple[int, pa.Array]]:
    """(group, lines) items: each group a few chunks of mixed lines, some over a part."""
    items = []
    for g in range(groups):
        lines = mixed_lines(300 + 400 * (g % 3), seed=seed + g)
        arr = pa.array([x.decode() for x in lines])
        items += [(g, arr.slice(i, 128)) for i in range(0, len(arr), 128)]
    return items


@pytest.mark.parametrize("lanes", [2, 3])
def test_lanes_write_the_parts_one_writer_writes(tmp_path: Path, lanes: int) -> None:
    items = group_items(7, seed=11)
    one = write_lanes(iter(items), [grouped_writer(tmp_path / "one")], queue_size=2)
    many = write_lanes(
        iter(items), [grouped_writer(tmp_path / "many") for _ in range(lanes)], queue_size=2
    )
    assert [p.part for p in many] == sorted(p.part for p in many)
    assert {p.part // 100 for p in many} == set(range(7))
    assert len({p.part for p in many if p.part % 100}) > 0  # some group needs two parts
    assert [(p.part, p.rows, p.bytes, p.sha256) for p in many] == [
        (p.part, p.rows, p.bytes, p.sha256) for p in one
    ]
    for side in ("one", "many"):
        assert list((tmp_path / side / "tmp").iterdir()) == []


def test_lanes_report_an_error_and_publish_nothing_open(tmp_path: Path) -> None:
    items = group_items(4, seed=3)
    items.insert(len(items) // 2, (1, pa.array(["x" * 100_000 + "\n"])))
    writers = [grouped_writer(tmp_path) for _ in range(2)]
    with pytest.raises(RowTooLarge):
        write_lanes(iter(items), writers, queue_size=2)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_lanes_abort_when_the_reader_fails(tmp_path: Path) -> None:
    def items() -> Iterator[tuple[int, pa.Array]]:
        yield from group_items(3, seed=5)
        raise OSError("reader broke")

    with pytest.raises(OSError, match="reader broke"):
        write_lanes(items(), [grouped_writer(tmp_path) for _ in range(2)], queue_size=2)
    assert list((tmp_path / "tmp").iterdir()) == []
