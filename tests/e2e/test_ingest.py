"""Ingest against real processes: growingio-tracker, a process crash mid-stream, CSV import
round trip."""

from __future__ import annotations

import csv
import gzip
import http.client
import io
import json
import random
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from rawexport.catalog import Catalog
from rawexport.timeutil import HOUR_MS, beijing_hour_label, hour_floor, now_ms
from tests.e2e_util import Server, env_for, free_port, run_cli

pytestmark = pytest.mark.e2e


def read_parts(paths: list[Path]) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for p in paths:
        text = io.TextIOWrapper(io.BytesIO(gzip.decompress(p.read_bytes())), "utf-8", newline="")
        rows += list(csv.DictReader(text, quotechar='"', escapechar="\\", doublequote=False))
    return rows


def export_parts(env: dict[str, str], home: Path, ai: str, data_type: str, hour: int) -> list[Path]:
    """Export the hour now (a preview when it is open); the parts of the revision written."""
    args = ["export", "run", "--project", ai, "--hour", beijing_hour_label(hour)]
    v2 = [r for r in run_cli([*args, "--data-type", data_type], env) if r["version"] == "v2"]
    assert [r["status"] for r in v2] == ["finished"], v2
    catalog = Catalog(f"sqlite:///{(home / 'catalog.db').resolve()}")
    try:
        p = catalog.project(ai)
        assert p is not None
        [job] = [
            j
            for j in catalog.jobs(p.id)
            if (j.version, j.data_type, j.hour_ms, j.revision)
            == ("v2", data_type, hour, v2[0]["revision"])
        ]
        return [home / "exports" / f.key for f in catalog.files(job.id)]
    finally:
        catalog.close()


def export_rows(env: dict[str, str], home: Path, ai: str, data_type: str, hours: set[int]) -> Any:
    rows: list[dict[str, str]] = []
    for hour in sorted(hours):
        rows += read_parts(export_parts(env, home, ai, data_type, hour))
    return rows


def project(env: dict[str, str], since: int | None = None) -> str:
    args = ["project", "create", "--name", "ingest"]
    if since is not None:
        args += ["--export-since", beijing_hour_label(since)]
    return str(run_cli(args, env)["ai"])


def test_growingio_tracker_default_and_buffered(tmp_path: Path) -> None:
    from growingio_tracker import BufferedConsumer, DefaultConsumer, GrowingTracker

    home, port = tmp_path / "home", free_port()
    env = env_for(home, port)
    ai = project(env)
    with Server(["serve"], env, port, tmp_path / "serve.log") as server:
        server.wait_ready()
        start = now_ms()
        default = GrowingTracker(ai, "ds1", server.base, DefaultConsumer(ai, "ds1", server.base))
        default.track_custom_event(
            "buy",
            event_time=1700000000000,
            anonymous_id="dev-1",
            login_user_id="user-1",
            attributes={"price": 12, "tags": ["a", "b"], "名": "值"},
        )
        default.track_user(login_user_id="user-1", anonymous_id="dev-1", attributes={"vip": "yes"})
        buffered = BufferedConsumer(ai, "ds1", server.base, max_size=4)
        tracker = GrowingTracker.consumer(buffered)
        for i in range(10):
            tracker.track_custom_event(
                f"view{i % 3}", anonymous_id=f"dev-b{i}", attributes={"i": i}
            )
        tracker.track_user(anonymous_id="dev-b0", attributes={"plan": "pro"})
        buffered.flush()
        end = now_ms()
    hours = {start - start % HOUR_MS, end - end % HOUR_MS}
    custom = export_rows(env, home, ai, "custom_event", hours)
    by_visitor = {r["visitUserId"]: r for r in custom}
    assert len(custom) == 11 and len(by_visitor) == 11
    buy = by_visitor["dev-1"]
    assert (buy["eventName"], buy["loginUserId"], buy["time"]) == ("buy", "user-1", "1700000000000")
    assert json.loads(buy["eventVariable"]) == {"price": "12", "tags": "a||b", "名": "值"}
    assert start <= int(buy["sendTime"]) <= end
    assert json.loads(by_visitor["dev-b7"]["eventVariable"]) == {"i": "7"}
    assert by_visitor["dev-b7"]["eventName"] == "view1"
    vstr = export_rows(env, home, ai, "vstr", hours)
    assert sorted((r["visitUserId"], r["visitorVariable"]) for r in vstr) == [
        ("dev-1", '{"vip":"yes","$loginUserId":"user-1"}'),
        ("dev-b0", '{"plan":"pro"}'),
    ]


def test_process_crash_mid_stream_loses_no_acknowledged_event(tmp_path: Path) -> None:
    """kill -9 mid-stream: process-crash safety (the page cache survives the kill, so
    this holds without fsync; tests/ingest/test_group_commit.py checks the fsync order)."""
    home, port = tmp_path / "home", free_port()
    env = env_for(home, port, RAWEXPORT_COMPACT_INTERVAL="0.3", RAWEXPORT_COMPACT_MIN_FILES="2")
    ai = project(env)
    acked: list[str] = []
    stop = threading.Event()
    url = f"http://127.0.0.1:{port}/api/v1/projects/{ai}/events"

    def client(n: int) -> None:
        seq = 0
        while not stop.is_set():
            ids = [f"c{n}-{seq}-{i}" for i in range(50)]
            seq += 1
            body = "\n".join(
                json.dumps({"type": "custom_event", "visitUserId": v, "eventName": "k"})
                for v in ids
            ).encode()
            req = urllib.request.Request(url, data=body, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    if r.status == 200 and json.loads(r.read())["accepted"] == 50:
                        acked.extend(ids)
            except (OSError, http.client.HTTPException):  # killed mid-request: not acked
                time.sleep(0.02)

    start = now_ms()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(3)]
    log = tmp_path / "serve.log"
    server = Server(["serve"], env, port, log)
    try:
        server.wait_ready()
        for t in threads:
            t.start()
        for _ in range(20):
            time.sleep(random.uniform(0.3, 0.9))
            server.kill()
            server.log.close()
            server = Server(["serve"], env, port, log)
            server.wait_ready()
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        server.stop()
    end = now_ms()
    assert len(acked) > 1000
    rows = export_rows(
        env, home, ai, "custom_event", {start - start % HOUR_MS, end - end % HOUR_MS}
    )
    counts = Counter(r["visitUserId"] for r in rows)
    assert [v for v, n in counts.items() if n > 1] == []
    assert set(acked) <= set(counts)


def test_csv_import_round_trip(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = env_for(home, free_port())
    hour = hour_floor(now_ms()) - 3 * HOUR_MS
    label = beijing_hour_label(hour)
    src = project(env, hour)
    run_cli(
        ["generate", "--project", src, "--start", label, "--events-per-hour", "20000"]
        + ["--data-type", "custom_event"],
        env,
    )
    parts = export_parts(env, home, src, "custom_event", hour)
    first = read_parts(parts)
    assert len(first) > 1000
    dst = project(env, hour)
    out = run_cli(["ingest", "--project", dst, "--keep-send-time", *map(str, parts)], env)
    assert out["total"] == len(first)
    again = export_rows(env, home, dst, "custom_event", {hour})
    assert again == first
