"""Public GrowingIO export clients, replayed exactly, against a real `rawexport serve`.

One `rawexport demo` set-up, then one server on its data per links' origin (default
settings, only `RAWEXPORT_PUBLIC_URL` set for the made-up origins, which this process
resolves to 127.0.0.1). Per origin each client of
`tests/e2e/growingio_clients.py` runs as written (no retry, no sleep) and must end without
an exception having written every file the API lists once, byte for byte. The reference
list comes from separate calls with the demo's API token (a polite client: it honours 429).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from rawexport.schema import DATA_TYPE_NAMES, V1_TYPE_NAMES
from rawexport.settings import Settings
from tests.e2e.growingio_clients import (
    HOUR_LOOP_TYPES,
    SDK_V2_TYPES,
    TIMEOUT,
    Credentials,
    JavaClientLoops,
    JavaSdkV1,
    JavaSdkV2,
    StringIndexOutOfBoundsException,
    Write,
    form_auth,
    part_file_name,
    python_script,
    split_link,
    split_link_v1,
)
from tests.e2e_util import RAWEXPORT, Server, download, env_for, free_port, get_json

pytestmark = pytest.mark.e2e

RATE = Settings().rate_limit  # the default: requests per second per credential
BURST = Settings().rate_burst  # the default: requests a credential may send at once

# Lengths of the links' origin including the slash after it; None = the default
# public_url (http://127.0.0.1:PORT, 23 characters with a 5-digit port).
ORIGIN_LENGTHS: list[int | None] = [None, 16, 23, 40, 56]

_FAKE_HOSTS: set[str] = set()  # made-up hostnames this process resolves to 127.0.0.1


def origin_id(length: int | None) -> str:
    return "default" if length is None else f"origin{length}"


def made_up_host(length: int, port: int) -> str:
    """A hostname that makes `http://{host}:{port}/` exactly `length` characters."""
    n = length - len(f"http://:{port}/")
    assert n >= 2, (length, port)
    return "abcde"[:n] if n < 6 else "h" * (n - 5) + ".test"


@pytest.fixture(scope="module", autouse=True)
def fake_dns() -> Iterator[None]:
    """Resolve the made-up hostnames (only those) to 127.0.0.1 in this process: urllib
    (`socket.create_connection`) and requests (urllib3) both look up `socket.getaddrinfo`."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        return real("127.0.0.1" if name in _FAKE_HOSTS else host, port, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket, "getaddrinfo", getaddrinfo)
        for var in ("no_proxy", "NO_PROXY"):  # a proxy from the environment must not apply
            mp.setenv(var, "*")
        yield


@dataclass
class Demo:
    server: Server
    origin: str  # what download links start with (no trailing slash)
    creds: dict[str, Any]  # demo-credentials.json
    _v2: dict[str, list[str]] = field(default_factory=dict)
    _v1: list[str] = field(default_factory=list)
    _sha: dict[str, str] = field(default_factory=dict)

    @property
    def day(self) -> str:
        return str(self.creds["example_day"])

    @property
    def client(self) -> Credentials:
        """The clients talk to the public origin (it resolves to this server)."""
        c = self.creds
        return Credentials(
            self.origin, c["ai"], c["project_uid"], c["public_key"], c["private_key"]
        )

    def _reference(self, path: str) -> dict[str, Any]:
        url = f"{self.server.base}{path}?expire=60"
        status, body = get_json(url, {"Authorization": self.creds["api_token"]})
        assert status == 200 and body["status"] == "FINISHED", (url, status, body)
        return dict(body)

    def v2_links(self, data_type: str) -> list[str]:
        """The day's links of one type, as the API lists them (token alone, polite)."""
        if data_type not in self._v2:
            body = self._reference(
                f"/v2/insights/day/{data_type}/{self.creds['ai']}/{self.day}.json"
            )
            links = list(body["downloadLinks"])
            assert len(links) >= 24, (data_type, len(links))  # at least one part per hour
            assert all(link.startswith(self.origin + "/") for link in links), links[0]
            self._v2[data_type] = links
        return self._v2[data_type]

    def v1_links(self) -> list[str]:
        if not self._v1:
            body = self._reference(f"/insights/{self.creds['ai']}/{self.day}.json")
            self._v1 = list(body["downlinks"])
            assert len(self._v1) >= 24 * len(V1_TYPE_NAMES), len(self._v1)
        return self._v1

    def sha_of(self, url: str) -> str:
        """sha256 of a fresh download of the link."""
        if url not in self._sha:
            self._sha[url] = hashlib.sha256(download(url)).hexdigest()
        return self._sha[url]


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `rawexport demo` set-up (a day of events of every type, all exported), shared."""
    home = tmp_path_factory.mktemp("compat")
    env = env_for(home, free_port())
    args = ["demo", "--home", str(home), "--events-per-hour", "400", "--no-serve"]
    out = subprocess.run([*RAWEXPORT, *args], env=env, capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return home


@pytest.fixture(scope="module", params=ORIGIN_LENGTHS, ids=origin_id)
def demo(request: pytest.FixtureRequest, demo_home: Path, fake_dns: None) -> Iterator[Demo]:
    """`rawexport serve` on the demo's data, on defaults but for public_url per origin."""
    length: int | None = request.param
    port = free_port()
    extra: dict[str, str] = {}
    origin = f"http://127.0.0.1:{port}"
    if length is not None:
        host = made_up_host(length, port)
        _FAKE_HOSTS.add(host)
        origin = f"http://{host}:{port}"
        assert len(origin + "/") == length
        extra["RAWEXPORT_PUBLIC_URL"] = origin
    env = env_for(demo_home, port, **extra)
    log = demo_home / f"server-{origin_id(length)}.log"
    with Server(["serve", "--home", str(demo_home)], env, port, log) as server:
        server.wait_ready(timeout=60)
        creds = json.loads((demo_home / "demo-credentials.json").read_text())
        yield Demo(server, origin, creds)


