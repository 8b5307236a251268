"""`rawexport check`: each part probed as serve uses it; failures say what to fix."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from rawexport.cli import main
from tests.blobs.conftest import fake_aws_env, moto_s3  # noqa: F401  (fixtures)
from tests.s3_util import closed_port


def run(home: Path, env: dict[str, str]) -> tuple[int, dict[str, dict[str, str]], str]:
    result = CliRunner().invoke(main, ["check", "--home", str(home)], env=env)
    return result.exit_code, json.loads(result.stdout), result.stderr


def test_defaults_pass(tmp_path: Path) -> None:
    code, report, _ = run(tmp_path, {})
    assert code == 0 and {r["ok"] for r in report.values()} == {"yes"}
    assert report["catalog"]["detail"].startswith("sqlite")


def test_unreachable_catalog_fails_with_what_to_fix(tmp_path: Path) -> None:
    url = f"postgresql://rawexport@127.0.0.1:{closed_port()}/rawexport"
    code, report, err = run(tmp_path, {"RAWEXPORT_CATALOG_URL": url})
    assert code == 1 and report["catalog"]["ok"] == "no"
    assert "check catalog_url" in report["catalog"]["error"]
    assert report["blobs"]["ok"] == "yes"  # the other parts are still checked
    assert err.startswith("rawexport check: catalog: ")


def test_s3_bucket_probe_and_its_failures(
    tmp_path: Path,
    moto_s3: tuple[str, str],  # noqa: F811
) -> None:
    endpoint, bucket = moto_s3
    good = {"RAWEXPORT_BLOBS_URL": f"s3://{bucket}/check", "RAWEXPORT_S3_ENDPOINT_URL": endpoint}
    code, report, _ = run(tmp_path, good)
    assert code == 0 and "probe object" in report["blobs"]["detail"]
    missing = good | {"RAWEXPORT_BLOBS_URL": "s3://no-such-bucket/x"}
    code, report, _ = run(tmp_path, missing)
    assert code == 1 and "does not exist" in report["blobs"]["error"]
    away = good | {"RAWEXPORT_S3_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}"}
    code, report, _ = run(tmp_path, away)
    assert code == 1 and "cannot reach" in report["blobs"]["error"]


def test_dask_probe_and_its_failures(tmp_path: Path) -> None:
    from distributed import LocalCluster

    code, report, _ = run(tmp_path, {"RAWEXPORT_DASK_TIMEOUT": "3"})
    assert code == 0 and report["dask"]["detail"].startswith("not used")
    unreachable = f"tcp://127.0.0.1:{closed_port()}"
    env = {"RAWEXPORT_DASK_ADDRESS": unreachable, "RAWEXPORT_DASK_TIMEOUT": "2"}
    code, report, err = run(tmp_path, env)
    assert code == 1 and report["dask"]["ok"] == "no"
    assert "cannot reach the Dask scheduler" in report["dask"]["error"]
    assert "rawexport check: dask: " in err
    with LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=0, processes=False, protocol="tcp", host="127.0.0.1", dashboard_address=None
    ) as cluster:
        env["RAWEXPORT_DASK_ADDRESS"] = str(cluster.scheduler_address)
        code, report, _ = run(tmp_path, env)
        assert code == 1 and "no Dask workers are connected" in report["dask"]["error"]
        cluster.scale(1)
        cluster.wait_for_workers(1, timeout=30)
        code, report, _ = run(tmp_path, env)
        assert code == 0, report
        assert "1 workers, probe task ran" in report["dask"]["detail"]


def test_missing_web_assets_fail_with_what_to_run(tmp_path: Path) -> None:
    code, report, err = run(tmp_path, {"RAWEXPORT_WEB_ASSETS": str(tmp_path / "nowhere")})
    assert code == 1 and report["web"]["ok"] == "no"
    assert "make js-deps" in report["web"]["error"] and "htmx.org 2.0.11" in report["web"]["error"]
    assert report["catalog"]["ok"] == "yes"
    assert "rawexport check: web: " in err
