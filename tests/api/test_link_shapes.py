"""Links as real GrowingIO clients parse them: v1 day prefixes, base URL in the cache key,
a public_url with a path, and downloads through every link shape."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from rawexport.blobs import links
from rawexport.schema import V1_TYPE_NAMES
from rawexport.timeutil import HOUR_MS, parse_export_date
from tests.conftest import World, csv_gz

DAY = "20250109"
DAY_START = parse_export_date("day", DAY).start_ms


def finish_v1_day(world: World, parts_per_hour: int = 2) -> dict[str, list[bytes]]:
    """Every v1 type of DAY exported: per type, the bytes of its parts in hour order."""
    data: dict[str, list[bytes]] = {}
    for name in V1_TYPE_NAMES:
        for h in range(24):
            parts = [csv_gz(f"h,p\n{name}{h},{i}\n") for i in range(parts_per_hour)]
            world.finish(name, DAY_START + h * HOUR_MS, parts, version="v1")
            data.setdefault(name, []).extend(parts)
    return data


def test_v1_day_has_one_prefix_per_type_and_part_numbers_unique_in_the_day(
    world: World,
) -> None:
    data = finish_v1_day(world)
    r = world.client.get(f"/insights/{world.project.ai}/{DAY}.json", headers=world.headers())
    body = r.json()
    assert r.status_code == 200 and body["status"] == "FINISHED"
    by_prefix: dict[str, list[str]] = {}
    for link in body["downlinks"]:
        first, name = urlsplit(link).path.lstrip("/").split("/")
        by_prefix.setdefault(first, []).append(name)
    assert len(by_prefix) == len(V1_TYPE_NAMES)
    for first, names in by_prefix.items():
        _, ai, v1_type, stamp = links.parse_first_segment(first) or ("", "", "", "")
        assert (ai, stamp) == (world.project.ai, DAY) and v1_type in V1_TYPE_NAMES
        assert [n[:10] for n in names] == [f"part-{i:05d}" for i in range(48)]
        # Each link downloads its own hour's part, in hour order.
        got = [world.client.get(link).content for link in body["downlinks"] if first in link]
        assert got == data[v1_type]
    # An hour keeps its hour prefix and its own part numbers.
    r = world.client.get(f"/insights/{world.project.ai}/2025010903.json", headers=world.headers())
    hour_links = r.json()["downlinks"]
    assert len(hour_links) == 2 * len(V1_TYPE_NAMES)
    assert all("_202501081900/part-0000" in link for link in hour_links)  # UTC hour stamp


def test_downloads_follow_every_prefix_length(make_world: Callable[..., World]) -> None:
    for base in ("http://ab:12345", "http://127.0.0.1:8080", "http://" + "h" * 46 + ":1"):
        w = make_world(public_url=base)
        _, keys = w.finish("page", DAY_START, [csv_gz("a\n1\n"), csv_gz("a\n2\n")])
        url = f"/v2/insights/hour/page/{w.project.ai}/2025010900.json"
        body = w.client.get(url, headers=w.token_headers()).json()
        assert len(body["downloadLinks"]) == 2
        for link, key in zip(body["downloadLinks"], keys, strict=True):
            assert link.startswith(f"{base}/{links.link_path(key, base)}?")
            path_and_query = link[len(base) :]
            r = w.client.get(path_and_query)
            assert r.status_code == 200 and r.content == w.blobs.path(key).read_bytes()
            # the signature covers the resized prefix: another prefix is refused
            first, rest = path_and_query.split("_", 1)
            assert w.client.get(first + "0_" + rest).status_code == 403


def test_link_cache_is_keyed_by_the_base_url(make_world: Callable[..., World]) -> None:
    w = make_world(public_url="http://old.example:8080")
    w.finish("page", DAY_START)
    url = f"/v2/insights/hour/page/{w.project.ai}/2025010900.json?expire=60"
    first = w.client.get(url, headers=w.token_headers()).json()["downloadLinks"]
    again = w.client.get(url, headers=w.token_headers()).json()["downloadLinks"]
    assert first == again and first[0].startswith("http://old.example:8080/")
    # The same catalog served under a new public_url: links of the new base at once.
    w2 = make_world(home=w.settings.home, public_url="https://new.example")
    w2.client.headers.clear()
    body = w2.client.get(url, headers={"Authorization": w.token}).json()
    assert body["downloadLinks"][0].startswith("https://new.example/")


def test_public_url_with_a_path_routes_the_api_and_downloads_under_it(
    make_world: Callable[..., World],
) -> None:
    w = make_world(public_url="https://proxy.example/export")
    _, keys = w.finish("page", DAY_START)
    url = f"/export/v2/insights/hour/page/{w.project.ai}/2025010900.json"
    body = w.client.get(url, headers=w.token_headers()).json()
    (link,) = body["downloadLinks"]
    assert link.startswith("https://proxy.example/export/")
    r = w.client.get(urlsplit(link).path + "?" + urlsplit(link).query)
    assert r.status_code == 200 and r.content == w.blobs.path(keys[0]).read_bytes()
    # and the routes still answer without the prefix (a proxy that strips it)
    assert w.client.get(url.removeprefix("/export"), headers=w.token_headers()).status_code == 200
