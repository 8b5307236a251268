"""Digests of every part of a 3-hour export of all 10 v2 types and the v1 types.

Not a benchmark: a check for changes to the export. Run it before and after a change (or
with and without `--dask`) and compare the two files; equal files mean the change moved no
byte of any part. Events are generated once into `--dir` (deterministic: seed 5, 300,000
events an hour); each run copies them into a fresh home and exports every job through the
worker, as `serve` would. A small memory budget (`--memory`) makes the big types' hours
ranged (parts numbered by range group), so both sort paths are covered.

    .venv/bin/python bench/export_digests.py /tmp/before.json
    .venv/bin/python bench/export_digests.py /tmp/dask.json --dask
    cmp /tmp/before.json /tmp/dask.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]


def ensure_events(root: Path, events_per_hour: int) -> tuple[str, int]:
    """(ai, first hour) of the generated events in root (made on the first run)."""
    from rawexport.demo.generate import generate
    from rawexport.node import open_services
    from rawexport.settings import Settings
    from rawexport.timeutil import HOUR_MS, parse_hour_arg

    stamp = root / "made.json"
    if not stamp.exists():
        shutil.rmtree(root, ignore_errors=True)
        hour = parse_hour_arg("2026120100") - HOUR_MS  # fixed: the same keys every time
        services = open_services(Settings(home=root))
        try:
            p = services.catalog.create_project("digests", export_since_ms=hour, v1_enabled=True)
            generate(services.store, p.ai, hour, 3, events_per_hour, seed=5)
        finally:
            services.close()
        stamp.write_text(json.dumps({"ai": p.ai, "hour": hour}))
    made = json.loads(stamp.read_text())
    return str(made["ai"]), int(made["hour"])


def export_all(root: Path, memory: str, dask: str) -> list[dict[str, Any]]:
    from rawexport.node import open_services
    from rawexport.schema import DATA_TYPES, V1_TYPES
    from rawexport.settings import Settings
    from rawexport.timeutil import HOUR_MS, now_ms

    ai, first = ensure_events(root, 300_000)
    home = Path(tempfile.mkdtemp(prefix="digests-"))
    try:
        shutil.copytree(root / "events", home / "events")
        shutil.copy(root / "catalog.db", home / "catalog.db")
        settings = Settings(
            home=home,
            part_bytes=1 << 20,
            duckdb_memory_limit=memory,
            duckdb_threads=2,
            dask_address=dask,
        )
        services = open_services(settings)
        try:
            p = services.catalog.project(ai)
            assert p is not None
            hours = [first + i * HOUR_MS for i in range(3)]
            services.catalog.plan(p.id, "v2", list(DATA_TYPES), hours, now_ms())
            services.catalog.plan(p.id, "v1", list(V1_TYPES), hours, now_ms())
            services.exporter.drain("digests")
            out = []
            for job in sorted(
                services.catalog.jobs(p.id), key=lambda j: (j.version, j.data_type, j.hour_ms)
            ):
                hour = (job.hour_ms - first) // HOUR_MS
                out.append(
                    {
                        "job": f"{job.version}/{job.data_type}/+{hour}h",
                        "status": str(job.status),
                        "rows": job.rows,
                        "parts": [
                            [f.part, f.rows, f.bytes, f.sha256]
                            for f in services.catalog.files(job.id)
                        ],
                    }
                )
            return out
        finally:
            services.close()
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("out", type=Path, help="write the digests (JSON) here")
    ap.add_argument("--dir", type=Path, default=Path("bench-data/digests"), help="events")
    ap.add_argument("--memory", default="96MB", help="duckdb_memory_limit of the export")
    ap.add_argument("--dask", action="store_true", help="on a local Dask cluster (2 workers)")
    args = ap.parse_args()
    root = args.dir.resolve()
    started = time.perf_counter()
    if args.dask:
        from tests.dask_util import threads_cluster

        with threads_cluster() as address:
            jobs = export_all(root, args.memory, address)
    else:
        jobs = export_all(root, args.memory, "")
    args.out.write_text(json.dumps(jobs, indent=1) + "\n")
    parts = sum(len(j["parts"]) for j in jobs)
    ranged = sum(1 for j in jobs if any(p[0] >= 100 for p in j["parts"]))
    unfinished = [j["job"] for j in jobs if j["status"] != "finished"]
    print(
        f"{len(jobs)} jobs ({ranged} ranged), {parts} parts, "
        f"{sum(j['rows'] or 0 for j in jobs):,} rows in {time.perf_counter() - started:.1f} s"
        + (f"; NOT FINISHED: {', '.join(unfinished)}" if unfinished else "")
    )
    if unfinished:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
