"""Export benchmark: the export pipeline run here vs DuckDB COPY (gzip and plain), the
fastest naive path (polars sink_csv, unsorted, then python-isal level 1 on every core), and
its own floor (the same reading, line building and gzip with no sort and no spill), one hour.

Each pipeline runs in its own subprocess, so peak RSS (VmHWM) is per pipeline. Time ratios
are speedups (reference seconds / rawexport seconds); the RSS ratio is the share of 1 GiB.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

AI = "00000000000bench"
HOUR_MS = 1_700_002_800_000  # 2023-11-14 23:00 UTC
DATA_TYPE = "page"
SORT = "visitUserId, sessionId, sendTime"


Figure = tuple[str, float, str, str, float, float]


def write_figures(path: Path, bench: str, figures: list[Figure]) -> None:
    """Append (figure, value, unit, reference, ref value, ratio) rows for run_all's table."""
    with path.open("a", encoding="utf-8") as f:
        for figure, value, unit, ref, ref_value, ratio in figures:
            row = {
                "bench": bench,
                "figure": figure,
                "value": round(value, 3),
                "unit": unit,
                "reference": ref,
                "ref_value": round(ref_value, 3),
                "ratio": round(ratio, 3),
            }
            f.write(json.dumps(row) + "\n")


def peak_rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ensure_data(root: Path, rows: int) -> list[Path]:
    from rawexport.demo.generate import generate
    from rawexport.store import LocalEventStore

    store = LocalEventStore(root / "events")
    meta = root / "events.json"
    wanted = {"rows": rows, "ai": AI, "hour_ms": HOUR_MS, "type": DATA_TYPE}
    files = store.hour_files(AI, DATA_TYPE, HOUR_MS)
    if files and meta.is_file() and json.loads(meta.read_text()) == wanted:
        return files
    shutil.rmtree(root / "events", ignore_errors=True)
    meta.unlink(missing_ok=True)
    print(f"generating {rows:,} {DATA_TYPE} rows into {root / 'events'} ...", flush=True)
    t = time.perf_counter()
    generate(store, AI, HOUR_MS, 1, rows, data_types=[DATA_TYPE])
    print(f"  done in {time.perf_counter() - t:.1f} s", flush=True)
    meta.write_text(json.dumps(wanted))
    return store.hour_files(AI, DATA_TYPE, HOUR_MS)


def gunzip_size(paths: list[Path]) -> int:
    from isal import igzip

    total = 0
    for p in paths:
        with igzip.open(p, "rb") as f:  # type: ignore[no-untyped-call]
            while chunk := f.read(1 << 22):
                total += len(chunk)
    return total


def unsorted_floor(s: Any, files: list[Path], out: Path) -> tuple[float, int, int, int]:
    """rawexport's own reading, line building and gzip parts with no sort and no spill:
    each of duckdb_threads workers builds the lines of the batches it takes and compresses
    them into parts of its own. A sorted export cannot beat this on the same machine.
    (seconds, rows, gzip bytes, CSV bytes)"""
    import threading

    from rawexport.blobs.local import LocalBlobStore
    from rawexport.export.csvsql import header_line
    from rawexport.export.parts import PartWriter, feed
    from rawexport.export.rangesort import Keyed
    from rawexport.export.reading import store_batches

    blobs = LocalBlobStore(out / "blobs")
    (out / "tmp").mkdir()
    keyed = Keyed("v2", DATA_TYPE)
    mine = threading.local()
    writers: list[PartWriter] = []
    lock = threading.Lock()

    class Sink:
        def write(self, batch: Any) -> None:
            if not hasattr(mine, "writer"):
                with lock:
                    mine.writer = PartWriter(
                        header=header_line("v2", DATA_TYPE),
                        part_bytes=s.part_bytes,
                        level=s.compress_level,
                        tmp_dir=out / "tmp",
                        blobs=blobs,
                        key_for=lambda n: f"unsorted/part-{n:05d}.csv.gz",
                    )
                    mine.writer.start_group(len(writers))
                    writers.append(mine.writer)
            mine.writer.write(keyed(batch).column(0))

        def close(self) -> None:
            pass

        def abort(self) -> None:
            pass

    t = time.perf_counter()
    feed(store_batches("v2", DATA_TYPE, files), Sink(), workers=max(1, s.duckdb_threads))
    parts = [p for w in writers for p in w.close()]
    seconds = time.perf_counter() - t
    paths = [blobs.path(p.key) for p in parts]
    return seconds, sum(p.rows for p in parts), sum(p.bytes for p in parts), gunzip_size(paths)


