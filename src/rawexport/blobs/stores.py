"""The blob store a URL names: `file:///DIR` (or none: the default directory) or `s3://`."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from rawexport.blobs import BlobStore
from rawexport.blobs.local import LocalBlobStore
from rawexport.blobs.s3 import S3BlobStore


def open_blob_store(
    url: str, default_dir: Path, *, endpoint_url: str = "", region: str = ""
) -> BlobStore:
    """LocalBlobStore for "" or file:///DIR, S3BlobStore for s3://bucket/prefix."""
    if not url:
        return LocalBlobStore(default_dir)
    if url.startswith("file://"):
        return LocalBlobStore(Path(unquote(urlsplit(url).path)))
    if url.startswith("s3://"):
        return S3BlobStore.from_url(url, endpoint_url=endpoint_url or None, region=region or None)
    raise ValueError(f"a blob store URL is file:// or s3://, not {url!r}")
