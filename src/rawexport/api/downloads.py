"""Serving export files of the local blob store: signed GET/HEAD with ETag and one Range."""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from rawexport.api.cache import Fresh
from rawexport.api.errors import error_response
from rawexport.api.limits import SENDFILE
from rawexport.blobs import BlobStore, links, media_type
from rawexport.catalog import Catalog
from rawexport.errors import UserError
from rawexport.timeutil import DAY_MS, HOUR_MS, BadDate, parse_export_date, parse_utc_stamp

CHUNK = 1024 * 1024  # 64 KiB chunks serve 5x slower (PERF_NOTES)
_RANGE_SPEC = re.compile(r"(\d{0,18})-(\d{0,18})")


class KeyConvertor(Convertor[str]):
    """Export keys only, so the download route cannot shadow any other route."""

    regex = r"[0-9a-f]{1,60}_[0-9a-f]+_[a-z0-9_]+_(?:\d{12}|\d{8})/[A-Za-z0-9_-][A-Za-z0-9._-]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("exportkey", KeyConvertor())


class Unsatisfiable(UserError, ValueError):
    """A Range header this server will not answer with 206."""

    status = 416

    def public(self) -> str:
        return "Range Not Satisfiable"


def _one_range(spec: str, size: int) -> tuple[int, int] | None:
    """[start, end) of one `a-b`, `a-` or `-n`; None when not satisfiable; raises when
    malformed."""
    m = _RANGE_SPEC.fullmatch(spec.strip())
    if m is None or not (m[1] or m[2]):
        raise Unsatisfiable(spec)
    if not m[1]:
        n = int(m[2])
        return (max(size - n, 0), size) if n and size else None
    start = int(m[1])
    end = int(m[2]) + 1 if m[2] else size
    if m[2] and end <= start:
        raise Unsatisfiable(spec)  # last < first: invalid, not merely unsatisfiable
    return (start, min(end, size)) if start < size else None


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The byte range to serve as [start, end), or None to serve the whole file.

    RFC 9110 14.2: a Range of another unit than `bytes` (or no unit) is ignored; of
    several byte ranges, when any is satisfiable, the whole file is served (a server may
    ignore Range; no multipart answers here). Empty list elements (`bytes=0-1,`, `, 0-1`)
    are ignored (RFC 9110 5.6.1). Malformed or unsatisfiable ranges, or none at all, raise
    Unsatisfiable (416).
    """
    unit, eq, specs = header.strip().partition("=")
    if not eq or unit.strip().lower() != "bytes":
        return None
    elements = [spec for spec in specs.split(",") if spec.strip()]
    if not elements:
        raise Unsatisfiable(header)
    ranges = [_one_range(spec, size) for spec in elements]
    satisfiable = [r for r in ranges if r is not None]
    if not satisfiable:
        raise Unsatisfiable(header)
    return satisfiable[0] if len(ranges) == 1 else None


def etag_matches(header: str | None, etag: str) -> bool:
    """If-None-Match: `*`, or a list of tags compared weakly (`W/"x"` matches `"x"`)."""
    if header is None:
        return False
    tags = [tag.strip() for tag in header.split(",")]
    return any(tag == "*" or tag.removeprefix("W/") == etag for tag in tags)


def file_md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class RangeFileResponse(Response):
    """Bytes [start, end) of a file; headers are given complete. Sent with sendfile when
    the server offers it (api/limits.py, under `rawexport serve`), else in 1 MiB chunks."""

    def __init__(
        self, path: Path, start: int, end: int, status_code: int, headers: dict[str, str]
    ) -> None:
        self.path, self.start, self.end = path, start, end
        self.status_code = status_code
        self.media_type = None
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = {"type": "http.response.start", "status": self.status_code}
        sendfile = scope.get("extensions", {}).get(SENDFILE)
        if sendfile is not None and scope["method"] != "HEAD" and self.start < self.end:
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except OSError:
                await not_found()(scope, receive, send)
                return
            try:
                await send({**start, "headers": self.raw_headers})
                await sendfile["send"](fd, self.start, self.end - self.start)
            finally:
                os.close(fd)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        await send({**start, "headers": self.raw_headers})
        if scope["method"] == "HEAD" or self.start >= self.end:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        spec = scope.get("asgi", {}).get("spec_version", "2.0")
        if tuple(map(int, spec.split("."))) >= (2, 4):
            await self._stream(send)
            return
        # Before ASGI 2.4 a send after the client left is silently dropped: stop reading.
        async with anyio.create_task_group() as tg:

            async def run(func: Callable[[], Any]) -> None:
                await func()
                tg.cancel_scope.cancel()

            tg.start_soon(run, partial(self._stream, send))
            await run(partial(self._disconnected, receive))

    async def _stream(self, send: Send) -> None:
        f = await anyio.open_file(self.path, "rb")
        try:
            await f.seek(self.start)
            left = self.end - self.start
            while left > 0:
                chunk = await f.read(min(CHUNK, left))
                left = left - len(chunk) if chunk else 0
                await send({"type": "http.response.body", "body": chunk, "more_body": left > 0})
        finally:
            with anyio.CancelScope(shield=True):
                await f.aclose()

    @staticmethod
    async def _disconnected(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass


def forbidden() -> Response:
    return error_response(403, "Forbidden")


def not_found() -> Response:
    return error_response(404, "Not Found")


class Downloads:
    """The `GET|HEAD /{key}?expires=&sign=` endpoint.

    A local blob store's files are served from disk (Range, ETag, md5 header). On S3 a GET
    is redirected to a presigned URL of the object (valid until the link expires, at most
    S3's 7 days), which answers Range and `x-amz-meta-md5-hash` itself; a HEAD is answered
    here from the object's metadata (a presigned GET does not sign a HEAD).
    """

    def __init__(
        self,
        catalog: Catalog,
        blobs: BlobStore,
        secret: str,
        clock: Callable[[], int],
        cache_seconds: float = 0.0,
    ) -> None:
        self.catalog, self.blobs, self.secret, self.clock = catalog, blobs, secret, clock
        self._located: Fresh[tuple[str, Path, str]] = Fresh(
            lambda: catalog.generation, cache_seconds
        )

    def md5_of(self, key: str, path: Path) -> str:
        """The part's md5 from the catalog; computed for files it has no row of (manifests)."""
        return self.catalog.part_md5(key) or file_md5(path)

    def _resolve(self, path: str) -> tuple[str, str | None] | None:
        """(object key, its md5 when the lookup read it) of a link path; None when gone.

        A 4-hex prefix on an hour stamp is the key itself (GrowingIO's shape, manifests).
        Any other prefix (sized for the base URL) or a v1 day path is looked up among the
        files of that project, type and hour (or day): by file name, or for a day by the
        part's uuid.
        """
        seg = links.parse_first_segment(path)
        if seg is None:
            return None
        prefix, ai, middle, stamp = seg
        if len(prefix) == links.STORED_PREFIX and len(stamp) == 12:
            return path, None
        version, name = ("v2", middle[:-3]) if middle.endswith("_v2") else ("v1", middle)
        project = self.catalog.project(ai)
        if project is None:
            return None
        try:
            if len(stamp) == 12:
                start = parse_utc_stamp(stamp)
                end = start + HOUR_MS
            else:
                start = parse_export_date("day", stamp).start_ms
                end = start + DAY_MS
        except (BadDate, ValueError):
            return None
        file_name = path.rpartition("/")[2]
        uuid = links.part_uuid(file_name)
        jobs = self.catalog.hour_jobs(project.id, version, start, end)
        candidates = [j.id for (t, _), js in jobs.items() if t == name for j in js]
        for rows in self.catalog.files_of(candidates).values():
            for f in rows:
                own = f.key.rpartition("/")[2]
                if own == file_name or (len(stamp) == 8 and uuid and links.part_uuid(own) == uuid):
                    return f.key, f.md5
        return None

    async def serve(self, request: Request) -> Response:
        link_path: str = request.path_params["key"]
        q = request.query_params
        if not links.verify(self.secret, link_path, q.get("expires"), q.get("sign"), self.clock()):
            return forbidden()
        if not self.blobs.local:
            return await run_in_threadpool(self._remote, request, link_path, int(q["expires"]))
        found = self._located.get(link_path)  # a hit: no catalog query, no thread
        if found is None:
            located = await run_in_threadpool(self._locate, self.blobs, link_path)
            if isinstance(located, Response):
                return located
            found = located
        key, path, md5 = found
        try:
            st = os.stat(path)
        except OSError:
            return not_found()
        if not stat.S_ISREG(st.st_mode):
            return not_found()
        size = st.st_size
        headers = {
            "etag": f'"{md5}"',
            "x-amz-meta-md5-hash": md5,
            "accept-ranges": "bytes",
            "content-type": media_type(key),
        }
        if etag_matches(request.headers.get("if-none-match"), headers["etag"]):
            return Response(status_code=304, headers={"etag": headers["etag"]})
        wanted = request.headers.get("range")
        if_range = request.headers.get("if-range")
        whole = RangeFileResponse(path, 0, size, 200, {**headers, "content-length": str(size)})
        if wanted is None or (if_range is not None and if_range != headers["etag"]):
            return whole
        try:
            chosen = parse_range(wanted, size)
        except Unsatisfiable as e:
            return error_response(e.status, e.public(), {"content-range": f"bytes */{size}"})
        if chosen is None:
            return whole
        start, end = chosen
        headers["content-range"] = f"bytes {start}-{end - 1}/{size}"
        headers["content-length"] = str(end - start)
        return RangeFileResponse(path, start, end, 206, headers)

    def _locate(self, paths: BlobStore, link_path: str) -> tuple[str, Path, str] | Response:
        """(key, file, md5) of a link path, kept for the next downloads (api/cache.py); or
        the answer when there is none."""
        generation = self.catalog.generation
        found = self._resolve(link_path)
        if found is None:
            return not_found()
        key, known_md5 = found
        try:
            path = paths.local_path(key)
        except ValueError:
            return forbidden()
        try:
            md5 = known_md5 or self.md5_of(key, path)  # the lookup read it already
        except OSError:
            return not_found()
        self._located.put(link_path, (key, path, md5), generation)
        return key, path, md5

    def _remote(self, request: Request, link_path: str, expires_ms: int) -> Response:
        found = self._resolve(link_path)
        if found is None:
            return not_found()
        return self._from_store(request, found[0], expires_ms)

    def _from_store(self, request: Request, key: str, expires_ms: int) -> Response:
        """A HEAD answered from the object's metadata; a GET redirected to the store."""
        store = self.blobs
        if request.method == "HEAD":
            info = store.stat(key)
            if info is None:
                return not_found()
            md5 = store.etag(key) or ""
            headers = {
                "etag": f'"{md5}"',
                "x-amz-meta-md5-hash": md5,
                "accept-ranges": "bytes",
                "content-type": media_type(key),
                "content-length": str(info.size),
            }
            return Response(status_code=200, headers=headers)
        seconds = max(1, -(-(expires_ms - self.clock()) // 1000))
        url = store.download_url(key, seconds)
        return Response(status_code=302, headers={"location": url, "cache-control": "no-store"})