def child(pipeline: str, root: Path, files: list[Path]) -> dict[str, Any]:
    """Run one pipeline in this process; return its measurements."""
    from rawexport.settings import Settings

    out = root / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    s = Settings()
    if pipeline == "rawexport":
        from rawexport.blobs.local import LocalBlobStore
        from rawexport.export.pipeline import Attempt, run_here

        blobs = LocalBlobStore(out / "blobs")
        t = time.perf_counter()
        res = run_here(Attempt.of(s, AI, "v2", DATA_TYPE, HOUR_MS, 0, 1), files, blobs, out / "tmp")
        seconds = time.perf_counter() - t
        rss = peak_rss_mib()
        parts = [blobs.path(p.key) for p in res.files]
        rows, gz_bytes, csv_bytes = res.rows, res.bytes, gunzip_size(parts)
    elif pipeline == "unsorted":
        seconds, rows, gz_bytes, csv_bytes = unsorted_floor(s, files, out)
        rss = peak_rss_mib()
    elif pipeline == "polars-isal":
        import polars as pl
        from isal import igzip_threaded

        # The fastest naive path: no sort, no parts; polars streams the Parquet to CSV on
        # every core, then python-isal level 1 gzips the file on every core.
        plain = out / "polars.csv"
        target = out / "polars.csv.gz"
        t = time.perf_counter()
        pl.scan_parquet([str(f) for f in files]).sink_csv(str(plain))
        with (
            plain.open("rb") as src,
            igzip_threaded.open(  # type: ignore[no-untyped-call]
                target, "wb", compresslevel=1, threads=s.duckdb_threads
            ) as dst,
        ):
            shutil.copyfileobj(src, dst, 1 << 22)
        seconds = time.perf_counter() - t
        rss = peak_rss_mib()
        rows = pl.scan_parquet([str(f) for f in files]).select(pl.len()).collect().item()
        gz_bytes, csv_bytes = target.stat().st_size, plain.stat().st_size
    else:
        import duckdb

        gz = pipeline == "duckdb-gzip"
        target = out / ("duckdb.csv.gz" if gz else "duckdb.csv")
        opts = "FORMAT csv, COMPRESSION gzip" if gz else "FORMAT csv"
        paths = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
        con = duckdb.connect()
        con.execute(f"SET memory_limit = '{s.duckdb_memory_limit}'")
        con.execute(f"SET threads = {s.duckdb_threads}")
        con.execute(f"SET temp_directory = '{out / 'duckdb-tmp'}'")
        t = time.perf_counter()
        con.execute(
            f"COPY (SELECT * FROM read_parquet([{paths}]) ORDER BY {SORT}) TO '{target}' ({opts})"
        )
        seconds = time.perf_counter() - t
        rss = peak_rss_mib()
        rows = con.sql(f"SELECT count(*) FROM read_parquet([{paths}])").fetchall()[0][0]
        con.close()
        gz_bytes = target.stat().st_size if gz else 0
        csv_bytes = gunzip_size([target]) if gz else target.stat().st_size
    shutil.rmtree(out, ignore_errors=True)
    return {
        "pipeline": pipeline,
        "seconds": seconds,
        "rows": rows,
        "csv_bytes": csv_bytes,
        "gz_bytes": gz_bytes,
        "peak_rss_mib": rss,
    }


