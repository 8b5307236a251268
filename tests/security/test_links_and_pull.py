"""Downloads per RFC 9110, cached links that keep their promise, and a pull that never
writes outside --to (issue 13, points 7, 8 and 9)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from rawexport.client.client import DownloadError, Export, ExportClient
from rawexport.client.pull import Puller
from rawexport.timeutil import HOUR_MS
from tests.conftest import CURRENT_HOUR, World

DATA = bytes(range(256)) * 64
PAST = CURRENT_HOUR - 3 * HOUR_MS  # Beijing 2025011009
HOUR_URL = "/v2/insights/hour/page/{ai}/2025011009.json?expire={expire}"


def link_of(world: World, expire: int = 60) -> str:
    r = world.client.get(
        HOUR_URL.format(ai=world.project.ai, expire=expire), headers=world.token_headers()
    )
    (link,) = r.json()["downloadLinks"]
    return str(link)


def test_range_of_another_unit_or_several_ranges_serve_the_whole_file(world: World) -> None:
    world.finish("page", PAST, [DATA])
    link = link_of(world)
    for header in ("items=0-5", "bytes=0-5, 10-20", "bytes 0-5"):
        r = world.client.get(link, headers={"Range": header})
        assert r.status_code == 200 and r.content == DATA, header
    r = world.client.get(link, headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == DATA[10:20]


def test_if_none_match_compares_weakly_and_takes_lists(world: World) -> None:
    world.finish("page", PAST, [DATA])
    link = link_of(world)
    md5 = hashlib.md5(DATA).hexdigest()
    for header in (f'"{md5}"', f'W/"{md5}"', f'"other", "{md5}"', "*"):
        r = world.client.get(link, headers={"If-None-Match": header})
        assert r.status_code == 304, header
    assert world.client.get(link, headers={"If-None-Match": '"other"'}).status_code == 200


def test_a_cached_link_is_reused_only_with_half_the_asked_lifetime_left(world: World) -> None:
    world.finish("page", PAST, [DATA])
    short = link_of(world, expire=1)  # 60 s
    world.clock.now += 20_000
    assert link_of(world, expire=1) == short  # 40 s left of the 60 asked: the same link
    world.clock.now += 15_000
    renewed = link_of(world, expire=1)  # 25 s left: less than half, a new link
    assert renewed != short
    world.clock.now += 20_000
    # The review's case: expire=1, then expire=10080 with seconds left: not the old link.
    week = link_of(world, expire=10080)
    expires = int(parse_qs(urlsplit(week).query)["expires"][0])
    assert week not in (short, renewed) and expires == world.clock.now + 10080 * 60_000
    world.clock.now += 60_000  # asked again soon after: the same link, not extended
    assert link_of(world, expire=10080) == week


FOLDER = "abcd_0123456789abcdef_page_v2_202501100100"
FAR = "expires=99999999999999&sign=x"


def offline_client(manifest: bytes) -> ExportClient:
    """A client whose server (or man in the middle) answers every GET with `manifest`."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=manifest, headers={"content-type": "application/json"})

    http = httpx.Client(transport=httpx.MockTransport(handler))
    return ExportClient("http://h", "0123456789abcdef", token="t", http=http, sleep=lambda s: None)


@pytest.mark.parametrize("data_type", ["../../escape", "/abs/escape", "page/../../x"])
def test_pull_refuses_data_types_that_name_paths(tmp_path: Path, data_type: str) -> None:
    client = offline_client(b"{}")
    part = f"http://h/{FOLDER}/part-00000-{'0' * 8}-0000-0000-0000-{'0' * 12}-c000.csv.gz?{FAR}"
    answer = Export("FINISHED", {data_type: [part]}, {}, "", {})
    to = tmp_path / "to"
    with pytest.raises(DownloadError, match="unknown data type"):
        Puller(client, answer, lambda: answer, to).run("hour", "2025011009")
    assert not list(tmp_path.rglob("*.csv.gz"))
    assert not Path("/abs/escape").exists()
    client.close()


@pytest.mark.parametrize("hour", ["../../../x", "/tmp/x", "2025011010", "20250110091"])
def test_pull_refuses_a_manifest_hour_it_did_not_ask_for(tmp_path: Path, hour: str) -> None:
    manifest = json.dumps({"parts": [], "rows": 0, "exportHour": hour}).encode()
    client = offline_client(manifest)
    answer = Export(
        "FINISHED", {"page": []}, {"page": [f"http://h/{FOLDER}/_manifest.json?{FAR}"]}, "", {}
    )
    with pytest.raises(DownloadError, match="not one this pull asked for"):
        Puller(client, answer, lambda: answer, tmp_path / "to").run("hour", "2025011009")
    assert not list(tmp_path.rglob("_manifest.json"))
    client.close()
