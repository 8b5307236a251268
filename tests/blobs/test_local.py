"""LocalBlobStore: atomic puts, listing, deletes, and keys that cannot escape the root."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from rawexport.blobs import BlobStore
from rawexport.blobs.local import LocalBlobStore


def _src(tmp_path: Path, data: bytes, name: str = "src.bin") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_is_a_blob_store(tmp_path: Path) -> None:
    store: BlobStore = LocalBlobStore(tmp_path / "root")
    store.put_bytes("a/b.txt", b"x")
    assert store.stat("a/b.txt") is not None


def test_put_moves_file_into_place(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "root")
    src = _src(tmp_path, b"hello")
    store.put("abcd_x_page_v2_202001010000/part-00000.csv.gz", src)
    assert not src.exists()
    target = store.path("abcd_x_page_v2_202001010000/part-00000.csv.gz")
    assert target == tmp_path / "root" / "abcd_x_page_v2_202001010000" / "part-00000.csv.gz"
    assert target.read_bytes() == b"hello"
    info = store.stat("abcd_x_page_v2_202001010000/part-00000.csv.gz")
    assert info is not None and info.size == 5 and info.mtime_ms > 0


def test_put_overwrites(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "root")
    store.put_bytes("k/v", b"one")
    store.put("k/v", _src(tmp_path, b"two"))
    assert store.path("k/v").read_bytes() == b"two"
    store.put_bytes("k/v", b"three")
    assert store.path("k/v").read_bytes() == b"three"
    assert [b.key for b in store.list("")] == ["k/v"]


def test_put_across_filesystems_copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalBlobStore(tmp_path / "root")
    src = _src(tmp_path, b"data" * 1000)
    real_replace = os.replace

    def replace(a: str | Path, b: str | Path) -> None:
        if Path(a) == src:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(a, b)

    monkeypatch.setattr(os, "replace", replace)
    store.put("x/y.bin", src)
    assert store.path("x/y.bin").read_bytes() == b"data" * 1000
    assert not src.exists()
    assert [p.name for p in store.path("x/y.bin").parent.iterdir()] == ["y.bin"]


def test_stat_missing_and_directories(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "root")
    assert store.stat("nope") is None
    store.put_bytes("d/f", b"1")
    assert store.stat("d") is None
    assert store.stat("d/f/g") is None


def test_delete_is_idempotent_and_prunes_empty_dirs(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "root")
    store.put_bytes("p/q/r", b"1")
    store.delete("p/q/r")
    store.delete("p/q/r")
    assert store.stat("p/q/r") is None
    assert not (tmp_path / "root" / "p").exists()
    assert (tmp_path / "root").is_dir()


def test_list_by_prefix_sorted(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "root")
    keys = [
        "ab12_x_page_v2_202001010000/part-00001.csv.gz",
        "ab12_x_page_v2_202001010000/part-00000.csv.gz",
        "ab12_x_page_v2_202001010000/_manifest.json",
        "ab13_x_page_v2_202001010100/part-00000.csv.gz",
        "cd34_x_visit_v2_202001010000/part-00000.csv.gz",
        "top",
    ]
    for k in keys:
        store.put_bytes(k, k.encode())
    assert [b.key for b in store.list("")] == sorted(keys)
    assert [b.key for b in store.list("ab1")] == sorted(k for k in keys if k.startswith("ab1"))
    folder = "ab12_x_page_v2_202001010000/"
    assert [b.key for b in store.list(folder + "part-")] == [
        folder + "part-00000.csv.gz",
        folder + "part-00001.csv.gz",
    ]
    assert store.list("zz") == []
    assert store.list("nodir/x") == []
    sizes = {b.key: b.size for b in store.list("")}
    assert sizes["top"] == 3


def test_staging_files_are_invisible(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "root")
    store.put_bytes("a/b", b"1")
    (tmp_path / "root" / "a" / ".staging-123").write_bytes(b"partial")
    assert [b.key for b in store.list("")] == ["a/b"]
    with pytest.raises(ValueError):
        store.put_bytes("a/.staging-123", b"x")


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/etc/passwd",
        "../x",
        "a/../../x",
        "a/..",
        "..",
        "a/./b",
        ".",
        "a//b",
        "a/",
        "a\\..\\b",
        "a\\b",
        "a\x00b",
    ],
)
def test_escaping_keys_rejected(tmp_path: Path, key: str) -> None:
    store = LocalBlobStore(tmp_path / "root")
    src = _src(tmp_path, b"x")
    with pytest.raises(ValueError):
        store.put(key, src)
    with pytest.raises(ValueError):
        store.put_bytes(key, b"x")
    with pytest.raises(ValueError):
        store.path(key)
    with pytest.raises(ValueError):
        store.stat(key)
    with pytest.raises(ValueError):
        store.delete(key)
    assert src.exists()
    assert not (tmp_path / "x").exists()


def test_put_survives_a_concurrent_prune(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalBlobStore(tmp_path / "root")
    src = _src(tmp_path, b"data")
    real_replace = os.replace
    calls: list[str | Path] = []

    def replace(a: str | Path, b: str | Path) -> None:
        if not calls:  # a delete() elsewhere prunes the fresh, still empty directory
            os.rmdir(Path(b).parent)
        calls.append(b)
        real_replace(a, b)

    monkeypatch.setattr(os, "replace", replace)
    store.put("p/q.bin", src)
    assert len(calls) == 2
    assert store.path("p/q.bin").read_bytes() == b"data"