def idle() -> None:
    """Let the key pair's bucket refill, so each client starts like a fresh cron job."""
    time.sleep(BURST / RATE + 0.2)


def key_of(url: str) -> str:
    """The object key a link points at: its path, without the query."""
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path).lstrip("/")


@dataclass(frozen=True)
class Key:
    """An export key's fields, parsed by its structure (not by position)."""

    data_type: str
    stamp: str  # UTC yyyyMMddHHmm, or a v1 day's Beijing yyyyMMdd
    part: str  # the file name after the prefix

    @property
    def beijing(self) -> datetime:
        return datetime.strptime(self.stamp, "%Y%m%d%H%M") + timedelta(hours=8)


def parse_key(url: str, ai: str, version: str = "v2") -> Key:
    prefix, part = key_of(url).split("/")
    suffix = "_v2" if version == "v2" else ""
    stamp = r"\d{12}" if version == "v2" else r"\d{8}|\d{12}"  # a v1 day: one folder per type
    m = re.fullmatch(rf"[0-9a-f]+_{ai}_([a-z_]+){suffix}_({stamp})", prefix)
    assert m, url
    return Key(m.group(1), m.group(2), part)


def sha_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_one_for_one(
    demo: Demo,
    writes: Sequence[Write],
    listed: Sequence[str],
    out_dir: Path,
    label: str,
    expected_path: Callable[[str], Path],
    log: Sequence[str] = (),
) -> None:
    """Every listed file downloaded exactly once, to the path its client must give it
    (`expected_path(link)`), to its own file, byte for byte."""
    expected = Counter(key_of(u) for u in listed)
    assert all(n == 1 for n in expected.values()), f"{label}: the API lists a file twice"
    got = Counter(key_of(u) for u, _ in writes)
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    twice = sorted(k for k, n in got.items() if n > 1)
    assert not (missing or extra or twice), (
        f"{label}: of {len(expected)} listed files {len(missing)} were not downloaded "
        f"(e.g. {missing[:2]}), {len(extra)} downloaded were not listed (e.g. {extra[:2]}), "
        f"{len(twice)} downloaded twice; client log tail: {list(log)[-4:]}"
    )
    misplaced = [(p, expected_path(u)) for u, p in writes if p != expected_path(u)]
    assert not misplaced, (
        f"{label}: {len(misplaced)} of {len(writes)} files written under a wrong path, e.g. "
        f"{[(str(a.relative_to(out_dir)), str(b.relative_to(out_dir))) for a, b in misplaced[:2]]}"
    )
    on_disk = {p for p in out_dir.rglob("*") if p.is_file()}
    paths = Counter(p for _, p in writes)
    overwritten = sum(n - 1 for n in paths.values())
    assert len(on_disk) == len(expected) and on_disk == set(paths), (
        f"{label}: {len(expected)} listed files, {len(on_disk)} files on disk "
        f"({overwritten} downloads overwrote an earlier file, e.g. "
        f"{[str(p.relative_to(out_dir)) for p, n in paths.items() if n > 1][:2]})"
    )
    bad = [str(p.relative_to(out_dir)) for u, p in writes if sha_file(p) != demo.sha_of(u)]
    assert not bad, f"{label}: {len(bad)} files differ from a fresh download, e.g. {bad[:2]}"


