"""A blob store on S3 or any S3-compatible endpoint: key `a/b` is the object `{prefix}a/b`.

Writes are atomic the way S3 makes them: a single PUT, or a multipart upload that becomes
visible only when it completes; a failed multipart upload is aborted so no parts linger.
Every object carries its md5 as user metadata (`x-amz-meta-md5-hash`), which GrowingIO's
clients read from the download's headers.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from rawexport.blobs import BlobInfo, media_type
from rawexport.blobs.local import check_key
from rawexport.errors import RawexportError, TransientError

log = logging.getLogger(__name__)

MIB = 1 << 20
MIN_PART = 5 * MIB  # S3's smallest part (all but the last)
MAX_PRESIGN_S = 7 * 24 * 3600  # SigV4 presigned URLs live at most 7 days
MD5_META = "md5-hash"  # sent as x-amz-meta-md5-hash

_DENIED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden"}
_NO_BUCKET = {"NoSuchBucket"}
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_WRONG_REGION = {"301", "PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocation"}
# Answers of a store that is overloaded or failing for now (any 5xx counts too).
_BUSY = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling"}


class BlobStoreError(RawexportError):
    """An S3 call failed; the message says what to fix (credentials, bucket, endpoint).

    As such it is neither transient nor permanent: wrong credentials, a missing bucket or
    another region fail until the operator fixes the settings (an export job retries, and
    ends in ERROR when the same failure repeats; the API answers 500)."""


class BlobStoreUnavailable(BlobStoreError, TransientError):
    """The S3 endpoint cannot be reached, timed out, broke the connection or answered 5xx
    (SlowDown...): the same call may work later (503 and Retry-After; a job retries)."""

    backend = "the blob store"


def unavailable(e: BaseException) -> bool:
    """Whether a botocore error is an outage of the endpoint rather than a mistake."""
    if isinstance(e, BotoConnectionError | HTTPClientError):
        return True  # refused, DNS, connect/read timeouts, connection closed or reset
    return isinstance(e, ClientError) and (_status(e) >= 500 or _code(e) in _BUSY)


def _code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def _status(e: ClientError) -> int:
    return int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _md5_header(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _chunks(body: Any, size: int) -> Iterator[bytes]:
    try:
        while chunk := body.read(size):
            yield bytes(chunk)
    finally:
        body.close()


class S3BlobStore:
    """BlobStore on an S3 bucket under a key prefix; credentials given, or boto3's chain."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        multipart_threshold: int = 16 * MIB,
        multipart_chunksize: int = 8 * MIB,
        max_attempts: int = 5,
        connect_timeout: float = 10,
        read_timeout: float = 60,
        addressing_style: str | None = None,
        list_page_size: int = 1000,
        credentials: Mapping[str, str] | None = None,
    ) -> None:
        if not bucket:
            raise ValueError("S3 blob store needs a bucket")
        if multipart_chunksize < MIN_PART:
            raise ValueError(f"multipart_chunksize must be at least {MIN_PART} bytes (S3's limit)")
        prefix = prefix.strip("/")
        self.bucket = bucket
        self.prefix = f"{check_key(prefix)}/" if prefix else ""
        self.endpoint_url = endpoint_url
        self.multipart_threshold = multipart_threshold
        self.multipart_chunksize = multipart_chunksize
        self.list_page_size = list_page_size
        options: dict[str, Any] = {
            # SigV4 everywhere: presigned URLs otherwise fall back to SigV2 in us-east-1.
            "signature_version": "s3v4",
            "retries": {"max_attempts": max_attempts, "mode": "standard"},
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            "s3": {"addressing_style": addressing_style or "auto"},
        }
        try:
            # botocore >= 1.36 adds CRC checksums to every upload by default, which many
            # S3-compatible stores reject; we send Content-MD5 ourselves instead.
            config = Config(
                **options,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )
        except TypeError:  # older botocore: no default checksums, nothing to turn off
            config = Config(**options)
        # credentials: access_key_id, secret_access_key (and session_token) of this store
        # alone (a customer's bucket); None: boto3's default chain.
        keys = credentials or {}
        session = boto3.session.Session(
            aws_access_key_id=keys.get("access_key_id") or None,
            aws_secret_access_key=keys.get("secret_access_key") or None,
            aws_session_token=keys.get("session_token") or None,
        )
        self.client: Any = session.client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config
        )

    @classmethod
    def from_url(
        cls, url: str, endpoint_url: str | None = None, region: str | None = None, **options: Any
    ) -> S3BlobStore:
        """The store of `s3://bucket/prefix` (prefix optional); options go to __init__."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"not an s3://bucket/prefix URL: {url!r}")
        return cls(parts.netloc, parts.path, endpoint_url=endpoint_url, region=region, **options)

    def __repr__(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"S3BlobStore(s3://{self.bucket}/{self.prefix}{where})"

    def object_key(self, key: str) -> str:
        """The S3 object key of blob key (prefix included)."""
        return self.prefix + check_key(key)

    # --- writes ---------------------------------------------------------------------------

    def put(self, key: str, src: Path) -> None:
        """Upload src (multipart above the threshold), then delete it; src stays on failure."""
        okey = self.object_key(key)
        size = src.stat().st_size
        h = hashlib.md5(usedforsecurity=False)
        with src.open("rb") as f:
            while chunk := f.read(MIB):
                h.update(chunk)
        with self._errors(f"upload of {key}"):
            if size > self.multipart_threshold:
                self._multipart(okey, src, h.hexdigest())
            else:
                with src.open("rb") as f:
                    self.client.put_object(
                        Body=f,
                        ContentLength=size,
                        ContentMD5=_md5_header(h.digest()),
                        **self._object_args(okey, h.hexdigest()),
                    )
        src.unlink()

    def put_bytes(self, key: str, data: bytes) -> None:
        okey = self.object_key(key)
        digest = hashlib.md5(data, usedforsecurity=False)
        with self._errors(f"upload of {key}"):
            self.client.put_object(
                Body=data,
                ContentMD5=_md5_header(digest.digest()),
                **self._object_args(okey, digest.hexdigest()),
            )

    def _object_args(self, okey: str, md5: str) -> dict[str, Any]:
        return {
            "Bucket": self.bucket,
            "Key": okey,
            "ContentType": media_type(okey),  # what local downloads send too
            "Metadata": {MD5_META: md5},
        }

    def _multipart(self, okey: str, src: Path, md5: str) -> None:
        upload_id = self.client.create_multipart_upload(**self._object_args(okey, md5))["UploadId"]
        try:
            parts = []
            with src.open("rb") as f:
                number = 1
                while chunk := f.read(self.multipart_chunksize):
                    part_md5 = hashlib.md5(chunk, usedforsecurity=False).digest()
                    resp = self.client.upload_part(
                        Bucket=self.bucket,
                        Key=okey,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                        ContentMD5=_md5_header(part_md5),
                    )
                    parts.append({"PartNumber": number, "ETag": resp["ETag"]})
                    number += 1
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=okey,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            # Uploaded parts are stored (and billed) until the upload is aborted.
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=okey, UploadId=upload_id)
            except Exception:
                log.warning(
                    "could not abort multipart upload %s of s3://%s/%s; a bucket lifecycle "
                    "rule (AbortIncompleteMultipartUpload) will clean it up",
                    upload_id,
                    self.bucket,
                    okey,
                    exc_info=True,
                )
            raise

    def delete(self, key: str) -> None:
        okey = self.object_key(key)
        with self._errors(f"delete of {key}"):
            self.client.delete_object(Bucket=self.bucket, Key=okey)

    # --- reads ----------------------------------------------------------------------------

    def _head(self, key: str) -> dict[str, Any] | None:
        okey = self.object_key(key)
        with self._errors(f"stat of {key}"):
            try:
                head: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=okey)
            except ClientError as e:
                if _code(e) in _NOT_FOUND:
                    return None
                raise
        return head

    def stat(self, key: str) -> BlobInfo | None:
        head = self._head(key)
        if head is None:
            return None
        mtime_ms = int(head["LastModified"].timestamp() * 1000)
        return BlobInfo(key, int(head["ContentLength"]), mtime_ms)

    def md5(self, key: str) -> str | None:
        """The object's md5 (its metadata, else a single-part ETag), None when unknown.

        Raises FileNotFoundError when key does not exist.
        """
        head = self._head(key)
        if head is None:
            raise FileNotFoundError(key)
        meta: dict[str, str] = head.get("Metadata") or {}
        if MD5_META in meta:
            return str(meta[MD5_META])
        etag = str(head.get("ETag", "")).strip('"')
        return etag if len(etag) == 32 and "-" not in etag else None

    def list(self, prefix: str) -> list[BlobInfo]:
        head, _, _ = prefix.rpartition("/")
        if head:
            check_key(head)  # rejects what LocalBlobStore.list rejects
        found: list[BlobInfo] = []
        with self._errors(f"listing of {prefix!r}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket,
                Prefix=self.prefix + prefix,
                PaginationConfig={"PageSize": self.list_page_size},
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    found.append(
                        BlobInfo(
                            str(obj["Key"])[len(self.prefix) :],
                            int(obj["Size"]),
                            int(obj["LastModified"].timestamp() * 1000),
                        )
                    )
        found.sort(key=lambda b: b.key)
        return found

    def fetch(self, key: str, dest: Path) -> None:
        with self._errors(f"read of {key}"):
            try:
                self.client.download_file(self.bucket, self.object_key(key), str(dest))
            except ClientError as e:
                if _code(e) in _NOT_FOUND or _status(e) == 404:
                    raise FileNotFoundError(key) from e
                raise

    def open_range(self, key: str, start: int, end: int, chunk_size: int = MIB) -> Iterator[bytes]:
        """Bytes [start, end) of key as chunks, for proxying a download.

        The GET is sent before this returns, so a missing key raises FileNotFoundError here,
        not in the middle of a response. Close the iterator to release the connection early.
        """
        if not 0 <= start < end:
            raise ValueError(f"bad range [{start}, {end})")
        okey = self.object_key(key)
        with self._errors(f"read of {key}"):
            try:
                resp = self.client.get_object(
                    Bucket=self.bucket, Key=okey, Range=f"bytes={start}-{end - 1}"
                )
            except ClientError as e:
                if _code(e) in _NOT_FOUND:
                    raise FileNotFoundError(key) from e
                raise
        return _chunks(resp["Body"], chunk_size)

    local = False

    def local_path(self, key: str) -> Path:
        raise ValueError(f"{self!r} holds no local files")

    def download_url(self, key: str, expires_s: int) -> str:
        return self.presigned_get(key, expires_s)

    def etag(self, key: str) -> str | None:
        return self.md5(key)

    def probe(self) -> str:
        self.check()
        return f"{self!r}: probe object put, read and deleted"

    def presigned_get(self, key: str, expires_s: int) -> str:
        """A presigned GET URL of key, valid for expires_s seconds (at most 7 days)."""
        okey = self.object_key(key)
        expires = max(1, min(int(expires_s), MAX_PRESIGN_S))
        with self._errors(f"presigning {key}"):
            url: str = self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": okey}, ExpiresIn=expires
            )
        return url

    # --- health ---------------------------------------------------------------------------

    def check(self) -> None:
        """Probe the bucket: head it, put, head and delete a small object; raise BlobStoreError."""
        with self._errors("bucket check"):
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError:
                # A HEAD answer has no body, so only its status: a GET says which error.
                self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
                raise
        probe = f".rawexport-check-{uuid.uuid4().hex}"
        self.put_bytes(probe, b"rawexport check\n")
        try:
            info = self.stat(probe)
            if info is None:
                raise BlobStoreError(
                    f"s3://{self.bucket}/{self.prefix}: a probe object written was not readable "
                    "back; is the endpoint a consistent S3 store?"
                )
        finally:
            self.delete(probe)

    # --- errors ---------------------------------------------------------------------------

    def _errors(self, action: str) -> _ErrorMapper:
        return _ErrorMapper(self, action)

    def explain(self, e: BaseException) -> str:
        """What went wrong with e, and what to fix."""
        where = f"s3://{self.bucket}/{self.prefix}"
        endpoint = self.endpoint_url or "the AWS default endpoint"
        if isinstance(e, NoCredentialsError | PartialCredentialsError):
            return (
                f"no usable AWS credentials for {where}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or an instance role)"
            )
        if isinstance(e, EndpointConnectionError | ConnectTimeoutError):
            return f"cannot reach the S3 endpoint {endpoint} ({e}); check endpoint_url and network"
        if isinstance(e, HTTPClientError):
            return f"the S3 endpoint {endpoint} did not answer properly ({e}); is it up?"
        if isinstance(e, ClientError):
            code = _code(e)
            if code in _NO_BUCKET or (code == "404" and not e.operation_name.endswith("Object")):
                return (
                    f"bucket {self.bucket!r} does not exist at {endpoint}: "
                    "create it or fix the s3:// URL"
                )
            if code == "InvalidAccessKeyId":
                return (
                    f"access denied to {where}: the access key is not known to {endpoint}; "
                    "check AWS_ACCESS_KEY_ID"
                )
            if code == "SignatureDoesNotMatch":
                return (
                    f"access denied to {where}: the signature does not match; "
                    "check AWS_SECRET_ACCESS_KEY"
                )
            if code in _DENIED or _status(e) == 403:
                return (
                    f"access denied to {where} at {endpoint}: check the credentials "
                    "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) and that the bucket policy "
                    "allows s3:ListBucket, s3:GetObject, s3:PutObject, s3:DeleteObject"
                )
            if code in _WRONG_REGION:
                return f"bucket {self.bucket!r} is in another region: set the region ({code})"
            return f"S3 error {code or _status(e)} on {where}: {e}"
        return f"S3 call on {where} failed: {e}"


class _ErrorMapper:
    """Turns botocore errors into BlobStoreError with a message from S3BlobStore.explain."""

    def __init__(self, store: S3BlobStore, action: str) -> None:
        self.store = store
        self.action = action

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, ClientError | BotoCoreError):
            kind = BlobStoreUnavailable if unavailable(exc) else BlobStoreError
            raise kind(f"{self.action}: {self.store.explain(exc)}") from exc
