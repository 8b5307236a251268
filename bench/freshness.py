"""Freshness: 1 M events into one hour through the native collector of a running server,
then seconds from the hour's close to FINISHED for all 10 types (goal: <= 120 s).

The server's clock is shifted (RAWEXPORT_CLOCK_OFFSET_MS) so that its current hour closes
about two minutes after start; the figure itself is real wall-clock time from that close.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import httpx
import orjson

from rawexport.demo.generate import rows, split_counts
from rawexport.schema import DATA_TYPE_NAMES
from rawexport.timeutil import HOUR_MS, beijing_hour_label

HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "rawexport.cli"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def payloads(ai: str, hour: int, total: int, batch: int) -> list[bytes]:
    """NDJSON bodies of `batch` native events each, `total` events over all 10 types."""
    counts = split_counts(total, list(DATA_TYPE_NAMES))
    lines: list[bytes] = []
    for name, n in counts.items():
        for start in range(0, n, 200_000):
            table = rows(name, 7, ai, hour, counts, start, min(n, start + 200_000))
            table = table.drop_columns(["sendTime"])  # the server stamps sendTime
            for rec in table.to_pylist():
                rec = {k: v for k, v in rec.items() if v is not None}
                for key, value in list(rec.items()):
                    if (
                        isinstance(value, str)
                        and value.startswith("{")
                        and key.endswith("Variable")
                    ):
                        rec[key] = orjson.loads(value)
                rec["type"] = name
                lines.append(orjson.dumps(rec))
    return [b"\n".join(lines[i : i + batch]) for i in range(0, len(lines), batch)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--lead", type=float, default=150.0, help="seconds before the close at start")
    ap.add_argument("--dir", type=Path, default=Path("bench-data/freshness"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.mkdir(parents=True)
    real = time.time_ns() // 1_000_000
    close_server = real - real % HOUR_MS + HOUR_MS
    offset = close_server - int(args.lead * 1000) - real  # server now = close - lead
    hour = close_server - HOUR_MS
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAWEXPORT_")}
    env.update(
        RAWEXPORT_HOME=str(args.dir),
        RAWEXPORT_PORT=str(port),
        RAWEXPORT_CLOCK_OFFSET_MS=str(offset),
        RAWEXPORT_GRACE_SECONDS="1",
        RAWEXPORT_PLAN_INTERVAL="1",
        RAWEXPORT_LOG_LEVEL="warning",
        RAWEXPORT_RATE_LIMIT="100",
        RAWEXPORT_RATE_BURST="100",
    )
    label = beijing_hour_label(hour)

    def cli(*a: str) -> dict[str, str]:
        out = subprocess.run([*CLI, *a], env=env, capture_output=True, text=True, check=True)
        data: dict[str, str] = json.loads(out.stdout)
        return data

    ai = cli("project", "create", "--name", "fresh", "--export-since", label, "--no-v1")["ai"]
    token = cli("token", "create", "--project", ai)["token"]
    print(f"preparing {args.events:,} events ...", flush=True)
    bodies = payloads(ai, hour, args.events, args.batch)
    log = (args.dir / "server.log").open("wb")
    server = subprocess.Popen([*CLI, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        close_real = (close_server - offset) / 1000
        if time.time() > close_real - 30:
            raise SystemExit("too little time left before the close; raise --lead")
        sent = [0]
        lock = threading.Lock()

        def client(mine: list[bytes]) -> None:
            with httpx.Client(base_url=base, timeout=60) as c:
                for body in mine:
                    if time.time() > close_real - 2:
                        return
                    r = c.post(
                        f"/api/v1/projects/{ai}/events",
                        content=body,
                        headers={"Authorization": token, "Content-Type": "application/x-ndjson"},
                    )
                    r.raise_for_status()
                    with lock:
                        sent[0] += int(r.json()["accepted"])

        t0 = time.time()
        threads = [
            threading.Thread(target=client, args=(bodies[i :: args.clients],))
            for i in range(args.clients)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ingest_s = time.time() - t0
        print(f"ingested {sent[0]:,} events in {ingest_s:.1f} s", flush=True)
        time.sleep(max(0.0, close_real - time.time()))
        url = f"{base}/v2/insights/hour/{ai}/{label}.json"
        status = ""
        while time.time() - close_real < 900:
            req = urllib.request.Request(url, headers={"Authorization": token})
            with urllib.request.urlopen(req, timeout=30) as r:
                status = json.loads(r.read())["status"]
            if status in ("FINISHED", "ERROR"):
                break
            time.sleep(0.25)
        lag = time.time() - close_real
    finally:
        server.terminate()
        server.wait(30)
        log.close()
    print(f"hour {label}: {status} {lag:.1f} s after its close ({sent[0]:,} events)")
    if args.json:
        with args.json.open("a") as f:
            for fig in (
                {
                    "bench": "freshness",
                    "figure": f"close -> FINISHED, {sent[0] / 1e6:.2f} M events",
                    "value": lag,
                    "unit": "s",
                    "reference": "goal",
                    "ref_value": 120.0,
                    "ratio": lag / 120.0,
                },
                {
                    "bench": "freshness",
                    "figure": "collector ingest during the hour",
                    "value": sent[0] / ingest_s,
                    "unit": "events/s",
                    "reference": "goal",
                    "ref_value": 100_000.0,
                    "ratio": sent[0] / ingest_s / 100_000.0,
                },
            ):
                f.write(json.dumps(fig) + "\n")
    if status != "FINISHED":
        raise SystemExit(f"the hour ended {status or 'unknown'}")


if __name__ == "__main__":
    main()
