"""One BlobStore suite for both backends (a directory, S3 on moto's server), then S3's extras."""

from __future__ import annotations

import errno
import hashlib
import os
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from rawexport.blobs import BlobStore
from rawexport.blobs.local import LocalBlobStore
from rawexport.blobs.s3 import (
    MAX_PRESIGN_S,
    MIB,
    BlobStoreError,
    BlobStoreUnavailable,
    S3BlobStore,
    unavailable,
)
from tests.s3_util import MotoServer, closed_port

PART_KEY = "ab12_0123456789abcdef_page_v2_202501100000/part-00000-0a1b2c3d-c000.csv.gz"
BAD_KEYS = ["", "/abs", "../x", "a/../b", "a//b", "a/./b", "a\\b", "a/", "a/.staging-x", "a\x00"]


def _s3(moto_s3: tuple[str, str], **options: Any) -> S3BlobStore:
    endpoint, bucket = moto_s3
    options.setdefault("multipart_threshold", 8 * MIB)
    options.setdefault("multipart_chunksize", 8 * MIB)
    return S3BlobStore(bucket, f"t-{uuid.uuid4().hex[:12]}", endpoint_url=endpoint, **options)


def _emptied(store: S3BlobStore) -> None:
    # moto keeps every object in memory for the session: drop this test's.
    for b in store.list(""):
        store.delete(b.key)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "root")
        return
    s3 = _s3(request.getfixturevalue("moto_s3"))
    yield s3
    _emptied(s3)


@pytest.fixture
def s3(moto_s3: tuple[str, str]) -> Iterator[S3BlobStore]:
    store = _s3(moto_s3)
    yield store
    _emptied(store)


def _src(tmp_path: Path, data: bytes, name: str = "src.bin") -> Path:
    p = tmp_path / "src" / name
    p.parent.mkdir(exist_ok=True)
    p.write_bytes(data)
    return p


def _read(store: BlobStore, key: str) -> bytes:
    if isinstance(store, LocalBlobStore):
        return store.path(key).read_bytes()
    assert isinstance(store, S3BlobStore)
    obj = store.client.get_object(Bucket=store.bucket, Key=store.object_key(key))
    return bytes(obj["Body"].read())


def _pending_uploads(store: S3BlobStore) -> list[Any]:
    resp = store.client.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix)
    return list(resp.get("Uploads", []))


