"""`rawexport destination` and `rawexport deliveries`, through the CLI, JSON checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from rawexport.cli import main
from rawexport.node import open_services
from rawexport.settings import Settings
from tests.cli.test_commands import LABEL, NEXT

SECRET = "very-secret-key-0123456789"


def cli(home: Path, *args: str, code: int = 0, env: dict[str, str] | None = None) -> Any:
    result = CliRunner().invoke(main, [*args, "--home", str(home)], env=env)
    assert result.exit_code == code, (result.stdout, result.stderr)
    return json.loads(result.stdout) if code == 0 else result.stderr


def test_destinations_are_added_tested_paused_and_removed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ai = cli(home, "project", "create", "--name", "a", "--export-since", LABEL, "--no-v1")["ai"]
    land = tmp_path / "landing"
    added = cli(
        home, "destination", "add", "--project", ai, "--name", "nfs", "--dir", str(land),
        "--format", "parquet", "--template", "hive", "--types", "page,visit", "--start", LABEL,
    )  # fmt: skip
    assert (added["kind"], added["format"], added["state"]) == ("dir", "parquet", "active")
    assert added["keyTemplate"].startswith("data_type={data_type}/dt=")
    assert added["dataTypes"] == ["page", "visit"] and added["startHour"] == LABEL
    assert added["credentials"] == "none"

    s3 = cli(
        home, "destination", "add", "--project", ai, "--name", "bucket",
        "--s3", "s3://landing/rawexport", "--endpoint-url", "http://127.0.0.1:9",
        "--access-key-id", "AKIDCUSTOMER",
        env={"RAWEXPORT_DEST_SECRET_ACCESS_KEY": SECRET},
    )  # fmt: skip
    assert s3["credentials"] == "set" and SECRET not in json.dumps(s3)
    listed = cli(home, "destination", "list", "--project", ai)
    assert [d["name"] for d in listed] == ["bucket", "nfs"] and SECRET not in json.dumps(listed)
    services = open_services(Settings(home=home))
    try:  # sealed at rest: not in the catalog database's bytes
        assert SECRET.encode() not in (home / "catalog.db").read_bytes()
        assert services.catalog.destinations()[0].credentials is not None
    finally:
        services.close()

    probed = cli(home, "destination", "test", "--project", ai, "--name", "nfs")
    assert probed["ok"] and list(land.iterdir()) == []  # written and deleted
    err = cli(home, "destination", "test", "--project", ai, "--name", "bucket", code=1)
    assert "destination bucket failed its test" in err and "Traceback" not in err

    paused = cli(home, "destination", "pause", "--project", ai, "--name", "nfs")
    assert (paused["state"], paused["pausedReason"]) == ("paused", "paused by the operator")
    resumed = cli(home, "destination", "resume", "--project", ai, "--name", "nfs")
    assert (resumed["state"], resumed["pausedReason"]) == ("active", None)
    assert cli(home, "destination", "remove", "--project", ai, "--name", "bucket")["removed"]
    assert [d["name"] for d in cli(home, "destination", "list")] == ["nfs"]


def test_bad_destinations_get_one_line_errors(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ai = cli(home, "project", "create", "--name", "a", "--no-v1")["ai"]
    base = ["destination", "add", "--project", ai, "--name", "x"]
    cases = [
        ([*base, "--dir", "/tmp/x", "--template", "{ai}/{HH}/"], "must contain {revision}"),
        ([*base, "--dir", "relative/dir"], "absolute path"),
        ([*base, "--s3", "http://not-s3/x"], "s3://bucket/prefix"),
        ([*base, "--dir", "/tmp/x", "--types", "page,nope"], "unknown data types: nope"),
        ([*base, "--dir", "/tmp/x", "--s3", "s3://b/p"], "give one of --s3"),
        ([*base, "--s3", "s3://b/p", "--access-key-id", "AK"], "give both --access-key-id"),
        (["destination", "pause", "--project", ai, "--name", "none"], "no destination named"),
    ]
    for args, says in cases:
        err = cli(home, *args, code=1)
        assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    cli(home, *base, "--dir", "/tmp/x")
    assert "has a destination named 'x'" in cli(home, *base, "--dir", "/tmp/y", code=1)


def test_deliveries_are_listed_and_retried(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ai = cli(home, "project", "create", "--name", "a", "--export-since", LABEL, "--no-v1")["ai"]
    cli(home, "generate", "--project", ai, "--start", LABEL, "--hours", "2")
    cli(home, "export", "run", "--project", ai, "--hour", LABEL, "--data-type", "page")
    cli(home, "export", "run", "--project", ai, "--hour", NEXT, "--data-type", "page")
    land = tmp_path / "landing"
    cli(home, "destination", "add", "--project", ai, "--name", "nfs", "--dir", str(land),
        "--start", LABEL)  # fmt: skip
    services = open_services(Settings(home=home))
    try:
        assert services.deliverer.drain("test") == 2
    finally:
        services.close()
    listed = cli(home, "deliveries", "list", "--project", ai)
    assert [(d["hour"], d["status"], d["destination"]) for d in listed] == [
        (NEXT, "delivered", "nfs"),
        (LABEL, "delivered", "nfs"),
    ]
    assert all(d["rows"] and d["files"] == 1 for d in listed)
    assert cli(home, "deliveries", "list", "--status", "retrying") == []
    again = cli(home, "deliveries", "retry", "--project", ai, "--status", "delivered")
    assert again == {"queued": 2}
    assert {d["status"] for d in cli(home, "deliveries", "list")} == {"queued"}
    assert "give delivery ids" in cli(home, "deliveries", "retry", code=1)
    shown = cli(home, "destination", "list")[0]
    assert shown["lastDeliveredHour"] is None and shown["deliveries"] == {"queued": 2}
