"""Push delivery: finished hours into a customer's bucket (moto's S3 server) or directory,
as gzip CSV or Parquet, marker last, retried, paused, superseded by reruns."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import duckdb
import pytest

from rawexport.blobs.local import LocalBlobStore
from rawexport.catalog import Destination, DestinationError
from rawexport.demo.generate import generate
from rawexport.export import destinations as destinations_module
from rawexport.export.actions import reexport
from rawexport.export.csvsql import read_parts, typed_columns
from rawexport.export.destinations import add_destination, check_template, render
from rawexport.node import Services, open_services
from rawexport.secretbox import SecretBox, SecretsKeyError
from rawexport.settings import Settings
from rawexport.timeutil import HOUR_MS, parse_hour_arg
from tests.conftest import Clock
from tests.s3_util import UNSET_AWS_ENV, MotoServer

T0 = parse_hour_arg("2026120100")
HOURS = 4
TYPES = ["page", "visit", "custom_event"]
CUSTOMER = {"access_key_id": "customer-key", "secret_access_key": "customer-secret-0123"}


@pytest.fixture(scope="module")
def bucket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    """(endpoint, boto3 client) of moto's S3 server with the customer's bucket `landing`.

    The tests' own process has no AWS credentials at all: a destination can only reach the
    bucket with the credentials it was given."""
    with MotoServer(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        server.create_bucket("landing")
        client = boto3.client(
            "s3",
            endpoint_url=server.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="reader",
            aws_secret_access_key="reader",
        )
        yield server.endpoint_url, client


@pytest.fixture(autouse=True)
def no_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [*UNSET_AWS_ENV, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    s = open_services(
        Settings(
            home=tmp_path / "home",
            grace_seconds=0,
            part_bytes=65536,
            retry_base_seconds=10,
            delivery_pause_after=3,
        )
    )
    clock = Clock(T0 + 25 * HOUR_MS)
    s.exporter.clock = clock
    s.deliverer.clock = clock
    try:
        yield s
    finally:
        s.close()


def exported(services: Services, hours_: int = HOURS, events: int = 3000) -> str:
    """A project with hours_ finished hours of TYPES (v2); its ai."""
    p = services.catalog.create_project("shop", export_since_ms=T0, v1_enabled=False)
    generate(services.store, p.ai, T0, hours_, events, data_types=TYPES, seed=3)
    hours = [T0 + i * HOUR_MS for i in range(hours_)]
    services.catalog.plan(p.id, "v2", TYPES, hours, services.exporter.clock())
    services.exporter.drain("w")
    return p.ai


def add(
    services: Services,
    ai: str,
    name: str,
    *,
    location: str,
    format: str = "csv",
    kind: str = "s3",
    template: str = "default",
    endpoint: str = "",
    credentials: dict[str, str] | None = CUSTOMER,
) -> Destination:
    p = services.catalog.project(ai)
    assert p is not None
    return add_destination(
        services.catalog,
        services.box,
        p.id,
        name,
        kind=kind,
        location=location,
        format=format,
        template=template,
        endpoint_url=endpoint,
        region="us-east-1" if kind == "s3" else "",
        credentials=credentials,
        start_hour_ms=T0,
        now=services.exporter.clock(),
    )


def objects(client: Any, prefix: str) -> dict[str, bytes]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket="landing", Prefix=prefix):
        for o in page.get("Contents", []):
            out[o["Key"]] = client.get_object(Bucket="landing", Key=o["Key"])["Body"].read()
    return out


def test_a_day_is_delivered_as_csv_and_as_parquet_with_the_same_rows(
    services: Services, bucket: tuple[str, Any], tmp_path: Path
) -> None:
    endpoint, client = bucket
    ai = exported(services, 24, 400)  # a day
    add(services, ai, "csv", location="s3://landing/csv", endpoint=endpoint)
    add(
        services,
        ai,
        "pq",
        location="s3://landing/pq",
        format="parquet",
        template="hive",
        endpoint=endpoint,
    )
    ran = services.deliverer.drain("d")
    assert ran == 2 * 24 * len(TYPES)
    delivered = services.catalog.deliveries(status="delivered")
    assert len(delivered) == ran
    csv_objects = objects(client, "csv/")
    pq_objects = objects(client, "pq/")
    for job in services.catalog.jobs(services.catalog.project(ai).id):  # type: ignore[union-attr]
        files = services.catalog.files(job.id)
        where = render(
            "csv/" + check_template("default", ["v2"]), ai, "v2", job.data_type, job.hour_ms, 1
        )
        manifest = json.loads(csv_objects[where + "_manifest.json"])
        assert csv_objects[where + "_SUCCESS"] == b""
        assert manifest["rows"] == job.rows and len(manifest["files"]) == len(files)
        for f, entry in zip(files, manifest["files"], strict=True):
            data = csv_objects[where + entry["key"]]
            # the same bytes as the pull export's part
            assert hashlib.sha256(data).hexdigest() == f.sha256 == entry["sha256"]
        pq_where = render(
            "pq/" + check_template("hive", ["v2"]), ai, "v2", job.data_type, job.hour_ms, 1
        )
        assert pq_where.startswith(f"pq/data_type={job.data_type}/dt=2026-12-0")
        pq_manifest = json.loads(pq_objects[pq_where + "_manifest.json"])
        assert pq_objects[pq_where + "_SUCCESS"] == b""
        local = tmp_path / f"{job.data_type}-{job.hour_ms}"
        local.mkdir()
        csv_paths, pq_paths = [], []
        for entry in manifest["files"]:
            csv_paths.append(local / entry["key"])
            csv_paths[-1].write_bytes(csv_objects[where + entry["key"]])
        for entry in pq_manifest["files"]:
            data = pq_objects[pq_where + entry["key"]]
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
            pq_paths.append(local / entry["key"])
            pq_paths[-1].write_bytes(data)
        assert pq_manifest["rows"] == job.rows and all(p.suffix == ".parquet" for p in pq_paths)
        with duckdb.connect() as con:
            typed = typed_columns("v2", job.data_type)
            from_csv = con.sql(
                f"SELECT {typed} FROM {read_parts('v2', job.data_type, csv_paths)}"
            ).fetchall()
            paths = ", ".join(f"'{p}'" for p in pq_paths)
            from_pq = con.sql(f"SELECT * FROM read_parquet([{paths}])").fetchall()
            kinds = {
                r[1] for r in con.sql(f"DESCRIBE SELECT * FROM read_parquet([{paths}])").fetchall()
            }
        assert from_pq == from_csv and len(from_pq) == job.rows  # same rows, same order
        assert "BIGINT" in kinds  # typed, not all text


def test_the_marker_comes_after_every_part_and_the_manifest(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[str] = []

    class Recording(LocalBlobStore):
        def put(self, key: str, src: Path) -> None:
            super().put(key, src)
            written.append(key)

        def put_bytes(self, key: str, data: bytes) -> None:
            super().put_bytes(key, data)
            written.append(key)

    monkeypatch.setattr(destinations_module, "LocalBlobStore", Recording)
    ai = exported(services)
    add(services, ai, "nfs", kind="dir", location=str(tmp_path / "nfs"), credentials=None)
    services.deliverer.drain("d")
    by_dir: dict[str, list[str]] = {}
    for key in written:
        by_dir.setdefault(key.rsplit("/", 1)[0], []).append(key.rsplit("/", 1)[1])
    assert len(by_dir) == HOURS * len(TYPES)
    for names in by_dir.values():
        assert names[-2:] == ["_manifest.json", "_SUCCESS"]
        assert all(n.startswith("part-") for n in names[:-2]) and names[:-2]
    assert (tmp_path / "nfs" / ai / "v2" / "page" / "20261201" / "00" / "r1" / "_SUCCESS").exists()


def test_a_failing_bucket_pauses_the_destination_and_says_why(
    services: Services, bucket: tuple[str, Any]
) -> None:
    endpoint, _ = bucket
    ai = exported(services)
    dest = add(services, ai, "gone", location="s3://no-such-bucket/x", endpoint=endpoint)
    clock = services.deliverer.clock
    assert isinstance(clock, Clock)
    services.deliverer.plan()
    ran = 0
    while ran < 20 and services.deliverer.run_one("d"):
        ran += 1
        clock.now += 3600_000  # every retry is due
    assert ran == 3  # delivery_pause_after
    paused = services.catalog.destination_by_id(dest.id)
    assert paused is not None and paused.state == "paused"
    assert paused.paused_reason is not None
    assert paused.paused_reason.startswith("3 deliveries failed in a row; the last: ")
    assert "NoSuchBucket" in paused.paused_reason or "no-such-bucket" in paused.paused_reason
    waiting = services.catalog.deliveries(destination_id=dest.id, status="retrying")
    assert len(waiting) == 3 and all(d.error for d in waiting)
    services.catalog.resume_destination(dest.id, clock.now)
    assert services.deliverer.run_one("d")  # taken again once resumed
    assert services.catalog.destination_by_id(dest.id).failures == 1  # type: ignore[union-attr]


def test_a_rerun_delivers_the_new_revision_and_supersedes_the_old(
    services: Services, tmp_path: Path
) -> None:
    ai = exported(services)
    root = tmp_path / "nfs"
    add(services, ai, "nfs", kind="dir", location=str(root), credentials=None)
    services.deliverer.drain("d")
    project = services.catalog.project(ai)
    assert project is not None
    reexport(services.exporter, project, [T0], "page", services.exporter.clock())
    assert services.deliverer.drain("d") == 1
    hour = root / ai / "v2" / "page" / "20261201" / "00"
    old = json.loads((hour / "r1" / "_manifest.json").read_text())
    new = json.loads((hour / "r2" / "_manifest.json").read_text())
    assert old["supersededBy"] == {"revision": 2, "location": f"{ai}/v2/page/20261201/00/r2/"}
    assert new["revision"] == 2 and new["supersededBy"] is None
    assert (hour / "r2" / "_SUCCESS").exists()
    states = {(d.revision, d.status) for d in services.catalog.deliveries(hour_ms=T0)}
    assert (1, "superseded") in states and (2, "delivered") in states


def test_credentials_are_sealed_at_rest(services: Services, tmp_path: Path) -> None:
    ai = exported(services)
    dest = add(services, ai, "sealed", location="s3://landing/x")
    assert dest.credentials is not None
    assert "customer-secret" not in dest.credentials
    assert json.loads(services.box.open(dest.credentials)) == CUSTOMER
    with pytest.raises(SecretsKeyError, match="secrets_key"):
        SecretBox("another key of sixteen+").open(dest.credentials)
    key_file = tmp_path / "home" / "secrets.key"
    assert key_file.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("template", "versions", "says"),
    [
        ("{ai}/{data_type}/{yyyy}{MM}{dd}/{HH}/", ["v2"], "must contain {revision}"),
        ("{ai}/{day}/{revision}/", ["v2"], "unknown key template fields: day"),
        ("{data_type}/{revision}/", ["v1", "v2"], "needs {version}"),
        ("../{revision}/", ["v2"], "makes bad keys"),
    ],
)
def test_bad_key_templates_are_refused(template: str, versions: list[str], says: str) -> None:
    with pytest.raises(DestinationError, match=says.replace("{", r"\{").replace("}", r"\}")):
        check_template(template, versions)


def test_metrics_count_deliveries_by_status_and_lag(services: Services, tmp_path: Path) -> None:
    ai = exported(services)
    add(services, ai, "nfs", kind="dir", location=str(tmp_path / "nfs"), credentials=None)
    services.deliverer.plan()
    text = services.metrics.render().decode()
    assert f'rawexport_deliveries{{status="queued"}} {HOURS * len(TYPES)}.0' in text
    assert f'rawexport_delivery_lag_seconds{{destination="{ai}/nfs"}}' in text
    services.deliverer.drain("d")
    text = services.metrics.render().decode()
    assert f'rawexport_deliveries{{status="delivered"}} {HOURS * len(TYPES)}.0' in text
    assert f'rawexport_delivery_lag_seconds{{destination="{ai}/nfs"}} 0.0' in text
    done = f'rawexport_delivery_attempts_total{{outcome="delivered"}} {HOURS * len(TYPES)}.0'
    assert done in text


def test_parquet_keeps_the_rows_of_a_big_part_in_their_order(tmp_path: Path) -> None:
    """A part big enough for DuckDB to read in parallel (150,000 page rows): the Parquet
    file has its rows in the part's order (sorted by visitUserId, sessionId, sendTime),
    which DuckDB keeps only when told to."""
    from rawexport.export.delivery import to_parquet
    from rawexport.export.pipeline import Attempt, run_here
    from rawexport.store import LocalEventStore

    store = LocalEventStore(tmp_path / "events")
    generate(store, "0123456789abcdef", T0, 1, 150_000, data_types=["page"], seed=8)
    files = store.hour_files("0123456789abcdef", "page", T0)
    at = Attempt("0123456789abcdef", "v2", "page", T0, 1, 1, 64 << 20, 1, "1GB", 2)
    res = run_here(at, files, LocalBlobStore(tmp_path / "blobs"), tmp_path / "tmp")
    [part] = res.files
    src = tmp_path / "blobs" / part.key
    out = tmp_path / "part.parquet"
    assert to_parquet("v2", "page", src, out, tmp_path, "1GB") == part.rows == 150_000
    with duckdb.connect() as con:
        typed = typed_columns("v2", "page")
        want = con.execute(f"SELECT {typed} FROM {read_parts('v2', 'page', [src])}").fetchall()
        got = con.execute(f"SELECT * FROM read_parquet('{out}')").fetchall()
        groups = con.execute(f"SELECT count(*) FROM parquet_metadata('{out}')").fetchone()
    assert got == want
    assert groups is not None and groups[0] > 1  # several row groups (x columns)
