"""pull against the real app in a uvicorn thread: layout, skip, Range resume, corruption, expiry."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from rawexport.api.app import create_app
from rawexport.cli.pull import pull as pull_command
from rawexport.client.client import DownloadError, Export, ExportClient
from rawexport.client.pull import Puller, PullOptions, key_of, parse_key, pull, verify
from rawexport.demo.generate import generate
from rawexport.export.actions import export_now
from rawexport.node import Services, open_services
from rawexport.settings import Settings
from rawexport.timeutil import DAY_MS, HOUR_MS, beijing_hour_label, hour_floor, now_ms
from tests.conftest import Clock
from tests.e2e_util import free_port, serve_in_thread

HOUR = hour_floor(now_ms()) - 30 * HOUR_MS
LABEL = beijing_hour_label(HOUR)


@dataclass
class Site:
    services: Services
    clock: Clock
    base: str
    ai: str
    token: str
    clients: list[ExportClient] = dataclasses.field(default_factory=list)

    def client(self, transport: httpx.BaseTransport | None = None) -> ExportClient:
        http = httpx.Client(transport=transport) if transport else None
        c = ExportClient(self.base, self.ai, token=self.token, http=http, sleep=lambda s: None)
        self.clients.append(c)
        return c


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    home = tmp_path_factory.mktemp("site")
    port = free_port()
    settings = Settings(
        home=home, public_url=f"http://127.0.0.1:{port}", part_bytes=65536, rate_limit=1e6,
        rate_burst=1_000_000,
    )  # fmt: skip
    services = open_services(settings)
    project = services.catalog.create_project(
        "pull", export_since_ms=HOUR - DAY_MS, v1_enabled=False
    )
    token = services.catalog.create_api_token(project.id, "pull tests")
    generate(services.store, project.ai, HOUR, 1, 6_000, ["page"], seed=3)
    export_now(services.exporter, project, [HOUR], None, now_ms())
    clock = Clock(now_ms())
    app = create_app(settings, services.catalog, services.blobs, clock=clock)
    try:
        with serve_in_thread(app, port):
            yield Site(services, clock, f"http://127.0.0.1:{port}", project.ai, token)
    finally:
        services.close()


@pytest.fixture(autouse=True)
def real_time(site: Site) -> Iterator[None]:
    site.clock.now = now_ms()
    yield
    while site.clients:
        site.clients.pop().close()


def manifest_rows(to: Path, data_type: str) -> int:
    return sum(json.loads(m.read_text())["rows"] for m in (to / data_type).rglob("_manifest.json"))


def csv_rows(path: Path) -> int:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        return sum(1 for _ in csv.reader(f, quotechar='"', escapechar="\\")) - 1


def test_pull_an_hour_into_the_beijing_layout_then_skip(site: Site, tmp_path: Path) -> None:
    result = pull(site.client(), "hour", "page", LABEL, tmp_path)
    files = result.files["page"]
    assert len(files) >= 2, "the fixture should give page several parts"
    hour_dir = tmp_path / "page" / LABEL[:8] / LABEL[8:]
    assert files == [hour_dir / f"part-{i:05d}.csv.gz" for i in range(len(files))]
    assert sorted(p.name for p in hour_dir.iterdir()) == [
        "_manifest.json",
        *(p.name for p in files),
    ]
    assert set(result.statuses) == {200} and len(result.statuses) == len(files)
    assert result.rows("page") == manifest_rows(tmp_path, "page") > 0
    assert sum(csv_rows(p) for p in files) == result.rows("page")
    again = pull(site.client(), "hour", "page", LABEL, tmp_path)
    assert again.skipped == len(files) and again.downloaded_bytes == 0 and again.statuses == []


def test_parts_of_an_older_revision_are_removed(site: Site, tmp_path: Path) -> None:
    """An older revision of the hour had more parts: pulling the hour again leaves only the
    parts of the revision the server links now (loads would count the others twice)."""
    first = pull(site.client(), "hour", "page", LABEL, tmp_path).files["page"]
    hour_dir = tmp_path / "page" / LABEL[:8] / LABEL[8:]
    stale = [hour_dir / f"part-{i:05d}.csv.gz" for i in range(len(first), len(first) + 3)]
    for path in stale:
        path.write_bytes(gzip.compress(b"visitUserId\nold\n"))
    other_hour = tmp_path / "page" / LABEL[:8] / f"{(int(LABEL[8:]) + 1) % 24:02d}"
    other_hour.mkdir()
    (other_hour / "part-00000.csv.gz").write_bytes(b"")  # an hour this pull is not about
    again = pull(site.client(), "hour", "page", LABEL, tmp_path)
    assert again.files["page"] == first and again.skipped == len(first)
    assert not any(path.exists() for path in stale)
    assert sorted(hour_dir.glob("part-*")) == first
    assert (other_hour / "part-00000.csv.gz").exists()


class CutStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, after: int) -> None:
        self.inner, self.after = inner, after

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        for chunk in self.inner:
            take = chunk[: self.after - sent]
            sent += len(take)
            if take:
                yield take
            if sent >= self.after:
                raise httpx.ReadError("connection reset (test)")

    def close(self) -> None:
        self.inner.close()


class CutFirstPart(httpx.BaseTransport):
    """Breaks the first whole-file part download after `after` bytes; records requests."""

    def __init__(self, after: int) -> None:
        self.inner = httpx.HTTPTransport()
        self.after = after
        self.ranges: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        r = self.inner.handle_request(request)
        if "/part-00000" not in request.url.path:
            return r
        self.ranges.append(request.headers.get("range"))
        if len(self.ranges) > 1:
            return r
        assert isinstance(r.stream, httpx.SyncByteStream)
        return httpx.Response(
            r.status_code, headers=r.headers, stream=CutStream(r.stream, self.after)
        )

    def close(self) -> None:
        self.inner.close()


def test_a_broken_transfer_resumes_with_range(site: Site, tmp_path: Path) -> None:
    transport = CutFirstPart(after=20_000)
    result = pull(
        site.client(transport), "hour", "page", LABEL, tmp_path, options=PullOptions(jobs=1)
    )
    assert transport.ranges == [None, "bytes=20000-"]
    assert 206 in result.statuses
    first = result.files["page"][0]
    expected = result.manifests["page"][0]["parts"][0]
    assert verify(first, expected, None, None) == ""
    assert not list(tmp_path.rglob("*.partial"))


def test_a_corrupted_part_is_refetched_then_reported(site: Site, tmp_path: Path) -> None:
    client = site.client()
    answer = client.export("hour", "page", LABEL)
    name = answer.links["page"][-1].split("?")[0].rsplit("/", 1)[1]
    [path] = site.services.settings.exports_dir.rglob(name)  # the part behind the link
    good = path.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    try:
        path.write_bytes(bytes(bad))
        with pytest.raises(DownloadError, match="sha256 differs from the manifest.*3 downloads"):
            pull(client, "hour", "page", LABEL, tmp_path)
        # GrowingIO gives no manifest: the x-amz-meta-md5-hash header still catches it
        no_manifest = dataclasses.replace(answer, manifests={})
        puller = Puller(client, no_manifest, lambda: no_manifest, tmp_path / "gio")
        with pytest.raises(DownloadError, match="md5 differs from x-amz-meta-md5-hash"):
            puller.run("hour", LABEL)
    finally:
        path.write_bytes(good)
    assert not (tmp_path / "page" / LABEL[:8] / LABEL[8:] / path.name).exists()
    assert not list(tmp_path.rglob("*.partial"))
    result = Puller(client, no_manifest, lambda: no_manifest, tmp_path / "gio").run("hour", LABEL)
    assert len(result.files["page"]) == len(answer.links["page"])


def test_a_part_whose_md5_matches_but_not_its_sha256_is_refused(site: Site, tmp_path: Path) -> None:
    """The manifest's sha256 is checked on its own: a part whose md5 agrees with the
    manifest and the x-amz-meta-md5-hash header, but whose sha256 is not the manifest's,
    fails `rawexport pull` (exit 6, the part named) and is not kept."""
    answer = site.client().export("hour", "page", LABEL)
    [manifest_url] = answer.manifests["page"]
    manifest_path = site.services.settings.exports_dir / key_of(manifest_url)
    good = manifest_path.read_bytes()
    manifest = json.loads(good)
    entry = manifest["parts"][-1]
    data = (site.services.settings.exports_dir / entry["key"]).read_bytes()
    assert entry["md5"] == hashlib.md5(data).hexdigest()  # md5 alone would take it
    entry["sha256"] = hashlib.sha256(data + b"\n").hexdigest()
    args = ["--type", "hour", "--data-type", "page", "--date", LABEL, "--to", str(tmp_path)]
    args += ["--base-url", site.base, "--ai", site.ai, "--token", site.token, "--jobs", "1"]
    try:
        manifest_path.write_bytes(json.dumps(manifest).encode())
        out = CliRunner().invoke(pull_command, args)
    finally:
        manifest_path.write_bytes(good)
    assert out.exit_code == 6, out.output
    last = out.stderr.strip().splitlines()[-1]
    number = int(entry["key"].rsplit("/part-", 1)[1][:5])
    assert last == (
        f"rawexport pull: page {LABEL} part {number}: sha256 differs from the manifest "
        "(after 3 downloads)"
    )
    hour_dir = tmp_path / "page" / LABEL[:8] / LABEL[8:]
    assert not (hour_dir / f"part-{number:05d}.csv.gz").exists()
    assert not list(tmp_path.rglob("*.partial"))
    again = CliRunner().invoke(pull_command, args)  # the manifest as written: pulled
    assert again.exit_code == 0, again.output
    assert (hour_dir / f"part-{number:05d}.csv.gz").read_bytes() == data


def test_links_expiring_mid_pull_are_renewed(site: Site, tmp_path: Path) -> None:
    client = site.client()
    refreshes: list[Export] = []

    def refresh() -> Export:
        refreshes.append(client.export("hour", "page", LABEL, 1))
        return refreshes[-1]

    first = client.export("hour", "page", LABEL, 1)

    def expire_links(part: object, written: int) -> None:
        # Past the life of every link issued so far (earlier tests cached 60-minute ones).
        site.clock.now = max(site.clock.now, now_ms() + 2 * HOUR_MS)

    opts = PullOptions(jobs=1, on_chunk=expire_links)
    result = Puller(client, first, refresh, tmp_path, opts).run("hour", LABEL)
    assert len(refreshes) == 1
    assert refreshes[0].links["page"] != first.links["page"]
    assert len(result.files["page"]) == len(first.links["page"])
    assert sum(csv_rows(p) for p in result.files["page"]) == result.rows("page")


def test_verify_catches_truncated_and_non_gzip_files(tmp_path: Path) -> None:
    data = gzip.compress(b"a,b\n1,2\n" * 1000)
    f = tmp_path / "x.gz"
    f.write_bytes(data + gzip.compress(b"3,4\n"))  # concatenated members are valid
    assert verify(f, None, None, None) == ""
    f.write_bytes(data[:-10])
    assert verify(f, None, None, None) == "truncated gzip"
    f.write_bytes(b"plain text")
    assert verify(f, None, None, None).startswith("not valid gzip")
    f.write_bytes(data)
    assert verify(f, None, len(data) + 1, None).endswith(f"Content-Length said {len(data) + 1}")


def test_keys_map_to_beijing_hours() -> None:
    key = "1a2b_0123456789abcdef_ads_track_click_v2_202412311600/part-00003-u-c000.csv.gz"
    assert parse_key(key) == ("ads_track_click", "2025010100", "part-00003-u-c000.csv.gz")
    assert parse_key("bucket/" + key) == parse_key(key)
    assert parse_key("something/else.csv.gz") is None
