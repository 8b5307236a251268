"""API benchmark: requests/s, p50 and p99 of rawexport's routes next to a bare Starlette app.

The reference is a bare Starlette app on uvicorn (httptools, uvloop when installed, one
process, no access log) answering the same ~400 B JSON, driven with the same load in the
same run. The load is wrk (`-t2`, 64 connections, fixed duration) when installed, else an
asyncio keep-alive client of this file (slower than wrk: it says so in its figures).

rawexport runs as a real `rawexport serve` on demo data (`rawexport demo --no-serve`),
with the rate limit raised so it does not interfere, at the default log level (the access
log is written), once on a SQLite catalog and once on a throwaway PostgreSQL cluster
(tests/pg_util.PostgresCluster) when PostgreSQL is installed.

This machine's speed drifts from minute to minute (a shared VM), so each route is paired
with its own reference: the bare app and the route are loaded in turn, `--repeat` times
each, and each side's figure is its best requests/s; p50 and p99 are the worst of the
route's runs (the bare app's: of its best run).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.e2e_util import Server, env_for, free_port  # noqa: E402

CONNECTIONS = 64

# The bare reference: the same uvicorn stack, one route, ~400 B of JSON like a v2 answer.
BARE_APP = textwrap.dedent(
    """
    import sys
    import orjson
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    LINK = "http://127.0.0.1:8080/1a2b_0123456789abcdef_page_v2_202501010500/part-00000-" \\
        "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0-c000.csv.gz?expires=1735700000000&sign=" \\
        "0123456789abcdef0123456789abcdef"

    class JSON(Response):
        media_type = "application/json"
        def render(self, content):
            return orjson.dumps(content)

    async def answer(request):
        return JSON({"status": "FINISHED", "downloadLinks": [LINK, LINK], "exportType": "hour",
                     "dataType": "page", "exportDate": "2025010113", "exportVersion": "v2",
                     "requestTime": "2025-01-02 10:15", "errorMsg": ""})

    app = Starlette(routes=[Route("/", answer)])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), http="httptools",
                log_level="warning", access_log=False)
    """
)

WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\\"requests\\":%d,\\"bytes\\":%d,\\"duration_us\\":%d,\\"p50_us\\":%d," ..
    "\\"p99_us\\":%d,\\"non2xx\\":%d,\\"errors\\":%d}\\n",
    summary.requests, summary.bytes, summary.duration, latency:percentile(50),
    latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
"""


@dataclass(frozen=True)
class Load:
    """One load run's figures."""

    rps: float
    p50_ms: float
    p99_ms: float
    bytes_per_s: float
    bad: int  # non-2xx/3xx answers and socket errors
    tool: str


def _lua_str(s: str) -> str:
    return json.dumps(s)  # a JSON string literal is a valid Lua string literal here


