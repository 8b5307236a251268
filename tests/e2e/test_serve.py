"""`rawexport serve`'s periodic passes: the compactor every compact_interval seconds and the
sweeper every sweep_interval seconds, against a real process."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rawexport.timeutil import HOUR_MS, beijing_hour_label, hour_floor, now_ms
from tests.e2e_util import Server, env_for, free_port, run_cli

pytestmark = pytest.mark.e2e


def wait_for(what: str, check: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"serve did not {what} within {seconds} s")


def test_serve_compacts_and_sweeps_on_its_intervals(tmp_path: Path) -> None:
    home, port = tmp_path / "home", free_port()
    env = env_for(
        home,
        port,
        RAWEXPORT_COMPACT_INTERVAL="0.3",
        RAWEXPORT_COMPACT_MIN_FILES="2",
        RAWEXPORT_SWEEP_INTERVAL="0.5",
        RAWEXPORT_GRACE_SECONDS="0",
        RAWEXPORT_PLAN_INTERVAL="0.5",
        RAWEXPORT_WORKERS="1",
    )
    hour = hour_floor(now_ms()) - 3 * HOUR_MS
    label = beijing_hour_label(hour)
    ai = run_cli(["project", "create", "--name", "s", "--export-since", label, "--no-v1"], env)[
        "ai"
    ]
    run_cli(
        ["generate", "--project", ai, "--start", label, "--hours", "1", "--data-type", "page"], env
    )
    run_cli(["export", "run", "--project", ai, "--hour", label, "--data-type", "page"], env)
    events = home / "events" / ai / "custom_event"

    def event_files() -> list[Path]:
        return sorted(p for p in events.glob("*/*.parquet") if not p.name.startswith("."))

    with Server(["serve"], env, port, tmp_path / "serve.log") as server:
        server.wait_ready()
        # Two batches after the compactor's first pass: two small files, merged by a later one.
        for batch in range(2):
            body = "\n".join(
                json.dumps(
                    {"type": "custom_event", "visitUserId": f"b{batch}-{i}", "eventName": "e"}
                )
                for i in range(20)
            ).encode()
            req = urllib.request.Request(
                f"{server.base}/api/v1/projects/{ai}/events", data=body, method="POST"
            )
            with urllib.request.urlopen(req, timeout=10) as r:
                assert r.status == 200 and json.loads(r.read())["accepted"] == 20
        wait_for(
            "compact the new hour",
            lambda: 0 < len(event_files()) == len({p.parent for p in event_files()}),
        )
        assert sum(pq.read_metadata(p).num_rows for p in event_files()) == 40

        # A new revision, run by serve's workers, makes revision 1 superseded; no link was
        # issued for it, so a later sweep pass drops its files.
        run_cli(["export", "rerun", "--project", ai, "--hour", label]
                + ["--data-type", "page", "--queue"], env)  # fmt: skip

        def superseded() -> bool:
            jobs = run_cli(["jobs", "list", "--project", ai, "--status", "superseded"], env)
            return [(j["data_type"], j["revision"]) for j in jobs] == [("page", 1)]

        wait_for("sweep the superseded revision", superseded)
        [old] = run_cli(["jobs", "list", "--project", ai, "--status", "superseded"], env)
        assert run_cli(["jobs", "show", str(old["id"])], env)["files"] == []