def _big(size: int) -> bytes:
    # Not all one byte value, so a misplaced or repeated part changes the content.
    block = hashlib.sha256(b"rawexport").digest() * (MIB // 32)
    return (block * (size // MIB + 1))[:size]


# --- the shared suite ---------------------------------------------------------------------


def test_put_stores_the_file_and_consumes_it(store: BlobStore, tmp_path: Path) -> None:
    src = _src(tmp_path, b"hello")
    before = time.time() * 1000
    store.put(PART_KEY, src)
    assert not src.exists()
    assert _read(store, PART_KEY) == b"hello"
    info = store.stat(PART_KEY)
    assert info is not None and info.key == PART_KEY and info.size == 5
    assert before - 2000 <= info.mtime_ms <= time.time() * 1000 + 2000


def test_put_bytes_and_deep_keys(store: BlobStore) -> None:
    keys = ["a/b/c/d/e.json", "x", "p/q.csv.gz"]
    for i, key in enumerate(keys):
        store.put_bytes(key, b"v" * i)
    for i, key in enumerate(keys):
        assert _read(store, key) == b"v" * i
        info = store.stat(key)
        assert info is not None and info.size == i
    assert [b.key for b in store.list("")] == sorted(keys)


def test_overwrite_by_put_and_put_bytes(store: BlobStore, tmp_path: Path) -> None:
    store.put_bytes("k/v", b"one")
    store.put("k/v", _src(tmp_path, b"two!"))
    assert _read(store, "k/v") == b"two!"
    store.put_bytes("k/v", b"three")
    assert _read(store, "k/v") == b"three"
    assert [(b.key, b.size) for b in store.list("")] == [("k/v", 5)]


def test_stat_of_missing_keys_and_of_prefixes(store: BlobStore) -> None:
    assert store.stat("nope") is None
    store.put_bytes("d/f", b"1")
    assert store.stat("d") is None
    assert store.stat("d/f/g") is None


def test_delete_is_idempotent(store: BlobStore) -> None:
    store.put_bytes("p/q/r", b"1")
    store.put_bytes("p/s", b"2")
    store.delete("p/q/r")
    store.delete("p/q/r")
    store.delete("never/was")
    assert store.stat("p/q/r") is None
    assert [b.key for b in store.list("")] == ["p/s"]


def test_list_is_sorted_and_filtered_by_prefix(store: BlobStore) -> None:
    keys = ["b/2/x", "a/1/z", "a/10/w", "a/2", "ab/c", "a1", "a/1/y"]
    for key in keys:
        store.put_bytes(key, key.encode())
    assert [b.key for b in store.list("")] == sorted(keys)
    assert [b.key for b in store.list("a/")] == ["a/1/y", "a/1/z", "a/10/w", "a/2"]
    assert [b.key for b in store.list("a/1")] == ["a/1/y", "a/1/z", "a/10/w"]
    assert [b.key for b in store.list("a/1/")] == ["a/1/y", "a/1/z"]
    assert [b.key for b in store.list("a")] == sorted(k for k in keys if k.startswith("a"))
    assert [b.key for b in store.list("a/1/y")] == ["a/1/y"]
    assert store.list("c") == []
    assert store.list("zz/top/") == []
    assert {b.key: b.size for b in store.list("b/")} == {"b/2/x": 5}


def test_bad_keys_are_rejected(store: BlobStore, tmp_path: Path) -> None:
    src = _src(tmp_path, b"x")
    for key in BAD_KEYS:
        with pytest.raises(ValueError):
            store.put_bytes(key, b"x")
        with pytest.raises(ValueError):
            store.put(key, src)
        with pytest.raises(ValueError):
            store.stat(key)
        with pytest.raises(ValueError):
            store.delete(key)
    assert src.exists()
    with pytest.raises(ValueError):
        store.list("../")
    assert store.list("") == []


def test_big_put_is_whole_and_multipart_on_s3(store: BlobStore, tmp_path: Path) -> None:
    data = _big(20 * MIB)
    store.put(PART_KEY, _src(tmp_path, data))
    info = store.stat(PART_KEY)
    assert info is not None and info.size == len(data)
    assert _read(store, PART_KEY) == data
    if isinstance(store, S3BlobStore):
        head = store.client.head_object(Bucket=store.bucket, Key=store.object_key(PART_KEY))
        assert head["ETag"].strip('"').endswith("-3")  # 8 + 8 + 4 MiB
        assert store.md5(PART_KEY) == hashlib.md5(data).hexdigest()
        assert _pending_uploads(store) == []


def _fail_local(store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    real_replace = os.replace

    def replace(a: Any, b: Any) -> None:
        if Path(b) == store.path(PART_KEY):
            raise OSError(errno.EIO, "injected")
        real_replace(a, b)

    monkeypatch.setattr(os, "replace", replace)


def _fail_s3_second_part(store: S3BlobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    real = store.client.upload_part
    calls: list[int] = []

    def upload_part(**kwargs: Any) -> Any:
        calls.append(kwargs["PartNumber"])
        if len(calls) > 1:
            raise OSError(errno.EIO, "injected after the first part")
        return real(**kwargs)

    monkeypatch.setattr(store.client, "upload_part", upload_part)


def _fail_s3_complete(store: S3BlobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def complete(**kwargs: Any) -> Any:
        raise KeyboardInterrupt  # not even an Exception: the abort must still run

    monkeypatch.setattr(store.client, "complete_multipart_upload", complete)


@pytest.mark.parametrize("where", ["part", "complete"])
def test_failed_put_leaves_the_old_object_and_nothing_else(
    store: BlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    store.put_bytes(PART_KEY, b"old")
    src = _src(tmp_path, _big(17 * MIB))
    expected: type[BaseException] = OSError
    if isinstance(store, LocalBlobStore):
        _fail_local(store, monkeypatch)
    else:
        assert isinstance(store, S3BlobStore)
        if where == "part":
            _fail_s3_second_part(store, monkeypatch)
        else:
            _fail_s3_complete(store, monkeypatch)
            expected = KeyboardInterrupt
    with pytest.raises(expected):
        store.put(PART_KEY, src)
    monkeypatch.undo()
    assert src.exists()  # not consumed: the caller may retry
    assert _read(store, PART_KEY) == b"old"
    assert [(b.key, b.size) for b in store.list("")] == [(PART_KEY, 3)]
    if isinstance(store, S3BlobStore):
        assert _pending_uploads(store) == []


# --- S3 only ------------------------------------------------------------------------------


def test_from_url(moto_s3: tuple[str, str]) -> None:
    endpoint, bucket = moto_s3
    s = S3BlobStore.from_url(f"s3://{bucket}/exports/prod/", endpoint_url=endpoint)
    assert (s.bucket, s.prefix, s.object_key("a/b")) == (
        bucket,
        "exports/prod/",
        "exports/prod/a/b",
    )
    assert S3BlobStore.from_url(f"s3://{bucket}", endpoint_url=endpoint).prefix == ""
    assert S3BlobStore.from_url(f"s3://{bucket}/", endpoint_url=endpoint).prefix == ""
    for bad in ["file:///x", "s3:///prefix", f"s3://{bucket}/../x", f"s3://{bucket}/a?b=1"]:
        with pytest.raises(ValueError):
            S3BlobStore.from_url(bad, endpoint_url=endpoint)
    with pytest.raises(ValueError):
        S3BlobStore(bucket, endpoint_url=endpoint, multipart_chunksize=MIB)


def test_keys_live_under_the_prefix_and_prefixes_do_not_mix(moto_s3: tuple[str, str]) -> None:
    endpoint, bucket = moto_s3
    base = f"iso-{uuid.uuid4().hex[:8]}"
    p = S3BlobStore(bucket, base, endpoint_url=endpoint)
    pp = S3BlobStore(bucket, base + "x", endpoint_url=endpoint)
    p.put_bytes("k", b"1")
    pp.put_bytes("k", b"22")
    raw = p.client.list_objects_v2(Bucket=bucket, Prefix=base)["Contents"]
    assert sorted(o["Key"] for o in raw) == [f"{base}/k", f"{base}x/k"]
    assert [(b.key, b.size) for b in p.list("")] == [("k", 1)]
    assert [(b.key, b.size) for b in pp.list("")] == [("k", 2)]


def test_list_follows_pages(moto_s3: tuple[str, str]) -> None:
    store = _s3(moto_s3, list_page_size=2)
    keys = [f"h/{i:02d}" for i in range(7)]
    for key in reversed(keys):
        store.put_bytes(key, b"x")
    assert [b.key for b in store.list("h/")] == keys


def test_md5_metadata_on_every_put(s3: S3BlobStore, tmp_path: Path) -> None:
    small, big = b"small part", _big(9 * MIB)
    s3.put_bytes("a.json", small)
    s3.put("b.csv.gz", _src(tmp_path, small))
    s3.put("c.csv.gz", _src(tmp_path, big))
    for key, data in [("a.json", small), ("b.csv.gz", small), ("c.csv.gz", big)]:
        head = s3.client.head_object(Bucket=s3.bucket, Key=s3.object_key(key))
        md5 = hashlib.md5(data).hexdigest()
        assert head["ResponseMetadata"]["HTTPHeaders"]["x-amz-meta-md5-hash"] == md5
        assert s3.md5(key) == md5
    types = {k: s3.client.head_object(Bucket=s3.bucket, Key=s3.object_key(k))["ContentType"]
             for k in ["a.json", "c.csv.gz"]}  # fmt: skip
    assert types == {"a.json": "application/json", "c.csv.gz": "application/gzip"}


def test_md5_without_metadata(s3: S3BlobStore) -> None:
    s3.client.put_object(Bucket=s3.bucket, Key=s3.object_key("plain"), Body=b"abc")
    assert s3.md5("plain") == hashlib.md5(b"abc").hexdigest()  # a single-part ETag
    up = s3.client.create_multipart_upload(Bucket=s3.bucket, Key=s3.object_key("multi"))
    part = s3.client.upload_part(
        Bucket=s3.bucket, Key=s3.object_key("multi"), UploadId=up["UploadId"], PartNumber=1,
        Body=b"abc",
    )  # fmt: skip
    s3.client.complete_multipart_upload(
        Bucket=s3.bucket, Key=s3.object_key("multi"), UploadId=up["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )  # fmt: skip
    assert s3.md5("multi") is None  # a multipart ETag is not an md5
    with pytest.raises(FileNotFoundError):
        s3.md5("missing")


def test_presigned_get_downloads_the_bytes(s3: S3BlobStore) -> None:
    data = _big(MIB + 7)
    s3.put_bytes(PART_KEY, data)
    url = s3.presigned_get(PART_KEY, 300)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["300"]
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.read() == data
        assert r.headers["x-amz-meta-md5-hash"] == hashlib.md5(data).hexdigest()
        assert r.headers["Content-Length"] == str(len(data))
    ranged = urllib.request.Request(url, headers={"Range": "bytes=10-19"})
    with urllib.request.urlopen(ranged, timeout=10) as r:
        assert r.status == 206 and r.read() == data[10:20]


def test_presigned_expiry_is_capped_at_7_days(s3: S3BlobStore) -> None:
    def expires(seconds: int) -> str:
        url = s3.presigned_get("k", seconds)
        return urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["X-Amz-Expires"][0]

    assert MAX_PRESIGN_S == 604800
    assert expires(10**9) == "604800"
    assert expires(604800) == "604800"
    assert expires(0) == "1"


def test_open_range(s3: S3BlobStore) -> None:
    data = bytes(range(256)) * 16
    s3.put_bytes("r", data)
    assert b"".join(s3.open_range("r", 3, 10)) == data[3:10]
    assert b"".join(s3.open_range("r", 0, len(data), chunk_size=1000)) == data
    chunks = list(s3.open_range("r", 100, 3100, chunk_size=1000))
    assert [len(c) for c in chunks] == [1000, 1000, 1000] and b"".join(chunks) == data[100:3100]
    with pytest.raises(FileNotFoundError):
        s3.open_range("missing", 0, 1)
    with pytest.raises(ValueError):
        s3.open_range("r", 5, 5)


def test_check_passes_and_leaves_nothing(s3: S3BlobStore) -> None:
    s3.check()
    assert s3.list("") == []
    raw = s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=s3.prefix)
    assert raw.get("KeyCount", 0) == 0


def test_check_missing_bucket(moto_s3: tuple[str, str]) -> None:
    endpoint, _ = moto_s3
    store = S3BlobStore("no-such-bucket-here", "p", endpoint_url=endpoint)
    with pytest.raises(BlobStoreError, match="bucket 'no-such-bucket-here' does not exist"):
        store.check()
    with pytest.raises(BlobStoreError, match="does not exist.*create it"):
        store.put_bytes("k", b"x")


def test_check_unreachable_endpoint(fake_aws_env: None) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    store = S3BlobStore("b", endpoint_url=endpoint, max_attempts=2, connect_timeout=2)
    started = time.monotonic()
    with pytest.raises(BlobStoreUnavailable, match=f"cannot reach the S3 endpoint {endpoint}"):
        store.check()
    assert time.monotonic() - started < 20


def test_check_denied_credentials(fake_aws_env: None, tmp_path: Path) -> None:
    # moto checks credentials when told to; its IAM knows no access key, so ours is refused.
    with MotoServer(tmp_path / "moto.log", {"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as server:
        store = S3BlobStore("b", endpoint_url=server.endpoint_url, max_attempts=1)
        with pytest.raises(BlobStoreError, match="access key is not known.*AWS_ACCESS_KEY_ID"):
            store.check()
        with pytest.raises(BlobStoreError, match="access key is not known.*AWS_ACCESS_KEY_ID"):
            store.put_bytes("k", b"x")


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("SignatureDoesNotMatch", 403, "check AWS_SECRET_ACCESS_KEY"),
        ("AccessDenied", 403, "bucket policy allows"),
        ("403", 403, "check the credentials"),
        ("NoSuchBucket", 404, "does not exist"),
        ("PermanentRedirect", 301, "another region"),
    ],
)
def test_error_messages(s3: S3BlobStore, code: str, status: int, expected: str) -> None:
    err = ClientError(
        {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject"
    )
    assert expected in s3.explain(err)


@pytest.mark.parametrize(
    ("code", "status", "outage"),
    [
        ("SlowDown", 503, True),
        ("ServiceUnavailable", 503, True),
        ("InternalError", 500, True),
        ("SomethingNew", 502, True),
        ("RequestTimeout", 400, True),
        ("AccessDenied", 403, False),
        ("NoSuchBucket", 404, False),
        ("PermanentRedirect", 301, False),
    ],
)
def test_outages_are_transient_mistakes_are_not(code: str, status: int, outage: bool) -> None:
    """An outage of the endpoint is a TransientError (503 and Retry-After, a job retries); a
    setting to fix is a plain BlobStoreError."""
    err = ClientError(
        {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "HeadObject"
    )
    assert unavailable(err) is outage
    assert unavailable(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    assert unavailable(ReadTimeoutError(endpoint_url="http://127.0.0.1:1"))
    assert not unavailable(NoCredentialsError())