def run_wrk(
    url: str,
    seconds: float,
    connections: int = CONNECTIONS,
    threads: int = 2,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
) -> Load:
    """Drive url with wrk (or the asyncio client when wrk is missing) for `seconds`."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return asyncio.run(_py_load(url, seconds, connections, method, headers or {}, body))
    lines = [f"wrk.method = {_lua_str(method)}"]
    if body:
        lines.append(f"wrk.body = {_lua_str(body.decode())}")
    for name, value in (headers or {}).items():
        lines.append(f"wrk.headers[{_lua_str(name)}] = {_lua_str(value)}")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write("\n".join(lines) + "\n" + WRK_DONE)
        script = f.name
    try:
        threads = max(1, min(threads, connections))
        duration = f"-d{max(1, round(seconds))}s"
        cmd = [wrk, f"-t{threads}", f"-c{connections}", duration, "--timeout", "30s", "-s", script]
        cmd.append(url)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    finally:
        os.unlink(script)
    found = [line for line in out.stdout.splitlines() if line.startswith("WRKJSON ")]
    if out.returncode or not found:
        raise SystemExit(f"wrk failed on {url}: {out.stdout}\n{out.stderr}")
    r = json.loads(found[-1].removeprefix("WRKJSON "))
    secs = r["duration_us"] / 1e6
    return Load(
        r["requests"] / secs,
        r["p50_us"] / 1000,
        r["p99_us"] / 1000,
        r["bytes"] / secs,
        r["non2xx"] + r["errors"],
        "wrk",
    )


async def _py_load(
    url: str, seconds: float, connections: int, method: str, headers: Mapping[str, str], body: bytes
) -> Load:
    """wrk's job in asyncio: `connections` keep-alive connections sending one request after
    the other, each answer read to its Content-Length."""
    from urllib.parse import urlsplit

    u = urlsplit(url)
    target = (u.path or "/") + (f"?{u.query}" if u.query else "")
    head = [f"{method} {target} HTTP/1.1", f"Host: {u.netloc}", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    latencies: list[float] = []
    counts = {"bytes": 0, "bad": 0}
    deadline = time.perf_counter() + seconds

    async def one() -> None:
        reader, writer = await asyncio.open_connection(u.hostname, u.port)
        try:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                writer.write(request)
                status_line = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - start)
                counts["bytes"] += length
                if status_line.split(b" ")[1][:1] not in (b"2", b"3"):
                    counts["bad"] += 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(connections)))
    secs = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000

    n = len(latencies)
    return Load(n / secs, pct(0.5), pct(0.99), counts["bytes"] / secs, counts["bad"], "asyncio")


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer")


@contextmanager
def bare_app(root: Path) -> Iterator[str]:
    """The reference app in its own process; its URL."""
    port = free_port()
    script = root / "bare_app.py"
    script.write_text(BARE_APP)
    proc = subprocess.Popen([sys.executable, str(script), str(port)])
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_http(url)
        yield url
    finally:
        proc.terminate()
        proc.wait(20)


def demo_env(home: Path, port: int, catalog_url: str | None) -> dict[str, str]:
    extra = {
        "RAWEXPORT_RATE_LIMIT": "1000000",
        "RAWEXPORT_RATE_BURST": "1000000",
        "RAWEXPORT_RATE_QUEUE": "1000000",
        "RAWEXPORT_AUTH_RATE_LIMIT": "1000000",
        "RAWEXPORT_AUTH_RATE_BURST": "1000000",
        "RAWEXPORT_LOG_LEVEL": "info",  # the default: the access log is part of the cost
    }
    if catalog_url:
        extra["RAWEXPORT_CATALOG_URL"] = catalog_url
    env = env_for(home, port, **extra)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.environ.get("PYTHONPATH"), str(HERE.parent)) if p
    )
    return env


def auth_body(creds: Mapping[str, Any]) -> bytes:
    tm = str(int(time.time() * 1000))
    uid, ai = creds["project_uid"], creds["ai"]
    message = f"POST\n/auth/token\nproject={uid}&ai={ai}&tm={tm}"
    sign = hmac.new(creds["private_key"].encode(), message.encode(), hashlib.sha256).hexdigest()
    return f"project={uid}&ai={ai}&tm={tm}&auth={sign}".encode()


def best_of(loads: list[Load]) -> Load:
    """The best requests/s, with the worst p50 and p99 of the runs (see the module doc)."""
    best = max(loads, key=lambda x: x.rps)
    worst_p50 = max(x.p50_ms for x in loads)
    worst_p99 = max(x.p99_ms for x in loads)
    return Load(
        best.rps, worst_p50, worst_p99, best.bytes_per_s, sum(x.bad for x in loads), best.tool
    )


def paired(
    bare_url: str, url: str, seconds: float, repeat: int, **request: Any
) -> tuple[Load, Load]:
    """The route and the bare app, loaded in turn `repeat` times: (route, bare)."""
    mine: list[Load] = []
    bare: list[Load] = []
    for _ in range(repeat):
        bare.append(run_wrk(bare_url, seconds))
        mine.append(run_wrk(url, seconds, **request))
    return best_of(mine), max(bare, key=lambda x: x.rps)


def measure_rawexport(
    name: str,
    home: Path,
    catalog_url: str | None,
    seconds: float,
    events_per_hour: int,
    bare_url: str,
    repeat: int,
) -> list[tuple[str, Load, Load]]:
    port = free_port()
    env = demo_env(home, port, catalog_url)
    setup = subprocess.run(
        [sys.executable, "-m", "rawexport.cli", "demo", "--home", str(home), "--no-serve",
         "--events-per-hour", str(events_per_hour)],
        env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if setup.returncode:
        raise SystemExit(f"demo setup failed: {setup.stderr}")
    creds = json.loads((home / "demo-credentials.json").read_text())
    ai, day = creds["ai"], creds["example_day"]
    token = {"Authorization": creds["api_token"]}
    out: list[tuple[str, Load, Load]] = []
    with Server(["serve"], env, port, home / "serve.log") as server:
        server.wait_ready()
        base = server.base
        routes: list[tuple[str, str, str, dict[str, str], bytes]] = [
            ("/healthz", "GET", "/healthz", {}, b""),
            ("hour links", "GET", f"/v2/insights/hour/page/{ai}/{day}13.json?expire=60", token,
             b""),
            ("day links", "GET", f"/v2/insights/day/page/{ai}/{day}.json?expire=60", token, b""),
            ("all-types day links", "GET", f"/v2/insights/day/{ai}/{day}.json?expire=60", token,
             b""),
            ("v1 day links", "GET", f"/insights/{ai}/{day}.json?expire=60", token, b""),
        ]  # fmt: skip
        for label, method, path, headers, body in routes:
            status, answer = fetch(base + path, headers)
            if status != 200 or (path != "/healthz" and answer.get("status") != "FINISHED"):
                raise SystemExit(f"{label}: HTTP {status} {str(answer)[:300]}")
            run_wrk(base + path, 1, method=method, headers=headers, body=body)  # warm up
            load, bare = paired(bare_url, base + path, seconds, repeat, method=method,
                                headers=headers, body=body)  # fmt: skip
            report(name, label, load, bare)
            out.append((label, load, bare))
        auth_headers = {"X-Client-Id": creds["public_key"], "Content-Type": "text/plain"}
        load, bare = paired(bare_url, base + "/auth/token", seconds, repeat, method="POST",
                            headers=auth_headers, body=auth_body(creds))  # fmt: skip
        report(name, "/auth/token", load, bare)
        out.append(("/auth/token", load, bare))
    return out


def fetch(url: str, headers: Mapping[str, str]) -> tuple[int, Any]:
    req = urllib.request.Request(url, headers=dict(headers))
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, json.loads(r.read())


def report(backend: str, label: str, load: Load, bare: Load) -> None:
    bad = f", {load.bad} bad answers" if load.bad else ""
    print(
        f"{backend:>10} {label:<22} {load.rps:>10,.0f} req/s  p50 {load.p50_ms:6.2f} ms  "
        f"p99 {load.p99_ms:7.2f} ms  bare {bare.rps:>8,.0f} req/s  "
        f"ratio {load.rps / bare.rps:5.2f}  ({load.tool}{bad})",
        flush=True,
    )


def load_average() -> str:
    try:
        return Path("/proc/loadavg").read_text().split(" ")[0]
    except OSError:
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each load run")
    ap.add_argument("--repeat", type=int, default=2, help="load runs per route and reference")
    ap.add_argument("--events-per-hour", type=int, default=2000, help="demo data size")
    ap.add_argument("--no-postgres", action="store_true", help="SQLite only")
    ap.add_argument("--dir", type=Path, default=Path("bench-data/api"))
    ap.add_argument("--json", type=Path, help="append result objects (JSON lines) to FILE")
    args = ap.parse_args()
    root: Path = args.dir.resolve()
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    backends: list[tuple[str, str | None]] = [("sqlite", None)]
    with ExitStack() as stack:
        if not args.no_postgres:
            from tests import pg_util

            if pg_util.available():
                pg = stack.enter_context(pg_util.PostgresCluster())
                backends.append(("postgresql", pg.create_database("bench_api")))
            else:
                print("PostgreSQL is not installed: SQLite only", flush=True)
        rows: list[dict[str, Any]] = []
        for name, url in backends:
            print(f"load average before {name}: {load_average()}", flush=True)
            with bare_app(root) as bare_url:
                run_wrk(bare_url, 1)  # warm up
                for label, load, bare in measure_rawexport(
                    name, root / name, url, args.seconds, args.events_per_hour, bare_url,
                    max(1, args.repeat),
                ):  # fmt: skip
                    rows += figure_rows(name, label, load, bare)
    if args.json:
        with args.json.open("a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")


def figure_rows(backend: str, label: str, load: Load, bare: Load) -> list[dict[str, Any]]:
    ref = f"bare Starlette ({load.tool}, {CONNECTIONS} conn, paired)"
    return [
        {
            "bench": "api",
            "figure": f"{backend} {label} requests/s",
            "value": round(load.rps, 1),
            "unit": "req/s",
            "reference": ref,
            "ref_value": round(bare.rps, 1),
            "ratio": round(load.rps / bare.rps, 3),
        },
        {
            "bench": "api",
            "figure": f"{backend} {label} p50",
            "value": round(load.p50_ms, 2),
            "unit": "ms",
            "reference": ref,
            "ref_value": round(bare.p50_ms, 2),
            "ratio": round(load.p50_ms / bare.p50_ms, 3) if bare.p50_ms else None,
        },
        {
            "bench": "api",
            "figure": f"{backend} {label} p99",
            "value": round(load.p99_ms, 2),
            "unit": "ms",
            "reference": ref,
            "ref_value": round(bare.p99_ms, 2),
            "ratio": round(load.p99_ms / bare.p99_ms, 3) if bare.p99_ms else None,
        },
    ]


if __name__ == "__main__":
    main()
