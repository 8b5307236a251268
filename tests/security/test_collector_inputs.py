"""Hostile collector bodies (issue 13, points 1, 2 and 6): bounded work, 4xx, nothing lost.

Each test sends what the adversarial review sent. Before the fix: the protobuf and JSON
bombs were decoded in full (GBs), snappy was decompressed whole before any size check,
an unhashable eventType and `stm=²` answered 500, and a second gzip member was dropped.
"""

from __future__ import annotations

import gzip
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import cramjam
import pytest

from rawexport.ingest.collectors import parse_events, unsnappy
from rawexport.ingest.trackerpb import TooManyEvents, decode_events
from tests.e2e_util import Server, env_for, free_port, run_cli
from tests.ingest.test_collectors import Site, make_site

TRACKER = "/v3/projects/{ai}/collect?stm=1700000000123"
NATIVE = "/api/v1/projects/{ai}/events"
MIB = 1024 * 1024


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = make_site(tmp_path, max_body_bytes=16 * MIB)
    yield s
    s.ingestor.stop()
    s.client.close()
    s.catalog.close()


def protobuf_bomb() -> bytes:
    """16 KB of gzip that decode to 8 M empty EventV3Dto (the review's body)."""
    return gzip.compress(b"\n\0" * 8_388_600, 9)


def test_protobuf_bomb_is_refused_while_decoding(site: Site) -> None:
    started = time.monotonic()
    r = site.post(
        TRACKER,
        protobuf_bomb(),
        content_type="application/protobuf",
        content_encoding="gzip",
    )
    assert r.status_code == 413 and "events in one batch" in r.json()["message"]
    assert time.monotonic() - started < 5  # stopped at 50 001 events, not 8 M
    with pytest.raises(TooManyEvents):
        decode_events(b"\n\0" * 1001, limit=1000)
    assert len(decode_events(b"\n\0" * 1000, limit=1000)) == 1000


def test_json_of_empty_objects_is_refused_before_parsing(site: Site) -> None:
    body = b"[" + b"{}," * (5 * MIB) + b"{}]"  # 15 MiB: 5 M dicts if parsed
    r = site.post(TRACKER, body, content_type="application/json")
    assert r.status_code == 413
    ndjson = b"{}\n" * 60_000  # more lines than max_batch_events (50 000)
    assert site.post(NATIVE, ndjson).status_code == 413
    # within the bounds it is parsed and checked as before
    assert len(parse_events(b"[" + b"{}," * 99 + b"{}]", max_events=100)) == 100


def test_snappy_is_bounded_before_and_while_decompressing(site: Site) -> None:
    raw = bytes(cramjam.snappy.compress_raw(b"\0" * (14 * MIB)))  # claims 14 MiB
    with pytest.raises(Exception, match="once decompressed"):
        unsnappy(raw, MIB)
    framed = bytes(cramjam.snappy.compress(b"[" + b" " * (20 * MIB) + b"]"))
    r = site.post(TRACKER, framed, content_type="application/json", x_compress_codec="2")
    assert r.status_code == 413
    ok = bytes(cramjam.snappy.compress(json.dumps([{"eventType": "CUSTOM"}]).encode()))
    assert len(unsnappy(ok, MIB)) > 0


def test_unhashable_event_type_is_a_rejected_event_not_a_500(site: Site) -> None:
    body = json.dumps(
        [{"eventType": ["CUSTOM"]}, {"eventType": "CUSTOM", "deviceId": "d1", "eventName": "e"}]
    )
    r = site.post(TRACKER, body, content_type="application/json")
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["accepted"] == 1 and out["rejected"][0]["field"] == "eventType"


def test_non_ascii_digit_stm_is_a_400(site: Site) -> None:
    path = "/v3/projects/{ai}/collect?stm=%C2%B2"
    r = site.post(path, b"\x01\x02", content_type="application/json", x_crypt_codec="1")
    assert r.status_code == 400 and "stm" in r.json()["message"]


def test_every_gzip_member_is_read(site: Site) -> None:
    one = gzip.compress(b'{"type":"vstr","visitUserId":"m1","sessionId":"s"}\n')
    two = gzip.compress(b'{"type":"vstr","visitUserId":"m2","sessionId":"s"}\n')
    r = site.post(NATIVE, one + two, content_encoding="gzip")
    assert r.status_code == 200 and r.json()["accepted"] == 2
    assert sorted(row["visitUserId"] for row in site.rows("vstr")) == ["m1", "m2"]
    # the members together are bounded by the same limit
    big = gzip.compress(b" " * (10 * MIB))
    assert site.post(NATIVE, big + big, content_encoding="gzip").status_code == 413


def _peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    assert match, status
    return int(match.group(1)) / 1024


@pytest.mark.e2e
def test_server_memory_stays_bounded_under_concurrent_bombs(tmp_path: Path) -> None:
    """The review's bodies sent at once to a real server: its peak RSS grows by a small
    multiple of max_body_bytes (16 MiB), not by GBs."""
    import concurrent.futures
    import urllib.error
    import urllib.request

    home, port = tmp_path / "home", free_port()
    env = env_for(home, port)
    ai = str(run_cli(["project", "create", "--name", "bombs"], env)["ai"])
    with Server(["serve"], env, port, tmp_path / "serve.log") as server:
        server.wait_ready()
        base = f"{server.base}"
        before = _peak_rss_mib(server.proc.pid)
        bodies = [
            (TRACKER, protobuf_bomb(), {"content-type": "application/protobuf",
                                        "content-encoding": "gzip"}),
            (TRACKER, b"[" + b"{}," * (5 * MIB) + b"{}]", {"content-type": "application/json"}),
            (TRACKER, bytes(cramjam.snappy.compress_raw(b"\0" * (14 * MIB))),
             {"content-type": "application/json", "x-compress-codec": "2"}),
        ] * 2  # fmt: skip

        def send(item: tuple[str, bytes, dict[str, str]]) -> int:
            path, body, headers = item
            req = urllib.request.Request(
                base + path.format(ai=ai), data=body, headers=headers, method="POST"
            )
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    return int(r.status)
            except urllib.error.HTTPError as e:
                return int(e.code)

        with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
            codes = list(pool.map(send, bodies))
        after = _peak_rss_mib(server.proc.pid)
    assert all(400 <= c < 500 for c in codes), codes
    # Six bodies of <= 16 MiB each in flight: a few copies each (raw body, decoded body).
    print(f"peak RSS {before:.0f} -> {after:.0f} MiB")
    assert after - before < 16 * 6 * 3, (before, after)
