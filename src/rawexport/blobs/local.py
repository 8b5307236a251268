"""A blob store in a local directory: key `a/b.csv.gz` is the file `root/a/b.csv.gz`."""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from stat import S_ISREG

from rawexport.blobs import BlobInfo
from rawexport.fsutil import fsync_path

# Staging files live next to their target (same filesystem, so os.replace is atomic);
# keys may not use this prefix and listings skip it.
_STAGING = ".staging-"


def check_key(key: str) -> str:
    """key itself when it is a safe relative key; ValueError otherwise."""
    bad = (
        not key
        or key.startswith("/")
        or "\\" in key
        or "\x00" in key
        or ".." in key
        or any(seg in ("", ".") or seg.startswith(_STAGING) for seg in key.split("/"))
    )
    if bad:
        raise ValueError(f"invalid blob key {key!r}")
    return key


class LocalBlobStore:
    """BlobStore on a directory; every write is atomic and durable (fsync file and dir)."""

    local = True

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """The file holding key (it may not exist); for serving downloads."""
        return self.root.joinpath(*check_key(key).split("/"))

    local_path = path

    def download_url(self, key: str, expires_s: int) -> str:
        raise ValueError("a local blob store's files are sent by the server")

    def etag(self, key: str) -> str | None:
        return None  # the catalog holds each part's md5

    def probe(self) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        probe = self.root / f".rawexport-check-{uuid.uuid4().hex}"
        probe.write_bytes(b"probe")
        probe.unlink()
        return f"directory {self.root}, writable"

    def fetch(self, key: str, dest: Path) -> None:
        src = self.path(key)
        try:
            os.link(src, dest)  # same file system: no copy (stored files never change)
        except OSError as e:
            if isinstance(e, FileNotFoundError):
                raise
            shutil.copyfile(src, dest)

    def _target_dir(self, target: Path) -> None:
        missing: list[Path] = []
        parent = target.parent
        while not parent.is_dir():
            missing.append(parent)
            parent = parent.parent
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:
                continue
            fsync_path(d.parent)

    def _staging(self, target: Path) -> Path:
        return target.with_name(f"{_STAGING}{uuid.uuid4().hex}")

    def _commit(self, staged: Path, target: Path) -> None:
        os.replace(staged, target)
        fsync_path(target.parent)

    def _retry_if_dir_vanished(self, target: Path, action: Callable[[], None]) -> None:
        # delete() prunes empty directories; one racing with us is recreated once.
        for attempt in (0, 1):
            self._target_dir(target)
            try:
                action()
                return
            except FileNotFoundError:
                if attempt or target.parent.is_dir():
                    raise

    def put(self, key: str, src: Path) -> None:
        target = self.path(key)
        fsync_path(src)
        try:
            self._retry_if_dir_vanished(target, lambda: self._commit(src, target))
            return
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
        self._retry_if_dir_vanished(target, lambda: self._write_staged(target, src=src))
        src.unlink()

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self.path(key)
        self._retry_if_dir_vanished(target, lambda: self._write_staged(target, data=data))

    def _write_staged(self, target: Path, *, src: Path | None = None, data: bytes = b"") -> None:
        staged = self._staging(target)
        try:
            with open(staged, "xb") as f:
                if src is None:
                    f.write(data)
                else:
                    with open(src, "rb") as fin:
                        shutil.copyfileobj(fin, f, 1 << 20)
                f.flush()
                os.fsync(f.fileno())
            self._commit(staged, target)
        finally:
            staged.unlink(missing_ok=True)

    def stat(self, key: str) -> BlobInfo | None:
        try:
            st = self.path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not S_ISREG(st.st_mode):
            return None
        return BlobInfo(key, st.st_size, st.st_mtime_ns // 1_000_000)

    def delete(self, key: str) -> None:
        target = self.path(key)
        target.unlink(missing_ok=True)
        parent = target.parent
        while parent != self.root and parent.is_relative_to(self.root):
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def list(self, prefix: str) -> list[BlobInfo]:
        head, _, _ = prefix.rpartition("/")
        start = self.path(head) if head else self.root
        if not start.is_dir():
            return []
        found: list[BlobInfo] = []
        for dirpath, dirnames, filenames in os.walk(start):
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            base = "" if rel_dir == "." else f"{rel_dir}/"
            dirnames[:] = sorted(
                d
                for d in dirnames
                if not d.startswith(_STAGING)
                and (prefix.startswith(f"{base}{d}/") or f"{base}{d}/".startswith(prefix))
            )
            for fname in filenames:
                if fname.startswith(_STAGING):
                    continue
                key = f"{base}{fname}"
                if not key.startswith(prefix):
                    continue
                try:
                    st = os.stat(os.path.join(dirpath, fname))
                except FileNotFoundError:
                    continue
                found.append(BlobInfo(key, st.st_size, st.st_mtime_ns // 1_000_000))
        found.sort(key=lambda b: b.key)
        return found
