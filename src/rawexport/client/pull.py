"""Parallel, resumable, verified downloads of an export's parts into a Beijing-hour layout."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import httpx

from rawexport.blobs.links import part_uuid
from rawexport.client.client import DownloadError, Export, ExportClient
from rawexport.schema import DATA_TYPE_NAMES, V1_TYPE_NAMES
from rawexport.timeutil import beijing_hour_label, parse_export_date, to_ms

log = logging.getLogger("rawexport.pull")

# `{4hex}_{ai}_{type}[_v2]_{UTC yyyyMMddHHmm}/{file}`, possibly after a bucket segment.
_KEY = re.compile(r"(?:^|/)[0-9a-f]+_[0-9a-zA-Z]+_([a-z0-9_]+?)(?:_v2)?_(\d{12})/([^/]+)$")
_PART_NO = re.compile(r"part-(\d+)")
KNOWN_TYPES = frozenset(DATA_TYPE_NAMES) | frozenset(V1_TYPE_NAMES)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
MANIFEST = "_manifest.json"


class Progress(Protocol):
    def start(self, parts: int, total_bytes: int | None) -> None: ...
    def advance(self, nbytes: int) -> None: ...
    def part_done(self, part: Part, skipped: bool) -> None: ...


class NoProgress:
    def start(self, parts: int, total_bytes: int | None) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass

    def part_done(self, part: Part, skipped: bool) -> None:
        pass


@dataclass(frozen=True)
class Part:
    data_type: str
    key: str  # the object key: the link's path without the leading slash
    hour: str  # Beijing yyyyMMddHH
    number: int
    expected: dict[str, Any] | None  # the manifest's entry: rows, bytes, sha256, md5

    def path(self, to: Path) -> Path:
        return hour_dir(to, self.data_type, self.hour) / f"part-{self.number:05d}.csv.gz"


def hour_dir(to: Path, data_type: str, hour: str) -> Path:
    return to / data_type / hour[:8] / hour[8:10]


def key_of(url: str) -> str:
    return unquote(urlsplit(url).path).lstrip("/")


def parse_key(key: str) -> tuple[str, str, str] | None:
    """(data type, Beijing yyyyMMddHH, file name) of an export key, None when unknown."""
    m = _KEY.search(key)
    if m is None:
        return None
    try:
        stamp = datetime.strptime(m[2], "%Y%m%d%H%M").replace(tzinfo=UTC)
    except ValueError:
        return None
    return m[1], beijing_hour_label(to_ms(stamp)), m[3]


@dataclass
class PullOptions:
    jobs: int = 4
    chunk_size: int | None = None  # None: write what arrives, so a break loses nothing
    retries: int = 8  # broken transfers of one part before it fails
    verify_tries: int = 3  # full downloads of one part that fail verification
    renewals: int = 20  # link renewals of the whole pull
    on_chunk: Callable[[Part, int], None] | None = None  # (part, bytes on disk), for tests


@dataclass
class PullResult:
    files: dict[str, list[Path]]  # data type -> verified parts, in hour then part order
    manifests: dict[str, list[dict[str, Any]]]
    hours: list[str]  # Beijing yyyyMMddHH the request covers
    downloaded_bytes: int = 0
    skipped: int = 0
    statuses: list[int] = field(default_factory=list)  # HTTP status of every part GET

    def rows(self, data_type: str) -> int | None:
        found = self.manifests.get(data_type)
        return sum(int(m.get("rows", 0)) for m in found) if found is not None else None


class Links:
    """The current link of every key; renewed by asking the API again when one expires."""

    def __init__(self, answer: Export, refresh: Callable[[], Export], budget: int) -> None:
        self._refresh, self._budget = refresh, budget
        self._lock = threading.Lock()
        self._urls: dict[str, str] = {}
        self._load(answer)

    def _load(self, answer: Export) -> None:
        for group in (answer.links, answer.manifests):
            for urls in group.values():
                self._urls.update((key_of(u), u) for u in urls)

    def url(self, key: str) -> str:
        url = self._urls[key]
        expires = parse_qs(urlsplit(url).query).get("expires", [""])[0]
        if expires.isdigit() and int(expires) <= time.time() * 1000 + 5000:
            return self.renew(key, url)
        return url

    def renew(self, key: str, stale: str) -> str:
        with self._lock:
            if self._urls.get(key) != stale:
                return self._urls[key]  # another thread renewed it already
            if self._budget <= 0:
                raise DownloadError(f"{key}: links keep expiring; raise --expire")
            self._budget -= 1
            answer = self._refresh()
            if answer.status != "FINISHED":
                raise DownloadError(f"renewing links: the export is now {answer.status}")
            self._load(answer)
            if self._urls[key] == stale:
                raise DownloadError(f"{key}: the API no longer links it; pull again")
            log.info("renewed download links")
            return self._urls[key]


def _digest(path: Path) -> tuple[int, str, str, str]:
    """(size, md5, sha256, gzip problem or "") in one pass over the file."""
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    inflate = zlib.decompressobj(47)  # 32 + 15: a gzip header is required
    problem, size = "", 0
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            size += len(chunk)
            md5.update(chunk)
            sha.update(chunk)
            data = chunk
            while data and not problem:
                if inflate.eof:  # another member follows (concatenated gzip)
                    inflate = zlib.decompressobj(47)
                try:
                    inflate.decompress(data)
                except zlib.error as e:
                    problem = f"not valid gzip ({e})"
                data = inflate.unused_data if inflate.eof else b""
    if not problem and size == 0:
        problem = "empty file"
    elif not problem and not inflate.eof:
        problem = "truncated gzip"
    return size, md5.hexdigest(), sha.hexdigest(), problem


def verify(path: Path, expected: dict[str, Any] | None, length: int | None, md5: str | None) -> str:
    """Why the file is wrong ("" when it is right): size, sha256, md5, gzip integrity."""
    size, got_md5, got_sha, gzip_problem = _digest(path)
    if length is not None and size != length:
        return f"{size} bytes, Content-Length said {length}"
    if expected is not None:
        if "bytes" in expected and size != int(expected["bytes"]):
            return f"{size} bytes, the manifest says {expected['bytes']}"
        if expected.get("sha256") and got_sha != expected["sha256"]:
            return "sha256 differs from the manifest"
        if expected.get("md5") and got_md5 != expected["md5"]:
            return "md5 differs from the manifest"
    if md5 and got_md5 != md5.strip('"').lower():
        return "md5 differs from x-amz-meta-md5-hash"
    return gzip_problem or ""


class Puller:
    """Downloads one FINISHED export answer into `to`."""

    def __init__(
        self,
        client: ExportClient,
        answer: Export,
        refresh: Callable[[], Export],
        to: Path,
        options: PullOptions | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.client, self.to = client, Path(to)
        self.http: httpx.Client = client.http
        self.opts = options or PullOptions()
        self.progress: Progress = progress or NoProgress()
        self.answer = answer
        self.links = Links(answer, refresh, self.opts.renewals)
        self._lock = threading.Lock()
        self.result = PullResult({}, {}, [])

    def _get(self, key: str, headers: dict[str, str]) -> httpx.Response:
        """A streamed GET of a key; an expired link is renewed, other refusals fail."""
        url = self.links.url(key)
        for _ in range(3):
            req = self.http.build_request("GET", url, headers=headers)
            # A rawexport link to an S3 store redirects to a presigned URL (Range kept).
            r = self.http.send(req, stream=True, follow_redirects=True)
            if r.status_code not in (401, 403):
                return r
            r.close()
            url = self.links.renew(key, url)
        raise DownloadError(f"{key}: refused (HTTP 403) even with renewed links")

    def _manifest(self, data_type: str, url: str) -> dict[str, Any]:
        key = key_of(url)
        for attempt in range(self.opts.retries + 1):
            try:
                r = self._get(key, {})
                try:
                    r.read()
                finally:
                    r.close()
                break
            except httpx.TransportError as e:
                if attempt == self.opts.retries:
                    raise DownloadError(f"{key}: cannot read the manifest ({e})") from None
                self.client.sleep(min(0.5 * 2**attempt, 10.0))
        if r.status_code != 200:
            raise DownloadError(f"{key}: HTTP {r.status_code}")
        try:
            data = json.loads(r.content)
        except ValueError:
            raise DownloadError(f"{key}: the manifest is not JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("parts"), list):
            raise DownloadError(f"{key}: not a manifest")
        parsed = parse_key(key)
        hour = self._hour(str(data.get("exportHour") or (parsed[1] if parsed else "")), key)
        target = self._inside(hour_dir(self.to, data_type, hour) / MANIFEST)
        _write_atomic(target, r.content)
        return data

    def _transfer(self, part: Part, tmp: Path) -> tuple[int | None, str | None]:
        """Bring tmp to the whole object, resuming with Range; (total size, md5 header)."""
        total: int | None = None
        md5: str | None = None
        failures, delay = 0, 0.5
        while True:
            have = tmp.stat().st_size if tmp.exists() else 0
            if total is not None and have >= total:
                return total, md5
            try:
                r = self._get(part.key, {"range": f"bytes={have}-"} if have else {})
                try:
                    total, md5 = self._receive(part, tmp, r, have, md5)
                finally:
                    r.close()
            except httpx.TransportError as e:
                failures += 1
                if failures > self.opts.retries:
                    raise DownloadError(f"{part.key}: transfer keeps breaking ({e})") from None
                log.info("%s: transfer broke (%s); resuming", part.key, e)
                self.client.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _receive(
        self, part: Part, tmp: Path, r: httpx.Response, have: int, md5: str | None
    ) -> tuple[int, str | None]:
        """Append a 206 that continues tmp, or rewrite tmp from a 200; (total, md5 header)."""
        if r.status_code == 416:  # tmp is longer than the object: start over
            tmp.unlink(missing_ok=True)
            self.progress.advance(-have)
            raise httpx.ReadError("range not satisfiable")
        if r.status_code not in (200, 206):
            raise DownloadError(f"{part.key}: HTTP {r.status_code}")
        with self._lock:
            self.result.statuses.append(r.status_code)
        md5 = r.headers.get("x-amz-meta-md5-hash") or md5
        m = _CONTENT_RANGE.fullmatch(r.headers.get("content-range", ""))
        total: int | None
        if r.status_code == 206:
            if m is None or int(m[1]) != have:
                tmp.unlink(missing_ok=True)
                self.progress.advance(-have)
                raise httpx.ReadError(f"unexpected Content-Range {m[0] if m else None}")
            mode, total = "ab", int(m[3])
        else:
            self.progress.advance(-have)
            length = r.headers.get("content-length")
            mode, have, total = "wb", 0, int(length) if length and length.isdigit() else None
        with tmp.open(mode) as f:
            for chunk in r.iter_raw(self.opts.chunk_size):
                f.write(chunk)
                have += len(chunk)
                self.progress.advance(len(chunk))
                with self._lock:
                    self.result.downloaded_bytes += len(chunk)
                if self.opts.on_chunk is not None:
                    f.flush()
                    self.opts.on_chunk(part, have)
        return (have if total is None else total), md5

    def _existing_ok(self, part: Part, path: Path) -> bool:
        if part.expected is not None:
            return verify(path, part.expected, None, None) == ""
        try:
            r = self.http.head(self.links.url(part.key))
        except httpx.HTTPError:
            r = None
        if r is None or r.status_code != 200:
            # The final name is only ever given to a verified file; without a manifest or a
            # HEAD answer, gzip integrity is what is left to check.
            return verify(path, None, None, None) == ""
        length = r.headers.get("content-length")
        size = int(length) if length and length.isdigit() else None
        return verify(path, None, size, r.headers.get("x-amz-meta-md5-hash")) == ""

    def _fetch(self, part: Part) -> Path:
        final = self._inside(part.path(self.to))
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists() and self._existing_ok(part, final):
            with self._lock:
                self.result.skipped += 1
            self.progress.advance(final.stat().st_size)
            self.progress.part_done(part, True)
            return final
        tmp = final.with_name(final.name + ".partial")
        problem = ""
        for _ in range(self.opts.verify_tries):
            total, md5 = self._transfer(part, tmp)
            problem = verify(tmp, part.expected, total, md5)
            if not problem:
                with tmp.open("rb") as f:
                    os.fsync(f.fileno())
                os.replace(tmp, final)
                self.progress.part_done(part, False)
                return final
            log.warning("%s: %s; downloading it again", part.key, problem)
            self.progress.advance(-tmp.stat().st_size)
            tmp.unlink()
        raise DownloadError(
            f"{part.data_type} {part.hour} part {part.number}: {problem} "
            f"(after {self.opts.verify_tries} downloads)"
        )

    def parts(self, manifests: dict[str, list[dict[str, Any]]]) -> list[Part]:
        # A link's path need not be its object key (its prefix is sized for the host, a v1 day
        # renumbers parts): a part is matched to its manifest entry by its uuid, else by key,
        # and then takes its hour and number from the entry's key.
        expected: dict[str, dict[str, Any]] = {}
        for found in manifests.values():
            for manifest in found:
                for entry in manifest["parts"]:
                    expected[part_uuid(entry["key"]) or entry["key"]] = entry
        out: list[Part] = []
        for data_type, urls in self.answer.links.items():
            for i, url in enumerate(urls):
                key = key_of(url)
                entry = expected.get(part_uuid(key) or key)
                parsed = parse_key(str(entry["key"]) if entry else key) or parse_key(key)
                hour = self._hour(parsed[1], key) if parsed else self.result.hours[0]
                m = _PART_NO.match(parsed[2] if parsed else key.rsplit("/", 1)[-1])
                number = int(m[1]) if m else i
                out.append(Part(data_type, key, hour, number, entry))
        return out

    # ---- nothing is written outside `to` --------------------------------------------
    # What the server (or a man in the middle on http) says shapes paths: data types,
    # hours. Each is checked against what this pull asked for before it names a path.

    def _hour(self, hour: str, key: str) -> str:
        if hour not in self.result.hours:
            raise DownloadError(f"{key}: hour {hour[:40]!r} is not one this pull asked for")
        return hour

    def _inside(self, path: Path) -> Path:
        root = self.to.resolve()
        if not path.resolve().is_relative_to(root):
            raise DownloadError(f"refusing to write {path} outside {self.to}")
        return path

    def _check_types(self) -> None:
        for group in (self.answer.links, self.answer.manifests):
            for data_type in group:
                if data_type not in KNOWN_TYPES:
                    raise DownloadError(
                        f"the server answered an unknown data type {data_type[:40]!r}"
                    )

    def run(self, export_type: str, export_date: str) -> PullResult:
        window = parse_export_date(export_type, export_date)
        self.result.hours = [beijing_hour_label(h) for h in window.hours]
        self._check_types()
        pool = ThreadPoolExecutor(max(1, self.opts.jobs))
        try:
            for data_type, urls in self.answer.manifests.items():
                fetched = pool.map(lambda u, t=data_type: self._manifest(t, u), urls)
                self.result.manifests[data_type] = list(fetched)
            parts = self.parts(self.result.manifests)
            known = [p.expected for p in parts]
            total = sum(int(e["bytes"]) for e in known if e) if all(known) else None
            self.progress.start(len(parts), total)
            paths = list(pool.map(self._fetch, parts))
        finally:  # on a failure, parts not started yet are not started at all
            pool.shutdown(wait=True, cancel_futures=True)
        for data_type in self.answer.links:
            mine = sorted(
                p for p, part in zip(paths, parts, strict=True) if part.data_type == data_type
            )
            self.result.files[data_type] = mine
            _drop_stale(self.to, data_type, self.result.hours, mine)
        return self.result


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _drop_stale(to: Path, data_type: str, hours: Iterable[str], keep: list[Path]) -> None:
    """Parts left by an older revision of the same hours would be loaded twice: remove them."""
    kept = set(keep)
    for hour in hours:
        for old in hour_dir(to, data_type, hour).glob("part-*.csv.gz"):
            if old not in kept:
                old.unlink()


def pull(
    client: ExportClient,
    export_type: str,
    data_type: str | None,
    export_date: str,
    to: Path,
    *,
    expire: int = 60,
    wait: float = 0.0,
    options: PullOptions | None = None,
    progress: Progress | None = None,
    version: str = "v2",
) -> PullResult:
    """Wait for the export, then download and verify every part (and its manifests).

    version="v1" pulls the v1 answer of the day or hour (all 7 v1 types; data_type is
    ignored) into the same layout, verified against the v1 manifests.
    """
    v1_date = export_date if export_type == "day" else export_date[:10]
    date = v1_date if version == "v1" else export_date
    answer = client.wait(export_type, data_type, date, expire=expire, timeout=wait, version=version)

    def refresh() -> Export:
        return client.export(export_type, data_type, date, expire, version)

    puller = Puller(client, answer, refresh, to, options, progress)
    return puller.run(export_type, export_date)
