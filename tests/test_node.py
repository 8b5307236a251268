"""The node `serve` runs, assembled once: its app answers (events in, an export out through
its own worker pool), its loops run while started and end with it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from starlette.testclient import TestClient

from rawexport.node import Node
from rawexport.settings import Settings
from rawexport.timeutil import HOUR_MS, now_ms


def loop_threads() -> set[str]:
    names = ("export-scheduler", "compactor", "retention-sweeper", "export-worker")
    return {t.name for t in threading.enumerate() if t.name.startswith(names)}


def test_a_node_serves_takes_events_and_exports_with_its_own_loops(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, workers=1, plan_interval=0.2)
    node = Node.open(settings)
    catalog = node.services.catalog
    left = HOUR_MS - now_ms() % HOUR_MS
    if left < 10_000:  # the events must land in the hour this test exports
        time.sleep(left / 1000 + 0.1)
    hour = now_ms() // HOUR_MS * HOUR_MS
    project = catalog.create_project("n", export_since_ms=hour)  # no closed hour to plan
    token = catalog.create_api_token(project.id)
    with node, TestClient(node.app) as client:
        assert {"export-scheduler", "compactor", "retention-sweeper", "export-worker"} <= (
            loop_threads()
        )
        assert client.get("/healthz").status_code == 200
        sent = client.post(
            f"/api/v1/projects/{project.ai}/events",
            content=b'{"type":"custom_event","visitUserId":"v","eventName":"e","time":1}\n',
            headers={"Content-Type": "application/x-ndjson", "Authorization": f"Bearer {token}"},
        )
        assert sent.status_code == 200 and sent.json()["accepted"] == 1
        # the hour of those events exported now, by this node's worker pool
        job = catalog.new_revision(
            project.id, "v2", "custom_event", hour, preview=True, now=now_ms()
        )
        deadline = time.monotonic() + 30
        while catalog.job(job.id).status != "finished" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert catalog.job(job.id).status == "finished" and catalog.job(job.id).rows == 1
    assert loop_threads() == set()