def v2_reference(demo: Demo, types: Sequence[str]) -> list[str]:
    return [link for t in types for link in demo.v2_links(t)]


# ---- every origin: a, c (63 and 64), d -------------------------------------------------


def test_python_script(demo: Demo, tmp_path: Path) -> None:
    listed = v2_reference(demo, DATA_TYPE_NAMES)
    idle()
    writes = python_script(demo.client, demo.day, tmp_path)

    def path(url: str) -> Path:  # out/{type}/{UTC stamp}.csv.gz
        k = parse_key(url, demo.creds["ai"])
        return tmp_path / k.data_type / f"{k.stamp}.csv.gz"

    check_one_for_one(demo, writes, listed, tmp_path, "python script", path)


@pytest.mark.parametrize("start", [63, 64])
def test_java_sdk_v2(demo: Demo, tmp_path: Path, start: int) -> None:
    listed = v2_reference(demo, SDK_V2_TYPES)
    idle()
    sdk = JavaSdkV2(demo.client, start, tmp_path)
    writes = sdk.run(demo.day)

    def path(url: str) -> Path:  # out/{Beijing yyyyMMdd/HH}/{type}_v2/{part file}
        k = parse_key(url, demo.creds["ai"])
        return tmp_path / k.beijing.strftime("%Y%m%d/%H") / f"{k.data_type}_v2" / k.part

    check_one_for_one(demo, writes, listed, tmp_path, f"java sdk v2 ({start})", path, sdk.log)


def test_java_sdk_v1(demo: Demo, tmp_path: Path) -> None:
    listed = demo.v1_links()
    idle()
    sdk = JavaSdkV1(demo.client, tmp_path)
    writes = sdk.run(demo.day)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == len(listed), (
        f"v1: {len(listed)} links in downlinks, {len(files)} files written from "
        f"{len(writes)} downloads; log: {sdk.log}"
    )

    def path(url: str) -> Path:  # out/{v1 type}/part-NNNNN{requested yyyyMMdd}
        k = parse_key(url, demo.creds["ai"], "v1")
        return tmp_path / k.data_type / (k.part[:10] + demo.day)

    check_one_for_one(demo, writes, listed, tmp_path, "java sdk v1", path, sdk.log)


# ---- the default origin only -------------------------------------------------------------

# Narrows `demo` to its first param (None); pytest groups these tests with the others of
# that param, so they share the default origin's server.
default_only = pytest.mark.parametrize("demo", [None], indirect=True, ids=["default"])


@default_only
@pytest.mark.timeout(400)
def test_java_client_day_and_hour_loops(demo: Demo, tmp_path: Path) -> None:
    day_listed = v2_reference(demo, DATA_TYPE_NAMES)
    hour_listed = v2_reference(demo, HOUR_LOOP_TYPES)  # a day's files are its hours' files
    idle()
    client = JavaClientLoops(demo.client, tmp_path)
    client.run(demo.day)
    assert client.calls == len(DATA_TYPE_NAMES) + 24 * len(HOUR_LOOP_TYPES) == 178
    ai = demo.creds["ai"]

    def day_path(url: str) -> Path:  # out/day/{type}/{part file}
        k = parse_key(url, ai)
        return tmp_path / "day" / k.data_type / k.part

    def hour_path(url: str) -> Path:  # out/hour/{type}/{Beijing yyyyMMddHH}/{part file}
        k = parse_key(url, ai)
        return tmp_path / "hour" / k.data_type / k.beijing.strftime("%Y%m%d%H") / k.part

    day_out, hour_out = tmp_path / "day", tmp_path / "hour"
    check_one_for_one(demo, client.day_writes, day_listed, day_out, "day loop", day_path)
    check_one_for_one(demo, client.hour_writes, hour_listed, hour_out, "hour loop", hour_path)


def _link_request_url(demo: Demo, i: int) -> str:
    data_type = DATA_TYPE_NAMES[i % len(DATA_TYPE_NAMES)]
    return f"{demo.origin}/v2/insights/day/{data_type}/{demo.creds['ai']}/{demo.day}.json?expire=60"


def _answered(r: requests.Response) -> bool:
    """HTTP 200 with a JSON object that has `status`."""
    try:
        body = r.json()
    except ValueError:
        return False
    return r.status_code == 200 and isinstance(body, dict) and "status" in body


