"""The operator commands, run through the CLI with their JSON output checked: project
list, enable-export / disable-export, jobs list / show, export rerun / backfill --queue,
and sweep."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from rawexport.cli import main
from rawexport.node import open_services
from rawexport.settings import Settings
from rawexport.timeutil import HOUR_MS, beijing_hour_label, hour_floor, now_ms, utc

HOUR = hour_floor(now_ms()) - 3 * HOUR_MS  # closed
LABEL = beijing_hour_label(HOUR)
NEXT = beijing_hour_label(HOUR + HOUR_MS)


def cli(home: Path, *args: str, code: int = 0) -> Any:
    """Run `rawexport ARGS --home HOME`; the parsed JSON it printed (or its stderr)."""
    result = CliRunner().invoke(main, [*args, "--home", str(home)])
    assert result.exit_code == code, (result.stdout, result.stderr)
    return json.loads(result.stdout) if code == 0 else result.stderr


def test_project_list_and_export_switches(tmp_path: Path) -> None:
    assert cli(tmp_path, "project", "list") == []
    a = cli(tmp_path, "project", "create", "--name", "a", "--export-since", LABEL)
    b = cli(tmp_path, "project", "create", "--name", "b", "--no-export", "--no-v1")
    listed = cli(tmp_path, "project", "list")
    assert [(p["ai"], p["name"], p["export_enabled"]) for p in listed] == [
        (a["ai"], "a", True),
        (b["ai"], "b", False),
    ]
    assert listed[0]["export_since_ms"] == HOUR and listed[1]["export_since_ms"] is None
    assert (listed[0]["v1_enabled"], listed[1]["v1_enabled"]) == (True, False)

    off = cli(tmp_path, "project", "disable-export", "--project", a["ai"])
    assert off["export_enabled"] is False and off["export_since_ms"] == HOUR  # kept
    on = cli(tmp_path, "project", "enable-export", "--project", b["ai"], "--since", NEXT)
    assert on["export_enabled"] is True and on["export_since_ms"] == HOUR + HOUR_MS
    again = cli(tmp_path, "project", "enable-export", "--project", a["ai"])
    assert again["export_enabled"] is True and again["export_since_ms"] == HOUR
    assert [p["export_enabled"] for p in cli(tmp_path, "project", "list")] == [True, True]
    err = cli(tmp_path, "project", "enable-export", "--project", "f" * 16, code=1)
    assert "no project with ai 'ffffffffffffffff'" in err and "Traceback" not in err


def test_jobs_queue_and_sweep(tmp_path: Path) -> None:
    ai = cli(tmp_path, "project", "create", "--name", "a", "--export-since", LABEL, "--no-v1")["ai"]
    cli(tmp_path, "generate", "--project", ai, "--start", LABEL, "--hours", "2")
    cli(tmp_path, "export", "run", "--project", ai, "--hour", LABEL, "--data-type", "page")

    [job] = cli(tmp_path, "jobs", "list", "--project", ai)
    assert (job["hour"], job["data_type"], job["version"]) == (LABEL, "page", "v2")
    assert (job["revision"], job["status"], job["attempts"]) == (1, "finished", 1)
    assert job["rows"] > 0 and job["hour_utc"] == utc(HOUR).strftime("%Y%m%d%H")
    shown = cli(tmp_path, "jobs", "show", str(job["id"]))
    assert shown["ai"] == ai and shown["status"] == "finished" and shown["lease_owner"] is None
    assert shown["manifest_key"] == f"{shown['prefix']}/_manifest.json"
    assert sum(f["rows"] for f in shown["files"]) == job["rows"]
    assert all(f["key"].startswith(f"{shown['prefix']}/part-00") for f in shown["files"])
    assert "no job 999" in cli(tmp_path, "jobs", "show", "999", code=1)

    # --queue: new revisions are only queued, for serve's workers.
    rerun_args = ["--project", ai, "--hour", LABEL, "--data-type", "page", "--queue"]
    [rerun] = cli(tmp_path, "export", "rerun", *rerun_args)
    assert (rerun["revision"], rerun["status"], rerun["attempts"]) == (2, "queued", 0)
    backfill = cli(
        tmp_path, "export", "backfill", "--project", ai, "--from", LABEL, "--to", NEXT, "--queue"
    )
    assert len(backfill) == 2 * 10  # every v2 type of both hours, as revisions
    assert {r["status"] for r in backfill} == {"queued"}
    queued = cli(tmp_path, "jobs", "list", "--project", ai, "--status", "queued")
    assert len(queued) == 1 + 20 and {j["attempts"] for j in queued} == {0}
    since = cli(tmp_path, "jobs", "list", "--project", ai, "--since", NEXT, "--limit", "3")
    assert len(since) == 3 and {j["hour"] for j in since} == {NEXT}
    assert cli(tmp_path, "jobs", "list", "--project", ai, "--status", "running") == []

    # Nothing was swept yet; once serve's workers (here: a drain) ran the queue, revision
    # 1 of the page hour is superseded and its files go.
    first = cli(tmp_path, "sweep")
    assert first["superseded_revisions"] == 0 and first["deleted_files"] == 0
    assert first["errors"] == [] and first["expired_links"] == 0
    services = open_services(Settings(home=tmp_path))
    try:
        services.exporter.drain("test")
    finally:
        services.close()
    report = cli(tmp_path, "sweep")
    # revision 1 of page, then revision 2 of page (the rerun), superseded by the backfill.
    assert report["superseded_revisions"] == 2
    assert report["deleted_files"] == 2 * (len(shown["files"]) + 1)  # parts + manifest
    superseded = cli(tmp_path, "jobs", "list", "--project", ai, "--status", "superseded")
    assert sorted(j["revision"] for j in superseded) == [1, 2]
    assert cli(tmp_path, "jobs", "show", str(job["id"]))["files"] == []
