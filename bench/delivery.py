"""Delivery benchmark: from an hour's commit to its `_SUCCESS` marker in a bucket.

One `page` hour (the export bench's data) is exported by the worker as `serve` runs it,
while the node's delivery loops run (`delivery_interval` as set, default 2 s) with two
destinations on moto's S3 server: gzip CSV and Parquet. Printed, from the same run:
- seconds from the revision's commit (its `finished_ms`) to each destination's `_SUCCESS`;
- the Parquet delivery's rows/s (fetch, convert, upload) next to the CSV export's rows/s of
  the same hour (read, sort, compress): ratio = Parquet rows/s / export rows/s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from tests.s3_util import FAKE_AWS_ENV, UNSET_AWS_ENV, MotoServer  # noqa: E402

from export import AI, DATA_TYPE, HOUR_MS, Figure, ensure_data, write_figures  # noqa: E402  (bench/export.py)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--dir", type=Path, help="data directory (default bench-data/export-ROWS)")
    ap.add_argument("--json", type=Path, help="append result objects (JSON lines) to FILE")
    args = ap.parse_args()
    root: Path = (args.dir or Path(f"bench-data/export-{args.rows}")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    ensure_data(root, args.rows)
    for name in UNSET_AWS_ENV:
        os.environ.pop(name, None)
    os.environ.update(FAKE_AWS_ENV)

    from rawexport.export.delivery import DeliveryLoops
    from rawexport.export.destinations import add_destination
    from rawexport.node import open_services
    from rawexport.settings import Settings

    home = root / "delivery-home"
    shutil.rmtree(home, ignore_errors=True)
    settings = Settings(home=home, events_url=f"file://{root / 'events'}", grace_seconds=0)
    with MotoServer(root / "moto.log") as moto:
        moto.create_bucket("landing")
        s3 = moto.client()
        services = open_services(settings)
        loops = DeliveryLoops(services.deliverer, settings)
        try:
            p = services.catalog.create_project(
                "bench", ai=AI, export_since_ms=HOUR_MS, v1_enabled=False
            )
            for fmt in ("csv", "parquet"):
                add_destination(
                    services.catalog,
                    services.box,
                    p.id,
                    fmt,
                    kind="s3",
                    location=f"s3://landing/{fmt}",
                    format=fmt,
                    template="{data_type}/{revision}/",
                    data_types=[DATA_TYPE],
                    endpoint_url=moto.endpoint_url,
                    region="us-east-1",
                    start_hour_ms=HOUR_MS,
                    now=HOUR_MS,
                )
            loops.start()
            services.catalog.plan(p.id, "v2", [DATA_TYPE], [HOUR_MS], int(time.time() * 1000))
            started = time.perf_counter()
            assert services.exporter.drain("bench") == 1
            export_s = time.perf_counter() - started
            [job] = services.catalog.jobs(p.id)
            assert job.finished_ms is not None and job.rows is not None
            markers: dict[str, float] = {}
            deadline = time.monotonic() + 1800
            while len(markers) < 2 and time.monotonic() < deadline:
                for fmt in ("csv", "parquet"):
                    if fmt in markers:
                        continue
                    listed = s3.list_objects_v2(Bucket="landing", Prefix=f"{fmt}/{DATA_TYPE}/1/_S")
                    if listed.get("KeyCount"):
                        markers[fmt] = time.time() * 1000 - job.finished_ms
                time.sleep(0.05)
            delivered = {d.destination_id: d for d in services.catalog.deliveries(project_id=p.id)}
            names = {d.id: d.name for d in services.catalog.destinations(p.id)}
        finally:
            loops.stop()
            services.close()
    if len(markers) < 2:
        raise SystemExit(f"not delivered in time: {markers}")
    by_name = {names[i]: d for i, d in delivered.items()}
    rows = job.rows
    export_rate = rows / export_s
    parquet = by_name["parquet"]
    assert parquet.delivered_ms is not None and parquet.started_ms is not None
    parquet_s = (parquet.delivered_ms - parquet.started_ms) / 1000
    parquet_rate = rows / parquet_s
    print(f"\n{rows:,} {DATA_TYPE} rows in one hour; moto's S3 server on this machine")
    print(f"  export (read, sort, gzip CSV, commit): {export_s:6.1f} s  {export_rate:,.0f} rows/s")
    for fmt in ("csv", "parquet"):
        d = by_name[fmt]
        print(
            f"  commit -> _SUCCESS, {fmt:7}: {markers[fmt] / 1000:6.1f} s "
            f"({d.files} files, {d.bytes / 1e6:,.0f} MB)"
        )
    print(
        f"  Parquet delivery: {parquet_s:6.1f} s  {parquet_rate:,.0f} rows/s = "
        f"{parquet_rate / export_rate:.2f}x the export's rows/s"
    )
    if args.json:
        n = f"{rows / 1e6:g}M {DATA_TYPE} rows"
        figures: list[Figure] = [
            (f"{n}: commit -> _SUCCESS, csv", markers["csv"] / 1000, "s", "export", export_s,
             export_s / (markers["csv"] / 1000)),
            (f"{n}: commit -> _SUCCESS, parquet", markers["parquet"] / 1000, "s", "export",
             export_s, export_s / (markers["parquet"] / 1000)),
            (f"{n}: Parquet delivery", parquet_rate, "rows/s", "CSV export", export_rate,
             parquet_rate / export_rate),
        ]  # fmt: skip
        write_figures(args.json, "delivery", figures)


if __name__ == "__main__":
    main()