@default_only
@pytest.mark.timeout(400)
def test_200_requests_back_to_back_are_answered_at_the_rate(demo: Demo) -> None:
    n = 200
    headers = {"X-Client-Id": demo.creds["public_key"], "Authorization": form_auth(demo.client)}
    idle()
    answers: list[tuple[int, bool, str]] = []
    t0 = time.monotonic()
    for i in range(n):
        r = requests.get(_link_request_url(demo, i), headers=headers, timeout=TIMEOUT)
        answers.append((r.status_code, _answered(r), r.text[:120]))
    elapsed = time.monotonic() - t0
    bad = [(i, code, text) for i, (code, ok, text) in enumerate(answers) if not ok]
    assert not bad, (
        f"{len(bad)} of {n} not answered 200 with a status (by HTTP code: "
        f"{dict(Counter(code for _, code, _ in bad))}), first: {bad[:2]}"
    )
    rate = (n - BURST) / elapsed
    assert elapsed >= (n - BURST) / RATE * 0.95, (
        f"{n} requests in {elapsed:.1f} s: {rate:.2f}/s after the first {BURST}, "
        f"over the rate limit {RATE}/s"
    )


@default_only
def test_20_concurrent_requests_are_queued_not_refused(demo: Demo) -> None:
    n = 20
    headers = {"X-Client-Id": demo.creds["public_key"], "Authorization": form_auth(demo.client)}
    idle()
    barrier = threading.Barrier(n)

    def one(i: int) -> tuple[int, bool, str]:
        barrier.wait()
        r = requests.get(_link_request_url(demo, i), headers=headers, timeout=TIMEOUT)
        return r.status_code, _answered(r), r.text[:120]

    with ThreadPoolExecutor(n) as pool:
        t0 = time.monotonic()
        answers = list(pool.map(one, range(n)))
        elapsed = time.monotonic() - t0
    bad = [a for a in answers if not a[1]]
    assert not bad, (
        f"{len(bad)} of {n} concurrent requests not answered 200 with a status "
        f"(by HTTP code: {dict(Counter(a[0] for a in bad))}), first: {bad[:1]}"
    )
    # Queued, not let through: the rate holds for concurrent requests too.
    assert elapsed >= (n - BURST) / RATE * 0.95, f"{n} concurrent answered in {elapsed:.1f} s"


# ---- splitLink on the link shapes the server will produce (no server) --------------------

AI = "0123456789abcdef"
STAMP = "202501011600"  # UTC; Beijing 2025-01-02 00:00
PART = "part-00000-8da909a4-2ddf-5f0f-b70b-c3071d696376"
QUERY = "expires=1796124130571&sign=" + "ab" * 32


def hex_len(length: int) -> int:
    """The lead's rule: the '_' before ai lands at index <= 62, the one after it >= 64."""
    return min(max(4, 60 - length), 62 - length)


def shaped_link(length: int, h: int, name: str, version: str = "v2") -> str:
    origin = "http://" + "h" * (length - len("http://:12345/")) + ":12345"
    assert len(origin + "/") == length
    prefix = hashlib.sha256(name.encode()).hexdigest()[:h]
    if version == "v2":
        return f"{origin}/{prefix}_{AI}_{name}_v2_{STAMP}/{PART}-c000.csv.gz?{QUERY}"
    return f"{origin}/{prefix}_{AI}_{name}_{STAMP}/{PART}.csv.gz?{QUERY}"


@pytest.mark.parametrize("start", [63, 64])
@pytest.mark.parametrize("length", range(16, 61))
def test_split_link_on_the_rule_shapes(length: int, start: int) -> None:
    h = hex_len(length)
    beijing = datetime.strptime(STAMP, "%Y%m%d%H%M") + timedelta(hours=8)
    for name in DATA_TYPE_NAMES:
        link = shaped_link(length, h, name)
        assert link.index("_") == length + h <= 62
        assert link.index("_", length + h + 1) == length + h + 17 >= 64
        assert split_link(link, start) == (f"{name}_v2", STAMP, beijing.strftime("%Y%m%d/%H"))
        assert part_file_name(link) == f"{PART}-c000.csv.gz"
    for name in V1_TYPE_NAMES:
        link = shaped_link(length, h, name, "v1")
        assert split_link_v1(link, start)[:2] == (name, STAMP)


@pytest.mark.parametrize("start", [63, 64])
def test_split_link_fails_on_todays_shape(start: int) -> None:
    """An origin of 22 with a 4-hex prefix (http://127.0.0.1:8080/ today): the SDK's
    positional parse throws or reads a wrong type for every data type."""
    for name in DATA_TYPE_NAMES:
        link = shaped_link(22, 4, name)
        try:
            data_type = split_link(link, start).data_type
        except StringIndexOutOfBoundsException:
            continue
        assert data_type != f"{name}_v2", (name, data_type)
