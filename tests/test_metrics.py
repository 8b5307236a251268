"""/metrics exposes jobs, export rows/bytes/lag, job durations, API latency and rate limits
with the right values after a known workload."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from rawexport.api.app import create_app
from rawexport.api.ratelimit import RateLimiter
from rawexport.demo.generate import generate
from rawexport.export.actions import export_now
from rawexport.node import open_services
from rawexport.settings import Settings
from rawexport.timeutil import HOUR_MS, beijing_hour_label

T0 = 1_735_689_600_000


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_after_a_known_workload(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, rate_limit=1, rate_burst=1, rate_queue=1)
    services = open_services(settings)
    p = services.catalog.create_project("m", export_since_ms=T0, v1_enabled=False)
    token = services.catalog.create_api_token(p.id)
    counts = generate(services.store, p.ai, T0, 1, 1000, data_types=["page", "visit"], seed=2)
    now = T0 + HOUR_MS + 90_000  # 90 s after the hour closed
    services.exporter.clock = lambda: now
    export_now(services.exporter, p, [T0], "page", now)
    export_now(services.exporter, p, [T0], "visit", now)
    services.catalog.plan(p.id, "v2", ["evar"], [T0], now)  # one queued job

    limiter = RateLimiter(1, 1, queue=1)
    app = create_app(
        settings, services.catalog, services.blobs, metrics=services.metrics, limiter=limiter
    )
    with TestClient(app) as client:
        url = f"/v2/insights/hour/page/{p.ai}/{beijing_hour_label(T0)}.json"
        assert client.get(url, headers={"Authorization": token}).status_code == 200
        assert client.get(url, headers={"Authorization": token}).status_code == 200  # delayed 1 s
        limiter.take(f"t{hashlib.sha256(token.encode()).hexdigest()[:16]}")  # a request waiting
        assert client.get(url, headers={"Authorization": token}).status_code == 429  # past queue
        assert client.get("/nope").status_code == 404
        events = (
            b'{"type":"vstr","visitUserId":"u1","sessionId":"s1","time":1}\n'
            b'{"type":"vstr","visitUserId":"u2","sessionId":"s2","time":2}\n'
            b'{"type":"nonsense","visitUserId":"u3"}'
        )
        r = client.post(f"/api/v1/projects/{p.ai}/events", content=events)
        assert r.status_code == 200 and r.json()["accepted"] == 2
        body = client.get("/metrics")
    assert body.status_code == 200 and body.headers["content-type"].startswith("text/plain")
    m = samples(body.text)
    assert m[("rawexport_jobs", (("status", "finished"),))] == 2
    assert m[("rawexport_jobs", (("status", "queued"),))] == 1
    assert (
        m[("rawexport_export_rows_total", (("data_type", "page"), ("version", "v2")))]
        == counts["page"]
    )
    assert (
        m[("rawexport_export_rows_total", (("data_type", "visit"), ("version", "v2")))]
        == counts["visit"]
    )
    page_bytes = sum(
        f.bytes
        for j in services.catalog.jobs(p.id, "finished")
        for f in services.catalog.files(j.id)
        if j.data_type == "page"
    )
    assert (
        m[("rawexport_export_bytes_total", (("data_type", "page"), ("version", "v2")))]
        == page_bytes
    )
    assert m[("rawexport_job_duration_seconds_count", ())] == 2
    assert m[("rawexport_export_lag_seconds_count", ())] == 2
    assert m[("rawexport_export_lag_seconds_sum", ())] == 180.0  # two jobs, 90 s each
    assert m[("rawexport_export_lag_seconds_bucket", (("le", "60.0"),))] == 0
    assert m[("rawexport_export_lag_seconds_bucket", (("le", "120.0"),))] == 2
    assert m[("rawexport_rate_limited_total", ())] == 1
    assert m[("rawexport_rate_delayed_total", ())] == 1
    assert m[("rawexport_ingest_events_total", (("outcome", "accepted"),))] == 2
    assert m[("rawexport_ingest_events_total", (("outcome", "rejected"),))] == 1
    route = "/v2/insights/{export_type}/{data_type}/{ai}/{export_date}.json"
    key = (
        "rawexport_http_request_duration_seconds_count",
        (("method", "GET"), ("route", route), ("status", "200")),
    )
    assert m[key] == 2
    assert (
        m[
            (
                "rawexport_http_request_duration_seconds_count",
                (("method", "GET"), ("route", "unmatched"), ("status", "404")),
            )
        ]
        == 1
    )
    services.close()
