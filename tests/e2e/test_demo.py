"""GrowingIO's documented flow against a real `rawexport demo` process."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from rawexport.schema import DATA_TYPE_NAMES, V1_TYPE_NAMES, export_columns
from tests.e2e_util import Server, auth_code, download, env_for, free_port, get_json

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, Any]]]:
    home = tmp_path_factory.mktemp("demo")
    port = free_port()
    env = env_for(home, port)
    args = ["demo", "--home", str(home), "--port", str(port), "--events-per-hour", "400"]
    with Server(args, env, port, home / "server.log") as server:
        server.wait_ready(timeout=180)
        creds = json.loads((home / "demo-credentials.json").read_text())
        yield server, creds


def rows_of(data: bytes) -> tuple[list[str], list[list[str]]]:
    text = io.TextIOWrapper(io.BytesIO(gzip.decompress(data)), encoding="utf-8", newline="")
    rows = list(csv.reader(text, quotechar='"', escapechar="\\"))
    return rows[0], rows[1:]


def check_files(links: list[str], version: str, name: str) -> int:
    total = 0
    for link in links:
        assert link.startswith("http://127.0.0.1:")
        header, rows = rows_of(download(link))
        assert header == list(export_columns(version, name))
        assert all(len(r) == len(header) for r in rows)
        total += len(rows)
    return total


def test_v2_day_links_for_every_type(demo: tuple[Server, dict[str, Any]]) -> None:
    server, creds = demo
    code = auth_code(
        server.base, creds["ai"], creds["project_uid"], creds["public_key"], creds["private_key"]
    )
    headers = {"X-Client-Id": creds["public_key"], "Authorization": code}
    day = creds["example_day"]
    total = 0
    for name in DATA_TYPE_NAMES:
        url = f"{server.base}/v2/insights/day/{name}/{creds['ai']}/{day}.json?expire=30"
        status, body = get_json(url, headers)
        assert status == 200, body
        assert body["status"] == "FINISHED", body
        assert list(body) == [
            "status",
            "downloadLinks",
            "exportType",
            "dataType",
            "exportDate",
            "exportVersion",
            "requestTime",
            "errorMsg",
            "manifest",  # rawexport's extension, after GrowingIO's fields
        ]
        assert (body["exportType"], body["dataType"], body["exportDate"]) == ("day", name, day)
        assert body["exportVersion"] == "v2" and body["errorMsg"] == ""
        assert body["downloadLinks"], name
        total += check_files(body["downloadLinks"], "v2", name)
    assert total > 24 * 400 * 0.9


def test_v2_all_types_call(demo: tuple[Server, dict[str, Any]]) -> None:
    server, creds = demo
    headers = {"Authorization": creds["api_token"]}
    url = f"{server.base}/v2/insights/day/{creds['ai']}/{creds['example_day']}.json"
    status, body = get_json(url, headers)
    assert status == 200 and body["status"] == "FINISHED"
    assert "dataType" not in body
    assert sorted(body["downloadLinks"]) == sorted(DATA_TYPE_NAMES)
    for name, links in body["downloadLinks"].items():
        check_files(links[:3], "v2", name)


def test_v1_day_and_hour(demo: tuple[Server, dict[str, Any]]) -> None:
    server, creds = demo
    code = auth_code(
        server.base, creds["ai"], creds["project_uid"], creds["public_key"], creds["private_key"]
    )
    headers = {"X-Client-Id": creds["public_key"], "Authorization": code}
    for date in (creds["example_day"], creds["example_day"] + "13"):
        status, body = get_json(f"{server.base}/insights/{creds['ai']}/{date}.json", headers)
        assert status == 200 and body["status"] == "FINISHED", body
        assert list(body) == ["status", "downlinks", "manifest"]
        seen = set()
        for link in body["downlinks"]:
            prefix = urllib.parse.urlsplit(link).path.split("/")[1]
            match = re.fullmatch(rf"[0-9a-f]{{4}}_{creds['ai']}_([a-z_]+)_\d{{12}}", prefix)
            assert match, link
            name = match.group(1)
            seen.add(name)
            check_files([link], "v1", name)
        assert seen == set(V1_TYPE_NAMES)


def test_demo_credentials_file_shape(demo: tuple[Server, dict[str, Any]]) -> None:
    _, creds = demo
    for field in ("base_url", "ai", "project_uid", "public_key", "private_key", "api_token"):
        assert creds[field]