def run_child(pipeline: str, root: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", pipeline, "--dir", str(root)]
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=20_000_000)
    ap.add_argument("--dir", type=Path, help="data directory (default bench-data/export-ROWS)")
    ap.add_argument("--json", type=Path, help="append result objects (JSON lines) to FILE")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    root: Path = (args.dir or Path(f"bench-data/export-{args.rows}")).resolve()

    if args.child:
        from rawexport.store import LocalEventStore

        files = LocalEventStore(root / "events").hour_files(AI, DATA_TYPE, HOUR_MS)
        print(json.dumps(child(args.child, root, files)))
        return

    root.mkdir(parents=True, exist_ok=True)
    files = ensure_data(root, args.rows)
    print(f"{args.rows:,} {DATA_TYPE} rows in {len(files)} Parquet files", flush=True)
    results: dict[str, dict[str, Any]] = {}
    for pipeline in ("rawexport", "unsorted", "duckdb-gzip", "duckdb-csv", "polars-isal"):
        got = results[pipeline] = run_child(pipeline, root)
        if got["rows"] != args.rows:
            raise SystemExit(f"{pipeline} exported {got['rows']} rows, expected {args.rows}")
        print(f"  {pipeline}: {got['seconds']:.2f} s", flush=True)

    print(
        f"\n{'pipeline':<12} {'seconds':>8} {'rows/s':>11} {'MB/s':>7} {'gz MB':>7} {'RSS MiB':>8}"
    )
    for name, r in results.items():
        gz_mb = f"{r['gz_bytes'] / 1e6:7.0f}" if r["gz_bytes"] else "      -"
        print(
            f"{name:<12} {r['seconds']:8.2f} {r['rows'] / r['seconds']:11,.0f} "
            f"{r['csv_bytes'] / 1e6 / r['seconds']:7.0f} {gz_mb} {r['peak_rss_mib']:8.0f}"
        )
    ours, gz, plain = results["rawexport"], results["duckdb-gzip"], results["duckdb-csv"]
    naive, floor = results["polars-isal"], results["unsorted"]
    vs_gz, vs_csv = gz["seconds"] / ours["seconds"], plain["seconds"] / ours["seconds"]
    vs_naive, vs_floor = naive["seconds"] / ours["seconds"], floor["seconds"] / ours["seconds"]
    print(f"\nrawexport vs DuckDB gzip COPY: {vs_gz:.2f}x   vs uncompressed COPY: {vs_csv:.2f}x")
    print(f"rawexport vs polars sink_csv + isal level 1 (unsorted): {vs_naive:.2f}x")
    print(
        f"rawexport vs its own read + lines + gzip, unsorted: {vs_floor:.2f}x "
        f"(that floor is {gz['seconds'] / floor['seconds']:.2f}x DuckDB's gzip COPY)"
    )

    if args.json:
        n = f"{args.rows / 1e6:g}M {DATA_TYPE} rows"
        figures = [
            (f"export {n}", ours["seconds"], "s", "DuckDB COPY gzip", gz["seconds"], vs_gz),
            (f"export {n}", ours["seconds"], "s", "DuckDB COPY csv", plain["seconds"], vs_csv),
            (
                f"export {n}",
                ours["seconds"],
                "s",
                "polars sink_csv + isal (unsorted)",
                naive["seconds"],
                vs_naive,
            ),
            (
                f"export {n}",
                ours["seconds"],
                "s",
                "rawexport unsorted (no sort, no spill)",
                floor["seconds"],
                vs_floor,
            ),
            (
                f"export {n} throughput",
                ours["csv_bytes"] / 1e6 / ours["seconds"],
                "MB/s",
                "DuckDB COPY gzip",
                gz["csv_bytes"] / 1e6 / gz["seconds"],
                (ours["csv_bytes"] / ours["seconds"]) / (gz["csv_bytes"] / gz["seconds"]),
            ),
            (
                f"export {n} gzip size",
                ours["gz_bytes"] / 1e6,
                "MB",
                "DuckDB COPY gzip",
                gz["gz_bytes"] / 1e6,
                ours["gz_bytes"] / gz["gz_bytes"],
            ),
            (
                f"export {n} peak RSS",
                ours["peak_rss_mib"],
                "MiB",
                "budget 1 GiB",
                1024.0,
                ours["peak_rss_mib"] / 1024,
            ),
        ]
        write_figures(args.json, "export", figures)


if __name__ == "__main__":
    main()
