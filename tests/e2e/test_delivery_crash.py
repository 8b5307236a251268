"""kill -9 of `rawexport serve` in the middle of a delivery: after a restart the hour is
delivered completely, once, under its revision's keys, and its marker comes last."""

from __future__ import annotations

import json
import time
from pathlib import Path

import duckdb
import pytest

from rawexport.timeutil import HOUR_MS, beijing_hour_label, hour_floor, now_ms
from tests.e2e_util import Server, env_for, free_port, run_cli

pytestmark = pytest.mark.e2e


def visible(directory: Path) -> set[str]:
    """Names a reader sees (Hadoop's convention: names starting with . or _ are hidden)."""
    if not directory.is_dir():
        return set()
    return {p.name for p in directory.iterdir() if not p.name.startswith((".", "_"))}


def test_kill_9_during_a_delivery_then_restart_delivers_the_hour_once(tmp_path: Path) -> None:
    home, port = tmp_path / "home", free_port()
    env = env_for(
        home,
        port,
        RAWEXPORT_PART_BYTES="65536",
        RAWEXPORT_LEASE_SECONDS="3",
        RAWEXPORT_GRACE_SECONDS="0",
        RAWEXPORT_PLAN_INTERVAL="0.5",
        RAWEXPORT_DELIVERY_INTERVAL="0.5",
        RAWEXPORT_WORKERS="1",
    )
    hour = hour_floor(now_ms()) - 2 * HOUR_MS
    label = beijing_hour_label(hour)
    ai = run_cli(["project", "create", "--name", "p", "--export-since", label, "--no-v1"], env)[
        "ai"
    ]
    run_cli(
        ["generate", "--project", ai, "--start", label, "--hours", "1"]
        + ["--events-per-hour", "300000", "--data-type", "page"],
        env,
        timeout=300,
    )
    [job] = run_cli(["export", "run", "--project", ai, "--hour", label, "--data-type", "page"], env)
    assert job["status"] == "finished"
    land = tmp_path / "landing"
    run_cli(
        ["destination", "add", "--project", ai, "--name", "lake", "--dir", str(land)]
        + ["--format", "parquet", "--types", "page", "--start", label],
        env,
    )
    revision = land / ai / "v2" / "page" / label[:8] / label[8:] / "r1"
    log = tmp_path / "serve.log"

    with Server(["serve"], env, port, log) as first:
        first.wait_ready()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(visible(revision)) < 3:
            time.sleep(0.01)
        first.kill()  # mid-delivery: some parts there, no marker
    partial = visible(revision)
    assert len(partial) >= 3, "the delivery never started"
    assert not (revision / "_SUCCESS").exists(), "the delivery ended before the kill"

    with Server(["serve"], env, port, log) as second:
        second.wait_ready()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not (revision / "_SUCCESS").exists():
            time.sleep(0.2)
        assert (revision / "_SUCCESS").exists(), log.read_text()[-3000:]
        second.stop()

    manifest = json.loads((revision / "_manifest.json").read_text())
    names = [f["key"] for f in manifest["files"]]
    assert visible(revision) == set(names) and partial <= set(names)
    assert [int(n[5:10]) for n in names] == list(range(len(names)))  # part-00000...
    assert manifest["rows"] == job["rows"] and manifest["revision"] == 1
    with duckdb.connect() as con:
        got = con.execute(f"SELECT count(*) FROM read_parquet('{revision}/*.parquet')").fetchone()
    assert got is not None and got[0] == job["rows"]
    listed = run_cli(["deliveries", "list", "--project", ai], env)
    [d] = [d for d in listed if d["hour"] == label]  # later closed hours are empty ones
    assert (d["status"], d["revision"], d["files"]) == ("delivered", 1, len(names))
    assert d["attempts"] >= 2  # the killed attempt and the one that finished
    assert [p.name for p in revision.parent.iterdir()] == ["r1"]  # one revision, once
