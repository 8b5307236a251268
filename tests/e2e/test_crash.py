"""A process crash (kill -9) of `rawexport serve` during an export: the job runs again after
a restart, and no partial revision is ever linked.

A killed process keeps the page cache, so this shows crash safety of the process, not
durability against power loss (tests/export/test_worker.py checks the fsync order).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rawexport.timeutil import HOUR_MS, beijing_hour_label, hour_floor, now_ms
from tests.e2e_util import Server, download, env_for, free_port, get_json, run_cli

pytestmark = pytest.mark.e2e


def count_rows(data: bytes) -> int:
    text = io.TextIOWrapper(io.BytesIO(gzip.decompress(data)), encoding="utf-8", newline="")
    return sum(1 for _ in csv.reader(text, quotechar='"', escapechar="\\")) - 1


def test_process_crash_during_export_runs_the_job_again_and_links_only_whole_revisions(
    tmp_path: Path,
) -> None:
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
    hour = hour_floor(now_ms()) - 2 * HOUR_MS
    label = beijing_hour_label(hour)
    project = run_cli(
        ["project", "create", "--name", "big", "--export-since", label, "--no-v1"], env
    )
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
    url = f"http://127.0.0.1:{port}/v2/insights/hour/page/{ai}/{label}.json?expire=10&manifest=true"
    headers = {"Authorization": token}
    answers: list[str] = []

    def links_seen() -> list[str]:
        """The links of one answer; a FINISHED one must be a whole revision: every part as
        its manifest says (size, sha256) and every row of the hour."""
        status, body = get_json(url, headers)
        assert status == 200, body
        answers.append(str(body["status"]))
        links = list(body["downloadLinks"])
        if body["status"] != "FINISHED":
            assert links == []
            return links
        [manifest_link] = body["manifest"]
        manifest = json.loads(download(manifest_link))
        parts = [download(link) for link in links]
        assert [(len(d), hashlib.sha256(d).hexdigest()) for d in parts] == [
            (m["bytes"], m["sha256"]) for m in manifest["parts"]
        ]
        assert sum(count_rows(d) for d in parts) == manifest["rows"] == store_rows
        return links

    exports = home / "exports"
    with Server(["serve"], env, port, tmp_path / "first.log") as first:
        first.wait_ready()
        deadline = time.monotonic() + 120
        ask_at = 0.0
        while time.monotonic() < deadline:
            if any(exports.glob(f"*_{ai}_page_v2_*/part-*")):
                break
            if time.monotonic() >= ask_at:  # within the rate limit
                assert links_seen() == []
                ask_at = time.monotonic() + 1
            time.sleep(0.01)
        else:
            raise AssertionError("the page export never started writing parts")
        assert links_seen() == []
        first.kill()
    first_parts = {p.name for p in exports.glob(f"*_{ai}_page_v2_*/part-*")}
    assert first_parts

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
    assert answers[0] == "RUNNING" and answers[-1] == "FINISHED"
    # The job ran twice: the killed attempt and the one after the restart, whose parts
    # have names of their own (the killed attempt's are orphans, never linked).
    finished = run_cli(["jobs", "list", "--project", ai, "--status", "finished"], env)
    [job] = [j for j in finished if (j["data_type"], j["hour"]) == ("page", label)]
    assert (job["data_type"], job["attempts"]) == ("page", 2)
    shown = run_cli(["jobs", "show", str(job["id"])], env)
    committed = {f["key"].split("/")[1] for f in shown["files"]}
    assert len(committed) == len(links) and not committed & first_parts
