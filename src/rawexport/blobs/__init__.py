"""Blob stores for export files: a local directory or S3, picked by URL scheme."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    mtime_ms: int


class BlobStore(Protocol):
    """Where export parts and manifests live. Keys are `/`-separated, never absolute.

    `local` tells how downloads reach the objects: files of this host that the server
    sends itself (`local_path`), or objects clients fetch from the store by a URL it signs
    (`download_url`, `etag` for a HEAD)."""

    local: bool

    def put(self, key: str, src: Path) -> None:
        """Store the file at src under key, atomically (whole or not at all); src is consumed."""

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store data under key, atomically."""

    def stat(self, key: str) -> BlobInfo | None:
        """Size and mtime of key, or None when it does not exist."""

    def delete(self, key: str) -> None:
        """Remove key; no error when it is already gone."""

    def list(self, prefix: str) -> list[BlobInfo]:
        """Every key starting with prefix, sorted."""

    def fetch(self, key: str, dest: Path) -> None:
        """Copy key's bytes into the file dest (FileNotFoundError when key is missing)."""

    def local_path(self, key: str) -> Path:
        """The file of key on this host (it may not exist); ValueError when the key would
        escape the store's root, or when the store holds no local files (not `local`)."""

    def download_url(self, key: str, expires_s: int) -> str:
        """A URL clients may GET key from for expires_s seconds (a store that is not
        `local`); ValueError for a local store, whose files the server sends itself."""

    def etag(self, key: str) -> str | None:
        """The md5 the store keeps of key's bytes, when it keeps one."""

    def probe(self) -> str:
        """Write, read back and delete a probe object; what works, or raise (OSError,
        BlobStoreError) saying what to fix."""


def media_type(key: str) -> str:
    """The Content-Type of an export object: parts are gzip, manifests JSON."""
    if key.endswith(".gz"):
        return "application/gzip"
    if key.endswith(".json"):
        return "application/json"
    return "application/octet-stream"
