"""`rawexport pull` against a real `rawexport serve`: day pulls, loads, exit codes, 429, a kill."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow.parquet as pq
import pytest

from rawexport.client.client import ExportClient
from rawexport.client.pull import Part, PullOptions, pull, verify
from rawexport.schema import DATA_TYPE_NAMES
from rawexport.timeutil import (
    DAY_MS,
    HOUR_MS,
    beijing,
    beijing_day_start,
    beijing_hour_label,
    now_ms,
)
from tests.e2e_util import Server, env_for, free_port, run_cli

pytestmark = pytest.mark.e2e

PULL = [sys.executable, "-m", "rawexport.cli", "pull"]
NOW = now_ms()
DAY = beijing(beijing_day_start(NOW) - DAY_MS).strftime("%Y%m%d")
BIG_HOUR = beijing_hour_label(NOW - NOW % HOUR_MS - 2 * HOUR_MS)
BIG_ROWS = 500_000


@dataclass
class Stack:
    home: Path
    env: dict[str, str]
    port: int
    server: Server
    projects: dict[str, dict[str, str]]  # name -> ai, uid, public_key, private_key, token
    day_page_done: bool = False

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pull_cli(self, project: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        p = self.projects[project]
        full = {
            **self.env,
            "RAWEXPORT_CLIENT_BASE_URL": self.base,
            "RAWEXPORT_CLIENT_AI": p["ai"],
            "RAWEXPORT_CLIENT_TOKEN": p["token"],
            **env,
        }
        return subprocess.run([*PULL, *args], env=full, capture_output=True, text=True, timeout=400)


def day_page_exported(stack: Stack, tmp_path: Path) -> None:
    """Wait until the day project's page hours are exported (a test alone, or first in a
    random order, must not depend on another test having waited)."""
    if not stack.day_page_done:
        args = ["--type", "day", "--data-type", "page", "--date", DAY, "--to", str(tmp_path)]
        summary_of(stack.pull_cli("day", *args, "--wait", "300"))
        stack.day_page_done = True


def exports_settled(stack: Stack, timeout: float = 300) -> None:
    """Wait until every planned export job has ended (finished or error): a test that kills
    the server must not kill an export attempt, which MAX_ATTEMPTS=1 ends in ERROR (and
    the tests pulling that hour then fail, whatever order they run in)."""
    deadline = time.monotonic() + timeout
    jobs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        jobs = run_cli(["jobs", "list", "--limit", "100000"], stack.env)
        if jobs and all(j["status"] in ("finished", "error") for j in jobs):
            return
        time.sleep(0.5)
    pending = [j for j in jobs if j["status"] not in ("finished", "error")]
    raise AssertionError(f"{len(pending)} export jobs still pending after {timeout} s")


def make_project(env: dict[str, str], name: str, since: str) -> dict[str, str]:
    p = run_cli(["project", "create", "--name", name, "--export-since", since, "--no-v1"], env)
    key = run_cli(["key", "create", "--project", p["ai"]], env)
    token = run_cli(["token", "create", "--project", p["ai"]], env)["token"]
    return {"ai": p["ai"], "uid": p["uid"], **key, "token": token}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("pull-e2e")
    port = free_port()
    env = env_for(
        home,
        port,
        RAWEXPORT_PART_BYTES=str(256 * 1024 * 1024),
        RAWEXPORT_RATE_LIMIT="1",
        RAWEXPORT_RATE_BURST="1",
        RAWEXPORT_RATE_QUEUE="1",  # one waiting request per credential: more get 429
        RAWEXPORT_GRACE_SECONDS="0",
        RAWEXPORT_PLAN_INTERVAL="0.5",
        RAWEXPORT_MAX_ATTEMPTS="1",
        RAWEXPORT_DUCKDB_THREADS="1",
    )
    projects = {
        "day": make_project(env, "day", DAY + "00"),
        "big": make_project(env, "big", BIG_HOUR),
        "bad": make_project(env, "bad", BIG_HOUR),
    }
    gen = ["generate", "--hours", "1", "--start", BIG_HOUR, "--data-type"]
    run_cli(["generate", "--project", projects["day"]["ai"], "--start", DAY + "00"]
            + ["--hours", "24", "--events-per-hour", "100"], env)  # fmt: skip
    run_cli([*gen, "page", "--project", projects["big"]["ai"], "--events-per-hour", "500000"], env)
    run_cli([*gen, "visit", "--project", projects["bad"]["ai"], "--events-per-hour", "50"], env)
    for f in (home / "events" / projects["bad"]["ai"] / "visit").rglob("*.parquet"):
        f.write_bytes(b"not parquet")  # its export fails for good: status ERROR
    server = Server(["serve"], env, port, home / "server.log")
    server.wait_ready()
    stack = Stack(home, env, port, server, projects)
    try:
        yield stack
    finally:
        stack.server.stop()


def summary_of(out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def test_pull_a_day_of_all_types_into_parquet_and_duckdb(stack: Stack, tmp_path: Path) -> None:
    p = stack.projects["day"]
    to, db = tmp_path / "out", tmp_path / "gio.duckdb"
    args = ["--type", "day", "--date", DAY, "--to", str(to), "--parquet", "--duckdb", str(db)]
    hmac_env = {
        "RAWEXPORT_CLIENT_TOKEN": "",
        "RAWEXPORT_CLIENT_PROJECT_UID": p["uid"],
        "RAWEXPORT_CLIENT_PUBLIC_KEY": p["public_key"],
        "RAWEXPORT_CLIENT_PRIVATE_KEY": p["private_key"],
    }
    summary = summary_of(stack.pull_cli("day", *args, "--wait", "300", **hmac_env))
    assert sorted(summary["types"]) == sorted(DATA_TYPE_NAMES)
    with duckdb.connect(str(db)) as con:
        for t, info in summary["types"].items():
            manifests = list((to / t / DAY).glob("*/_manifest.json"))
            assert len(manifests) == 24, t
            rows = sum(json.loads(m.read_text())["rows"] for m in manifests)
            assert rows == info["rows"] > 0, t
            assert pq.read_table(info["parquet"]).num_rows == rows, t
            found = con.execute(f'SELECT count(*) FROM "{t}"').fetchone()
            assert found is not None and found[0] == rows, t
    again = summary_of(stack.pull_cli("day", *args, **hmac_env))
    assert again["downloaded_bytes"] == 0 and again["skipped_parts"] == 240
    with duckdb.connect(str(db)) as con:
        found = con.execute('SELECT count(*) FROM "page"').fetchone()
        assert found is not None and found[0] == summary["types"]["page"]["rows"]


def test_exit_codes_and_one_line_messages(stack: Stack, tmp_path: Path) -> None:
    to = str(tmp_path)
    gone = stack.pull_cli("day", "--type", "day", "--date", "20200101", "--to", to)
    assert gone.returncode == 4 and "NOT_EXISTS" in gone.stderr
    assert gone.stderr.count("\n") == 1 and gone.stdout == ""
    bad = stack.pull_cli("bad", "--type", "hour", "--data-type", "visit", "--date", BIG_HOUR,
                         "--to", to, "--wait", "60")  # fmt: skip
    assert bad.returncode == 5 and "ERROR" in bad.stderr and bad.stderr.count("\n") == 1
    refused = stack.pull_cli(
        "day", "--type", "day", "--date", DAY, "--to", to, RAWEXPORT_CLIENT_TOKEN="nope" * 12
    )
    assert refused.returncode == 3 and refused.stderr.count("\n") == 1
    open_hour = beijing_hour_label(now_ms())
    running = stack.pull_cli("day", "--type", "hour", "--date", open_hour, "--to", to)
    assert running.returncode == 7 and "still RUNNING" in running.stderr
    usage = stack.pull_cli("day", "--type", "hour", "--date", DAY, "--to", to)
    assert usage.returncode == 2


def test_a_part_corrupted_on_the_server_is_reported(stack: Stack, tmp_path: Path) -> None:
    day_page_exported(stack, tmp_path / "first")
    ai = stack.projects["day"]["ai"]
    part = next(iter(sorted((stack.home / "exports").glob(f"*_{ai}_page_v2_*/part-*.csv.gz"))))
    good = part.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 3] ^= 0x55
    part.write_bytes(bytes(bad))
    try:
        out = stack.pull_cli("day", "--type", "day", "--data-type", "page", "--date", DAY,
                             "--to", str(tmp_path))  # fmt: skip
    finally:
        part.write_bytes(good)
    assert out.returncode == 6, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("rawexport pull: page ") and "sha256 differs" in last
    assert "after 3 downloads" in last


def test_429_is_honoured(stack: Stack, tmp_path: Path) -> None:
    """Requests over the rate wait their turn; past the queue (concurrent calls of one
    credential) the server answers 429 and the client sleeps out Retry-After and retries."""
    day_page_exported(stack, tmp_path)
    statuses: list[int] = []
    http = httpx.Client(event_hooks={"response": [lambda r: statuses.append(r.status_code)]})
    p = stack.projects["day"]
    client = ExportClient(stack.base, p["ai"], token=p["token"], http=http, rate=100.0)
    try:
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: client.export("day", "page", DAY), range(4)))
    finally:
        client.close()
    assert [a.status for a in answers] == ["FINISHED"] * 4
    assert 429 in statuses and statuses.count(200) == 4


def test_server_killed_mid_download_then_pull_resumes_with_range(
    stack: Stack, tmp_path: Path
) -> None:
    exports_settled(stack)  # the kill below must interrupt a download, not an export
    p = stack.projects["big"]
    client = ExportClient(stack.base, p["ai"], p["token"])
    killed: list[int] = []

    def kill_once(part: Part, on_disk: int) -> None:
        if not killed and on_disk >= 4 * 1024 * 1024:
            killed.append(on_disk)
            stack.server.kill()
            stack.server.log.close()
            stack.server = Server(["serve"], stack.env, stack.port, stack.home / "restart.log")

    opts = PullOptions(jobs=1, chunk_size=64 * 1024, on_chunk=kill_once)
    try:
        result = pull(client, "hour", "page", BIG_HOUR, tmp_path, wait=90, options=opts)
    finally:
        client.close()
    assert killed, "the part was too small to be interrupted"
    assert result.statuses[0] == 200 and 206 in result.statuses
    (path,) = result.files["page"]
    (manifest,) = result.manifests["page"]
    assert manifest["rows"] == BIG_ROWS and manifest["bytes"] > 8 * 1024 * 1024
    assert verify(path, manifest["parts"][0], None, None) == ""
    assert not list(tmp_path.rglob("*.partial"))
