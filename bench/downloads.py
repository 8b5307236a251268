"""Download benchmark: one 64 MB export part served by rawexport next to nginx (sendfile).

A real export part (1 M `page` events of one hour, exported by `rawexport export run`) is
fetched over loopback through a signed link from a real `rawexport serve`, and the same file
from nginx (`sendfile on`, one worker) serving the exports directory, with 1 and with 8
concurrent streams for a fixed duration; the two servers take turns, twice each. The
client is this file's: one thread per stream on a kept-alive connection reading into a
4 MiB buffer (wrk and curl read 8-16 KiB at a time and would be the bottleneck); the first
answer of each server is checked against the part's sha256 in the manifest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.e2e_util import Server, free_port, run_cli  # noqa: E402

from api import demo_env, load_average  # noqa: E402

BUFFER = 4 * 1024 * 1024
NGINX_CONF = """
daemon off;
master_process on;
worker_processes 1;
{user}
pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    client_body_temp_path {root}/tmp;
    proxy_temp_path {root}/tmp;
    fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp;
    scgi_temp_path {root}/tmp;
    server {{
        listen 127.0.0.1:{port};
        root {exports};
        location / {{ }}
    }}
}}
"""


def nginx_bin() -> str | None:
    if shutil.which("nginx"):
        return shutil.which("nginx")
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


@contextmanager
def nginx(root: Path, exports: Path) -> Iterator[str]:
    binary = nginx_bin()
    assert binary is not None
    port = free_port()
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    conf = root / "nginx.conf"
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(NGINX_CONF.format(user=user, root=root, port=port, exports=exports))
    proc = subprocess.Popen([binary, "-p", str(root), "-c", str(conf)])
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_port(port)
        yield base
    finally:
        proc.terminate()
        proc.wait(20)


def _wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


def fetch_once(url: str) -> bytes:
    """One whole answer (to check the bytes)."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=60) as r:
        data: bytes = r.read()
    return data


def stream_load(url: str, streams: int, seconds: float) -> float:
    """Bytes/s of `streams` threads downloading url again and again for `seconds`."""
    u = urlsplit(url)
    target = u.path + (f"?{u.query}" if u.query else "")
    request = f"GET {target} HTTP/1.1\r\nHost: {u.netloc}\r\n\r\n".encode()
    totals = [0] * streams
    errors: list[str] = []
    start = time.perf_counter()
    deadline = start + seconds

    def run(n: int) -> None:
        buf = bytearray(BUFFER)
        view = memoryview(buf)
        sock = socket.create_connection((u.hostname, u.port))
        try:
            while time.perf_counter() < deadline:
                sock.sendall(request)
                head = b""
                while b"\r\n\r\n" not in head:
                    got = sock.recv(65536)
                    if not got:
                        raise ConnectionError("closed")
                    head += got
                header, _, rest = head.partition(b"\r\n\r\n")
                status = header.split(b" ", 2)[1]
                if status != b"200":
                    raise ConnectionError(f"HTTP {status.decode()}")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in header.split(b"\r\n")[1:]
                    if line.lower().startswith(b"content-length:")
                )
                left = length - len(rest)
                totals[n] += len(rest)
                while left > 0:
                    got_n = sock.recv_into(view[: min(BUFFER, left)])
                    if not got_n:
                        raise ConnectionError("closed mid-body")
                    left -= got_n
                    totals[n] += got_n
        except OSError as e:
            errors.append(str(e))
        finally:
            sock.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"download errors from {url}: {errors[:3]}")
    return sum(totals) / (time.perf_counter() - start)


