"""Ingest benchmark: events/s over HTTP (100- and 1000-event batches) and via `rawexport ingest`.

Each rate is set next to the rate of merely parsing the same payloads with orjson (the JSON
library the collectors use; pyarrow's CSV reader for the CSV import) in the same run; the
ratio is ingest rate / parse rate. Import rates use the command's own timing (without
interpreter start-up); the wall-clock rate is printed too. HTTP clients are threads of
this process on persistent loopback connections, posting pre-encoded batches to a real
`rawexport serve` on the same machine, which they share with it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.e2e_util import Server, env_for, free_port, run_cli  # noqa: E402


def events(n: int, offset: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "type": "custom_event",
            "visitUserId": f"visitor-{(offset + i) % 50_000:08d}",
            "sessionId": f"session-{(offset + i) % 9_000:06d}",
            "time": 1_700_000_000_000 + offset + i,
            "eventName": ("purchase", "view_item", "add_to_cart")[i % 3],
            "eventVariable": {"price": f"{i % 997}.5", "sku": f"SKU-{i % 431}"},
            "loginUserId": f"user-{(offset + i) % 20_000}",
            "page": "/checkout/confirm",
        }
        for i in range(n)
    ]


def parse_rate(payloads: list[bytes], per_payload: int, seconds: float = 1.5) -> float:
    """events/s of orjson.loads over the payloads, best of a few timed rounds."""
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for p in payloads:
            orjson.loads(p)
            done += per_payload
    return done / (time.perf_counter() - start)


def http_rate(
    port: int, ai: str, payloads: list[bytes], batch: int, clients: int, secs: float
) -> float:
    """events/s the server acknowledged, `clients` threads posting for `secs` seconds."""
    path = f"/api/v1/projects/{ai}/events"
    counts = [0] * clients
    stop = threading.Event()

    def client(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = n
        while not stop.is_set():
            body = payloads[i % len(payloads)]
            conn.request("POST", path, body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            answer = r.read()
            if r.status != 200:
                raise SystemExit(f"HTTP {r.status}: {answer[:200]!r}")
            counts[n] += orjson.loads(answer)["accepted"]
            i += clients
        conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(secs)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=8.0, help="duration of each HTTP run")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--import-events", type=int, default=1_500_000)
    ap.add_argument("--dir", type=Path, default=Path("bench-data/ingest"))
    ap.add_argument("--json", type=Path, help="append result objects (JSON lines) to FILE")
    args = ap.parse_args()
    root: Path = args.dir.resolve()
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    port = free_port()
    env = env_for(root / "home", port, RAWEXPORT_MAX_BATCH_EVENTS="100000")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.environ.get("PYTHONPATH"), str(HERE.parent)) if p
    )
    ai = run_cli(["project", "create", "--name", "bench"], env)["ai"]

    figures: list[tuple[str, float, str, str, float]] = []
    with Server(["serve"], env, port, root / "serve.log") as server:
        server.wait_ready()
        for batch in (100, 1000):
            payloads = [orjson.dumps(events(batch, k * batch)) for k in range(64)]
            http_rate(port, ai, payloads, batch, args.clients, 1.0)  # warm up
            rate = http_rate(port, ai, payloads, batch, args.clients, args.seconds)
            ref = parse_rate(payloads, batch)
            print(
                f"HTTP {batch}-event batches, {args.clients} clients: {rate:,.0f} events/s "
                f"(orjson parse alone {ref:,.0f}/s)",
                flush=True,
            )
            figures.append(
                (f"HTTP ingest, {batch}-event batches", rate, "events/s", "orjson parse", ref)
            )

    n = args.import_events
    ndjson = root / "events.ndjson"
    with ndjson.open("wb") as f:
        for k in range(0, n, 10_000):
            f.write(b"\n".join(orjson.dumps(e) for e in events(min(10_000, n - k), k)) + b"\n")
    lines = ndjson.read_bytes().splitlines()
    start = time.perf_counter()
    for line in lines:
        orjson.loads(line)
    ref = n / (time.perf_counter() - start)
    del lines
    start = time.perf_counter()
    out = run_cli(["ingest", "--project", ai, str(ndjson)], env, timeout=600)
    wall = time.perf_counter() - start
    assert out["total"] == n, out
    rate = n / out["seconds"]
    print(
        f"rawexport ingest NDJSON: {rate:,.0f} events/s in-command, {n / wall:,.0f}/s wall "
        f"(orjson parse alone {ref:,.0f}/s)",
        flush=True,
    )
    figures.append(("rawexport ingest NDJSON", rate, "events/s", "orjson parse", ref))

    csv_parts = _export_parts(env, root, ai)
    if csv_parts:
        from rawexport.ingest.files import read_csv

        rows = sum(p[1] for p in csv_parts)
        start = time.perf_counter()
        for path, _ in csv_parts:
            read_csv(path, "custom_event")
        csv_ref = rows / (time.perf_counter() - start)
        ai2 = run_cli(["project", "create", "--name", "bench2"], env)["ai"]
        args2 = ["ingest", "--project", ai2, "--data-type", "custom_event"]
        out = run_cli([*args2, *[str(p[0]) for p in csv_parts]], env, timeout=600)
        assert out["total"] == rows, out
        rate = rows / out["seconds"]
        print(
            f"rawexport ingest CSV.gz: {rate:,.0f} events/s ({rows:,} rows; "
            f"pyarrow CSV parse alone {csv_ref:,.0f}/s)",
            flush=True,
        )
        figures.append(("rawexport ingest CSV.gz", rate, "events/s", "pyarrow CSV parse", csv_ref))

    if args.json:
        with args.json.open("a", encoding="utf-8") as f:
            for figure, value, unit, reference, ref_value in figures:
                row = {
                    "bench": "ingest",
                    "figure": figure,
                    "value": round(value, 1),
                    "unit": unit,
                    "reference": reference,
                    "ref_value": round(ref_value, 1),
                    "ratio": round(value / ref_value, 3),
                }
                f.write(json.dumps(row) + "\n")


def _export_parts(env: dict[str, str], root: Path, ai: str) -> list[tuple[Path, int]]:
    """Export the open hour (a preview) and return its CSV parts with their row counts."""
    from rawexport.timeutil import beijing_hour_label, hour_floor, now_ms

    hour = hour_floor(now_ms())
    args = ["export", "run", "--project", ai, "--hour", beijing_hour_label(hour)]
    report = run_cli([*args, "--data-type", "custom_event"], env, timeout=600)
    v2 = [r for r in report if r["version"] == "v2" and r["status"] == "finished"]
    if not v2:
        return []
    exports = root / "home" / "exports"
    for path in sorted(exports.rglob("_manifest.json"), key=os.path.getmtime, reverse=True):
        m = json.loads(path.read_text())
        if (m["ai"], m["version"], m["dataType"]) == (ai, "v2", "custom_event"):
            return [(exports / p["key"], int(p["rows"])) for p in m["parts"]]
    return []


if __name__ == "__main__":
    main()
