"""GrowingIO's documented flow against a real `rawexport demo` process."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rawexport.schema import DATA_TYPE_NAMES, V1_TYPE_NAMES, export_columns
from tests.e2e_util import (
    RAWEXPORT,
    Server,
    auth_code,
    download,
    env_for,
    free_port,
    get_json,
)

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
        ]  # exactly GrowingIO's fields (rawexport's manifest only with ?manifest=true)
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
        assert list(body) == ["status", "downlinks"]
        seen = set()
        for link in body["downlinks"]:
            prefix = urllib.parse.urlsplit(link).path.split("/")[1]
            # A day: one folder per type for the day; an hour: the hour's UTC stamp.
            stamp = date if len(date) == 8 else r"\d{12}"
            match = re.fullmatch(rf"[0-9a-f]+_{creds['ai']}_([a-z_]+)_{stamp}", prefix)
            assert match, link
            name = match.group(1)
            seen.add(name)
            check_files([link], "v1", name)
        assert seen == set(V1_TYPE_NAMES)


def test_demo_credentials_file_shape(demo: tuple[Server, dict[str, Any]]) -> None:
    _, creds = demo
    for field in ("base_url", "ai", "project_uid", "public_key", "private_key", "api_token"):
        assert creds[field]


def test_pull_v1_day_verified_into_hour_folders(
    demo: tuple[Server, dict[str, Any]], tmp_path: Path
) -> None:
    """`rawexport pull --version v1`: every listed v1 part once, checked against its manifest."""
    server, creds = demo
    day = creds["example_day"]
    env = env_for(tmp_path, server.port) | {
        "RAWEXPORT_CLIENT_BASE_URL": server.base,
        "RAWEXPORT_CLIENT_AI": creds["ai"],
        "RAWEXPORT_CLIENT_TOKEN": creds["api_token"],
    }
    to = tmp_path / "v1"
    args = ["pull", "--version", "v1", "--type", "day", "--date", day, "--to", str(to)]
    out = subprocess.run([*RAWEXPORT, *args], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    _, body = get_json(
        f"{server.base}/insights/{creds['ai']}/{day}.json", {"Authorization": creds["api_token"]}
    )
    assert set(summary["types"]) == set(V1_TYPE_NAMES)
    parts = sorted(to.rglob("part-*.csv.gz"))
    assert len(parts) == len(body["downlinks"])  # one file per link: none overwrote another
    hours = {p.parent for p in parts}
    assert len(hours) == 24 * len(V1_TYPE_NAMES)  # each in its own type/day/hour folder
    for manifest_path in to.rglob("_manifest.json"):
        manifest = json.loads(manifest_path.read_text())
        for entry in manifest["parts"]:
            number = entry["key"].rsplit("/", 1)[1][:10]
            data = (manifest_path.parent / f"{number}.csv.gz").read_bytes()
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    for name, info in summary["types"].items():
        assert info["parts"] == sum(1 for p in parts if p.parts[-4] == name)
