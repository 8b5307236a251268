"""Spill files: direct (O_DIRECT) and buffered writes read back byte for byte."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from rawexport.export import spill
from rawexport.export.spill import ALIGN, DirectWriter, SpillWriter, read_spill


def batch(n: int, width: int, seed: int) -> pa.RecordBatch:
    lines = [f"{seed}-{i}-" + "x" * ((i * 7919 + seed) % width) + "\n" for i in range(n)]
    return pa.RecordBatch.from_arrays(
        [pa.array(lines, pa.large_string()), pa.array(range(n), pa.int64())], ["line", "k0"]
    )


@pytest.fixture(params=["direct", "buffered"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "buffered":
        monkeypatch.setattr(spill, "_DIRECT", 0)
    return str(request.param)


@pytest.mark.parametrize(
    "sizes",
    [[0], [1], [ALIGN - 1], [ALIGN], [ALIGN + 1], [5000, 3, ALIGN * 3 - 1, 70000, 1]],
)
def test_direct_writer_round_trip(tmp_path: Path, mode: str, sizes: list[int]) -> None:
    path = tmp_path / "f"
    w = DirectWriter(path, staging=2 * ALIGN)
    chunks = [bytes((i + j) % 251 for j in range(n)) for i, n in enumerate(sizes)]
    for c in chunks:
        w.write(c)
    w.close(fsync=True)
    w.close()  # a second close does nothing
    assert path.read_bytes() == b"".join(chunks)


def test_spill_round_trip(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "range.spill"
    batches = [batch(n, w, s) for s, (n, w) in enumerate([(1, 5), (3000, 300), (0, 1), (777, 40)])]
    w = SpillWriter(path, staging=64 << 10)
    for b in batches:
        w.write_batch(b)
    w.close()
    got = list(read_spill(path, batches[0].schema))
    assert [g.to_pydict() for g in got] == [b.to_pydict() for b in batches]


def test_spill_falls_back_where_direct_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def no_direct(path: Any, flags: int, *args: Any) -> int:
        if spill._DIRECT and flags & spill._DIRECT:
            raise OSError(errno.EINVAL, "O_DIRECT not supported")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", no_direct)
    path = tmp_path / "range.spill"
    w = SpillWriter(path)
    assert not w.direct
    b = batch(100, 50, 1)
    w.write_batch(b)
    w.close()
    assert [g.to_pydict() for g in read_spill(path, b.schema)] == [b.to_pydict()]


def test_other_open_errors_are_not_hidden(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        SpillWriter(tmp_path / "missing" / "range.spill")


def write_spill(path: Path, batches: list[pa.RecordBatch]) -> None:
    w = SpillWriter(path, staging=64 << 10)
    for b in batches:
        w.write_batch(b)
    w.close()


def test_read_spills_reads_files_side_by_side_in_order(tmp_path: Path, mode: str) -> None:
    files = {
        f"r{i}.spill": [batch(50 * i + 1, 30 + i, i), batch(7, 900, 100 + i)] for i in range(6)
    }
    for name, bs in files.items():
        write_spill(tmp_path / name, bs)
    paths = [tmp_path / name for name in files]
    got = spill.read_spills(paths, batch(1, 1, 0).schema, spill.ReadBuffers())
    assert [g.to_pydict() for g in got] == [b.to_pydict() for bs in files.values() for b in bs]
    assert not any(p.exists() for p in paths)  # each file is gone once read


def test_read_buffers_reuse_only_what_nothing_refers_to(tmp_path: Path) -> None:
    buffers = spill.ReadBuffers(keep=2)
    schema = batch(1, 1, 0).schema

    def group(seed: int) -> list[pa.RecordBatch]:
        path = tmp_path / f"g{seed}.spill"
        write_spill(path, [batch(2000, 200, seed)])
        return spill.read_spills([path], schema, buffers)

    first, second = group(1), group(2)
    want_first = batch(2000, 200, 1).to_pydict()
    assert len(buffers) == 2
    third = group(3)  # both buffers are in use: a third one, nothing overwritten
    assert len(buffers) == 3
    assert first[0].to_pydict() == want_first
    assert second[0].to_pydict() == batch(2000, 200, 2).to_pydict()
    del first, second
    fourth = group(4)  # a freed buffer is taken again
    assert len(buffers) == 3
    assert third[0].to_pydict() == batch(2000, 200, 3).to_pydict()
    assert fourth[0].to_pydict() == batch(2000, 200, 4).to_pydict()


def test_read_ranges_gives_range_after_range_and_reads_ahead(
    tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each range's batches in order, its files gone once given; while the caller holds
    the first range, the pieces of the others are read (a sort overlaps the reads)."""
    monkeypatch.setattr(spill, "READ_CHUNK", 2 * ALIGN)  # many pieces per file
    ranges: list[list[Path]] = []
    want: list[list[dict[str, Any]]] = []
    for r, files in enumerate([2, 1, 3]):
        ranges.append([])
        want.append([])
        for i in range(files):
            bs = [batch(300 + 40 * i, 90, 10 * r + i), batch(3, 7, 100 * r + i)]
            ranges[-1].append(tmp_path / f"r{r}-{i}.spill")
            write_spill(ranges[-1][-1], bs)
            want[-1] += [b.to_pydict() for b in bs]
    pieces = sum(-(-p.stat().st_size // (2 * ALIGN)) for files in ranges for p in files)
    read: list[int] = []
    real = spill._read_piece

    def counted(*args: Any) -> None:
        real(*args)
        read.append(1)

    monkeypatch.setattr(spill, "_read_piece", counted)
    got = spill.read_ranges(ranges, batch(1, 1, 0).schema, spill.ReadBuffers())
    first = next(got)
    assert [b.to_pydict() for b in first] == want[0]
    assert not any(p.exists() for p in ranges[0]) and all(p.exists() for p in ranges[2])
    deadline = time.monotonic() + 5
    while len(read) < pieces:  # read ahead, with nobody asking yet
        assert time.monotonic() < deadline, f"{len(read)} of {pieces} pieces read"
        time.sleep(0.01)
    rest = [[b.to_pydict() for b in bs] for bs in got]
    assert rest == want[1:]
    assert not any(p.exists() for files in ranges for p in files)


def test_read_ranges_stopped_early_or_cut_short_lets_go(tmp_path: Path, mode: str) -> None:
    paths = [tmp_path / f"r{i}.spill" for i in range(3)]
    for i, p in enumerate(paths):
        write_spill(p, [batch(2000, 200, i)])
    schema = batch(1, 1, 0).schema
    got = spill.read_ranges([[p] for p in paths], schema)
    next(got)
    got.close()  # the caller gave up: reads end, descriptors are closed
    assert paths[1].exists()
    assert not [fd for fd in os.listdir("/proc/self/fd") if _points_to(fd, tmp_path)]
    with open(paths[2], "r+b") as f:
        f.truncate(paths[2].stat().st_size // 2)
    with pytest.raises(OSError, match="ended early"):
        list(spill.read_ranges([[paths[1]], [paths[2]]], schema))


def _points_to(fd: str, where: Path) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}").startswith(str(where))
    except OSError:
        return False


def test_read_ranges_that_cannot_open_a_file_closes_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [tmp_path / f"r{i}.spill" for i in range(3)]
    for i, p in enumerate(paths):
        write_spill(p, [batch(10, 20, i)])
    real = spill._open

    def refuse_the_third(path: Path, flags: int) -> tuple[int, bool]:
        if path == paths[2]:
            raise PermissionError(errno.EACCES, "no", str(path))
        return real(path, flags)

    monkeypatch.setattr(spill, "_open", refuse_the_third)
    with pytest.raises(PermissionError):
        list(spill.read_ranges([paths[:2], paths[2:]], batch(1, 1, 0).schema))
    assert not [fd for fd in os.listdir("/proc/self/fd") if _points_to(fd, tmp_path)]
