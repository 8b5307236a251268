"""kill -9 of `rawexport serve` in the middle of a delivery: after a restart the hour is
delivered completely, once, under its revision's keys, and its marker comes last."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from pathlib import Path

import duckdb
import pytest

from rawexport.timeutil import HOUR_MS, beijing_hour_label, hour_floor, now_ms
from tests.e2e_util import Server, env_for, free_port, run_cli
from tests.s3_util import MotoServer

pytestmark = pytest.mark.e2e


class Landing:
    """The customer's side: a directory, or a bucket on moto's S3 server."""

    def __init__(self, tmp_path: Path, moto: MotoServer | None) -> None:
        self.root = tmp_path / "landing"
        self.moto = moto
        self.s3 = None if moto is None else moto.client()

    def args(self) -> list[str]:
        if self.moto is None:
            return ["--dir", str(self.root)]
        return ["--s3", "s3://landing/lake", "--endpoint-url", self.moto.endpoint_url]

    def names(self, prefix: str) -> set[str]:
        """Names a reader sees under prefix (Hadoop's convention: . and _ are hidden)."""
        if self.s3 is None:
            found = [p.name for p in (self.root / prefix).glob("*")]
        else:
            listed = self.s3.list_objects_v2(Bucket="landing", Prefix=f"lake/{prefix}")
            found = [o["Key"].rsplit("/", 1)[1] for o in listed.get("Contents", [])]
        return {n for n in found if not n.startswith((".", "_"))}

    def has(self, key: str) -> bool:
        if self.s3 is None:
            return (self.root / key).exists()
        listed = self.s3.list_objects_v2(Bucket="landing", Prefix=f"lake/{key}")
        return bool(listed.get("KeyCount"))

    def read(self, key: str) -> bytes:
        if self.s3 is None:
            return (self.root / key).read_bytes()
        return bytes(self.s3.get_object(Bucket="landing", Key=f"lake/{key}")["Body"].read())

    def dirs(self, prefix: str) -> set[str]:
        if self.s3 is None:
            return {p.name for p in (self.root / prefix).iterdir()}
        listed = self.s3.list_objects_v2(Bucket="landing", Prefix=f"lake/{prefix}")
        return {o["Key"][len(f"lake/{prefix}") :].split("/")[0] for o in listed["Contents"]}


@pytest.mark.parametrize("kind", ["dir", "s3"])
def test_kill_9_during_a_delivery_then_restart_delivers_the_hour_once(
    tmp_path: Path, kind: str
) -> None:
    with contextlib.ExitStack() as stack:
        moto = None
        if kind == "s3":
            moto = stack.enter_context(MotoServer(tmp_path / "moto.log"))
            moto.create_bucket("landing")
        run_the_crash(tmp_path, Landing(tmp_path, moto))


def run_the_crash(tmp_path: Path, land: Landing) -> None:
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
    run_cli(
        ["destination", "add", "--project", ai, "--name", "lake", *land.args()]
        + ["--format", "parquet", "--types", "page", "--start", label]
        + ["--access-key-id", "customer"],
        {**env, "RAWEXPORT_DEST_SECRET_ACCESS_KEY": "customer-secret"},
    )
    hour_dir = f"{ai}/v2/page/{label[:8]}/{label[8:]}/"
    revision = hour_dir + "r1/"
    log = tmp_path / "serve.log"

    with Server(["serve"], env, port, log) as first:
        first.wait_ready()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(land.names(revision)) < 3:
            time.sleep(0.01)
        first.kill()  # mid-delivery: some parts there, no marker
    partial = land.names(revision)
    assert len(partial) >= 3, "the delivery never started"
    assert not land.has(revision + "_SUCCESS"), "the delivery ended before the kill"

    with Server(["serve"], env, port, log) as second:
        second.wait_ready()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not land.has(revision + "_SUCCESS"):
            time.sleep(0.2)
        assert land.has(revision + "_SUCCESS"), log.read_text()[-3000:]
        second.stop()

    manifest = json.loads(land.read(revision + "_manifest.json"))
    names = [f["key"] for f in manifest["files"]]
    assert land.names(revision) == set(names) and partial <= set(names)
    assert [int(n[5:10]) for n in names] == list(range(len(names)))  # part-00000...
    assert manifest["rows"] == job["rows"] and manifest["revision"] == 1
    local = tmp_path / "got"
    local.mkdir()
    for f in manifest["files"]:
        data = land.read(revision + f["key"])
        assert hashlib.sha256(data).hexdigest() == f["sha256"]
        (local / f["key"]).write_bytes(data)
    with duckdb.connect() as con:
        got = con.execute(f"SELECT count(*) FROM read_parquet('{local}/*.parquet')").fetchone()
    assert got is not None and got[0] == job["rows"]
    listed = run_cli(["deliveries", "list", "--project", ai], env)
    [d] = [d for d in listed if d["hour"] == label]  # later closed hours are empty ones
    assert (d["status"], d["revision"], d["files"]) == ("delivered", 1, len(names))
    assert d["attempts"] >= 2  # the killed attempt and the one that finished
    assert land.dirs(hour_dir) == {"r1"}  # one revision, once
