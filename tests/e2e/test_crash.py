"""kill -9 of `rawexport serve` during an export: the job completes after a restart, and
no partial part is ever linked."""

from __future__ import annotations

import csv
import gzip
import io
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rawexport.timeutil import HOUR_MS, beijing_hour_label, now_ms
from tests.e2e_util import Server, download, env_for, free_port, get_json, run_cli

pytestmark = pytest.mark.e2e


def count_rows(data: bytes) -> int:
    text = io.TextIOWrapper(io.BytesIO(gzip.decompress(data)), encoding="utf-8", newline="")
    return sum(1 for _ in csv.reader(text, quotechar='"', escapechar="\\")) - 1


def test_kill_during_export_then_restart(tmp_path: Path) -> None:
    home, port = tmp_path / "home", free_port()
    env = env_for(
        home,
        port,
        RAWEXPORT_PART_BYTES="262144",
        RAWEXPORT_LEASE_SECONDS="3",
        RAWEXPORT_GRACE_SECONDS="0",
        RAWEXPORT_PLAN_INTERVAL="0.5",
        RAWEXPORT_WORKERS="1",
        RAWEXPORT_DUCKDB_THREADS="1",
    )
    hour = now_ms() - now_ms() % HOUR_MS - 2 * HOUR_MS
    label = beijing_hour_label(hour)
    project = run_cli(["project", "create", "--name", "big", "--export-since", label], env)
    ai = project["ai"]
    token = run_cli(["token", "create", "--project", ai], env)["token"]
    run_cli(
        ["generate", "--project", ai, "--start", label, "--hours", "1"]
        + ["--events-per-hour", "600000", "--data-type", "page"],
        env,
        timeout=300,
    )
    store_rows = sum(
        pq.read_metadata(f).num_rows for f in (home / "events" / ai / "page").rglob("*.parquet")
    )
    url = f"http://127.0.0.1:{port}/v2/insights/hour/page/{ai}/{label}.json?expire=10"
    headers = {"Authorization": token}

    def links_seen() -> list[str]:
        status, body = get_json(url, headers)
        assert status == 200, body
        if body["status"] != "FINISHED":
            assert body["downloadLinks"] == []
        return list(body["downloadLinks"])

    exports = home / "exports"
    with Server(["serve"], env, port, tmp_path / "first.log") as first:
        first.wait_ready()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if any(exports.glob(f"*_{ai}_page_v2_*/part-*")):
                break
            time.sleep(0.01)
        else:
            raise AssertionError("the page export never started writing parts")
        assert links_seen() == []
        first.kill()

    with Server(["serve"], env, port, tmp_path / "second.log") as second:
        second.wait_ready()
        deadline = time.monotonic() + 180
        links: list[str] = []
        while time.monotonic() < deadline:
            links = links_seen()
            if links:
                break
            time.sleep(0.5)
        assert links, "the export did not finish after the restart"
        assert len(links) > 1
        assert sum(count_rows(download(link)) for link in links) == store_rows