def make_part(root: Path, env: dict[str, str], events: int) -> tuple[Path, dict[str, Any], str]:
    """(exports dir, the biggest part's manifest entry, project ai) of a fresh export."""
    from rawexport.timeutil import HOUR_MS, beijing_hour_label, hour_floor, now_ms

    hour = hour_floor(now_ms()) - 24 * HOUR_MS
    label = beijing_hour_label(hour)
    since = beijing_hour_label(hour - HOUR_MS)
    ai = run_cli(["project", "create", "--name", "dl", "--export-since", since], env)["ai"]
    gen = ["generate", "--project", ai, "--start", label, "--hours", "1"]
    run_cli([*gen, "--events-per-hour", str(events), "--data-type", "page"], env, timeout=1800)
    # Memory for an in-memory sort, so the parts are cut at part_bytes (64 MiB), not by the
    # sort ranges of a bounded-memory export.
    big = {**env, "RAWEXPORT_DUCKDB_MEMORY_LIMIT": "8GB"}
    run_cli(["export", "run", "--project", ai, "--hour", label, "--data-type", "page"], big,
            timeout=1800)  # fmt: skip
    exports = root / "home" / "exports"
    best: dict[str, Any] | None = None
    for path in exports.rglob("_manifest.json"):
        m = json.loads(path.read_text())
        if m.get("version") != "v2":
            continue
        for p in m["parts"]:
            if best is None or p["bytes"] > best["bytes"]:
                best = p
    assert best is not None, "no part exported"
    return exports, best, ai


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=8.0, help="duration of each run")
    ap.add_argument("--events", type=int, default=2_500_000, help="page events of the hour")
    ap.add_argument("--rounds", type=int, default=2, help="turns of each server per figure")
    ap.add_argument("--dir", type=Path, default=Path("bench-data/downloads"))
    ap.add_argument("--json", type=Path, help="append result objects (JSON lines) to FILE")
    args = ap.parse_args()
    if nginx_bin() is None:
        print("nginx is not installed: no reference, nothing measured", flush=True)
        return
    root: Path = args.dir.resolve()
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    port = free_port()
    env = demo_env(root / "home", port, None)
    exports, part, ai = make_part(root, env, args.events)
    print(f"part: {part['key']} ({part['bytes'] / 1e6:.1f} MB)", flush=True)

    from rawexport.blobs import links
    from rawexport.catalog import Catalog

    catalog = Catalog(f"sqlite:///{root / 'home' / 'catalog.db'}", run_migrations=False)
    secret = catalog.secret(links.SECRET_NAME)
    catalog.close()
    base = f"http://127.0.0.1:{port}"
    expires = int(time.time() * 1000) + 3_600_000
    link = links.make_link(base, secret, links.link_path(part["key"], base), expires)

    figures: list[dict[str, Any]] = []
    with Server(["serve"], env, port, root / "serve.log") as server, nginx(root, exports) as ng:
        server.wait_ready()
        urls = {"rawexport": link, "nginx": f"{ng}/{part['key']}"}
        for name, url in urls.items():
            data = fetch_once(url)
            if hashlib.sha256(data).hexdigest() != part["sha256"]:
                raise SystemExit(f"{name} served other bytes than the part")
        for streams in (1, 8):
            print(f"load average before {streams} stream(s): {load_average()}", flush=True)
            rates: dict[str, list[float]] = {"rawexport": [], "nginx": []}
            for _ in range(args.rounds):
                for name in ("nginx", "rawexport"):
                    stream_load(urls[name], streams, 1.0)  # warm up
                    rates[name].append(stream_load(urls[name], streams, args.seconds))
            ours, ref = (sum(rates[n]) / len(rates[n]) for n in ("rawexport", "nginx"))
            print(
                f"{streams} stream(s): rawexport {ours / 1e9:.2f} GB/s, nginx {ref / 1e9:.2f} "
                f"GB/s ({ours / ref:.2f}x; runs {[round(r / 1e9, 2) for r in rates['rawexport']]}"
                f" vs {[round(r / 1e9, 2) for r in rates['nginx']]})",
                flush=True,
            )
            figures.append(
                {
                    "bench": "downloads",
                    "figure": f"64 MB part, {streams} stream(s)",
                    "value": round(ours / 1e6, 1),
                    "unit": "MB/s",
                    "reference": "nginx sendfile",
                    "ref_value": round(ref / 1e6, 1),
                    "ratio": round(ours / ref, 3),
                }
            )
    if args.json:
        with args.json.open("a", encoding="utf-8") as f:
            for row in figures:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
