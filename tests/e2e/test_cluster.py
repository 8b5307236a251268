"""Two `rawexport serve` nodes on one PostgreSQL catalog and one S3 bucket, behind nginx,
exporting on a Dask cluster.

Everything runs on loopback and is started and stopped (by pid) here: a throwaway
PostgreSQL cluster, moto's S3 server (events and exports), `dask scheduler` with two
`dask worker`s, two nodes and nginx with the upstream of deploy/nginx-rawexport.conf.
The nodes' clocks are shifted (RAWEXPORT_CLOCK_OFFSET_MS) to just before the end of an
hour, so the hour closes and is exported while the test waits.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import hmac
import io
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rawexport.timeutil import HOUR_MS, beijing_hour_label, now_ms
from tests.dask_util import DaskCluster
from tests.e2e_util import RAWEXPORT, Server, env_for, free_port, get_json, run_cli
from tests.pg_util import PostgresCluster
from tests.s3_util import FAKE_AWS_ENV, UNSET_AWS_ENV, MotoServer

pytestmark = pytest.mark.e2e

NGINX_SITE = Path(__file__).parents[2] / "deploy" / "nginx-rawexport.conf"
LEAD_MS = 25_000  # the nodes start this long before their hour closes
START_MARK = "=== test: node process starts ==="


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else "")
    if not found:
        raise RuntimeError("nginx is not installed (make test installs Debian's nginx)")
    return found


class Nginx:
    """nginx in the foreground with its own prefix directory; stopped by pid."""

    def __init__(self, listen: int, nodes: list[int]) -> None:
        self.port = listen
        self.dir = Path(tempfile.mkdtemp(prefix="rawexport-nginx-"))
        site = NGINX_SITE.read_text()
        site = site.replace("@NODE_A@", f"127.0.0.1:{nodes[0]}")
        site = site.replace("@NODE_B@", f"127.0.0.1:{nodes[1]}")
        site = site.replace("@LISTEN@", f"127.0.0.1:{listen}")
        (self.dir / "site.conf").write_text(site)
        d = self.dir
        user = "user root root;\n" if os.geteuid() == 0 else ""
        (d / "nginx.conf").write_text(
            f"{user}worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n"
            "events { worker_connections 512; }\n"
            f"http {{\n  access_log {d}/access.log;\n"
            f"  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n"
            f"  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n"
            f"  scgi_temp_path {d}/scgi;\n  include {d}/site.conf;\n}}\n"
        )
        self.err = (d / "stderr.log").open("wb")
        self.proc = subprocess.Popen(
            [nginx_binary(), "-p", str(d), "-c", str(d / "nginx.conf"), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=self.err,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.err.close()
                raise RuntimeError(f"nginx exited: {(d / 'stderr.log').read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{listen}/healthz", timeout=2):
                    return
            except (OSError, urllib.error.HTTPError):
                time.sleep(0.1)
        raise RuntimeError("nginx did not answer")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.err.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def offset_before_close(lead_ms: int) -> tuple[int, int]:
    """(clock offset, start of the hour) so that a node's now is lead_ms before that hour
    closes."""
    real = now_ms()
    close = real - real % HOUR_MS + HOUR_MS
    if close - real < lead_ms + 5_000:
        close += HOUR_MS
    return close - lead_ms - real, close - HOUR_MS


@dataclass
class Cluster:
    home: Path
    env: dict[str, str]  # what every node and CLI call shares
    ports: dict[str, int]
    nginx: Nginx
    creds: dict[str, str]
    hour: int  # the hour the nodes' clocks are in
    dask: DaskCluster
    nodes: dict[str, Server] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.nginx.port}"

    def start(self, name: str) -> Server:
        port = self.ports[name]
        env = self.env | {"RAWEXPORT_PORT": str(port)}
        log = self.home / f"node-{name}.log"
        with log.open("a") as f:  # the log spans restarts: mark where this process begins
            f.write(f"{START_MARK}\n")
        node = Server(["serve"], env, port, log)
        node.wait_ready(60)
        self.nodes[name] = node
        return node

    def kill(self, name: str) -> None:
        self.nodes[name].kill()
        self.nodes[name].log.close()

    def next_hour(self) -> int:
        """Restart the nodes with their clocks LEAD_MS before the close of a new hour (the
        one after the last used: server hours only move forward); returns its start."""
        for node in self.nodes.values():
            node.stop()
        hour = self.hour + HOUR_MS
        self.env["RAWEXPORT_CLOCK_OFFSET_MS"] = str(hour + HOUR_MS - LEAD_MS - now_ms())
        self.hour = hour
        for name in list(self.nodes):
            self.start(name)
        return hour

    def code(self) -> str:
        """An auth code, signed with the nodes' (shifted) clock: `tm` must be within 10 min."""
        c = self.creds
        tm = str(now_ms() + int(self.env["RAWEXPORT_CLOCK_OFFSET_MS"]))
        message = f"POST\n/auth/token\nproject={c['uid']}&ai={c['ai']}&tm={tm}"
        sign = hmac.new(c["private_key"].encode(), message.encode(), hashlib.sha256).hexdigest()
        body = f"project={c['uid']}&ai={c['ai']}&tm={tm}&auth={sign}".encode()
        headers = {"X-Client-Id": c["public_key"], "Content-Type": "text/plain"}
        req = urllib.request.Request(f"{self.base}/auth/token", body, headers, method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            return str(json.loads(r.read())["code"])

    def log(self, name: str) -> str:
        return (self.home / f"node-{name}.log").read_text(errors="replace")

    def current_log(self, name: str) -> str:
        """The log of the node's running process (its log file spans restarts)."""
        return self.log(name).rsplit(START_MARK, 1)[-1]

    def post_events(self, ids: list[str]) -> bool:
        body = "\n".join(
            json.dumps({"type": "page", "visitUserId": v, "sessionId": "s-" + v, "page": "/p"})
            for v in ids
        ).encode()
        url = f"{self.base}/api/v1/projects/{self.creds['ai']}/events"
        req = urllib.request.Request(url, data=body, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return bool(r.status == 200 and json.loads(r.read())["accepted"] == len(ids))
        except (OSError, ValueError):
            return False

    def wait_finished(self, path: str, timeout: float = 150) -> dict[str, Any]:
        headers = {"Authorization": self.creds["token"]}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = get_json(f"{self.base}{path}", headers)
            if status == 200 and body["status"] == "FINISHED":
                return dict(body)
            time.sleep(1)
        raise AssertionError(f"{path} not FINISHED after {timeout} s: {body}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    home = root / "home"
    with PostgresCluster() as pg, MotoServer(root / "moto.log") as moto:
        bucket = moto.create_bucket("rawexport-cluster")
        worker_env = {k: v for k, v in os.environ.items() if k not in UNSET_AWS_ENV}
        dask = DaskCluster(root, worker_env | FAKE_AWS_ENV, workers=2)
        stack = contextlib.ExitStack()
        stack.enter_context(dask)
        offset, hour = offset_before_close(LEAD_MS)
        ports = {"a": free_port(), "b": free_port()}
        listen = free_port()
        env = env_for(home, ports["a"])
        for name in UNSET_AWS_ENV:
            env.pop(name, None)
        env |= FAKE_AWS_ENV | {
            "RAWEXPORT_CATALOG_URL": pg.create_database("cluster"),
            "RAWEXPORT_BLOBS_URL": f"s3://{bucket}/exports",
            "RAWEXPORT_EVENTS_URL": f"s3://{bucket}/events",
            "RAWEXPORT_S3_ENDPOINT_URL": moto.endpoint_url,
            "RAWEXPORT_PUBLIC_URL": f"http://127.0.0.1:{listen}",
            "RAWEXPORT_CLOCK_OFFSET_MS": str(offset),
            "RAWEXPORT_GRACE_SECONDS": "1",
            "RAWEXPORT_PLAN_INTERVAL": "1",
            "RAWEXPORT_LOG_LEVEL": "info",
            "RAWEXPORT_WORKERS": "1",
            "RAWEXPORT_RATE_NODES": "2",  # the default rate_limit (2/s) across both nodes
            "RAWEXPORT_DASK_ADDRESS": dask.address,
            # A small budget, so that an hour of 120k events is sorted in several ranges.
            "RAWEXPORT_DUCKDB_MEMORY_LIMIT": "64MB",
        }
        label = beijing_hour_label(hour)
        created = run_cli(["project", "create", "--name", "c", "--export-since", label], env)
        ai = str(created["ai"])
        key = run_cli(["key", "create", "--project", ai], env)
        token = run_cli(["token", "create", "--project", ai], env)["token"]
        creds = {
            "ai": ai,
            "uid": str(created["uid"]),
            "public_key": str(key["public_key"]),
            "private_key": str(key["private_key"]),
            "token": str(token),
        }
        c = Cluster(home, env, ports, None, creds, hour, dask)  # type: ignore[arg-type]
        try:
            c.start("a")
            c.start("b")
            c.nginx = Nginx(listen, [ports["a"], ports["b"]])
            yield c
        finally:
            if c.nginx is not None:
                c.nginx.stop()
            for node in c.nodes.values():
                node.stop()
            stack.close()


def rows_of(data: bytes) -> list[dict[str, str]]:
    text = io.TextIOWrapper(io.BytesIO(gzip.decompress(data)), encoding="utf-8", newline="")
    reader = csv.reader(text, quotechar='"', escapechar="\\")
    header = next(reader)
    return [dict(zip(header, row, strict=True)) for row in reader]


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as r:  # follows the redirect to S3
        data: bytes = r.read()
        assert hashlib.md5(data).hexdigest() == r.headers["x-amz-meta-md5-hash"]
        return data


def test_events_through_both_nodes_exported_and_read_the_growingio_way(cluster: Cluster) -> None:
    hour = cluster.next_hour()  # in any test order: a fresh hour that closes soon
    ai = cluster.creds["ai"]
    acked: list[str] = []
    for n in range(16):
        ids = [f"u{n}-{i}" for i in range(250)]
        assert cluster.post_events(ids)
        acked += ids
    route = f'"path":"/api/v1/projects/{ai}/events"'
    logs = [cluster.log(n).replace('": ', '":') for n in ("a", "b")]
    assert all(route in log for log in logs)  # nginx used both
    label = beijing_hour_label(hour)
    cluster.wait_finished(f"/v2/insights/hour/page/{ai}/{label}.json")
    assert "whole_task" in cluster.dask.task_prefixes()  # exported on the Dask workers
    # GrowingIO's flow, through nginx: HMAC auth code, v2 links, downloads (302 to S3).
    headers = {"X-Client-Id": cluster.creds["public_key"], "Authorization": cluster.code()}
    status, body = get_json(f"{cluster.base}/v2/insights/hour/page/{ai}/{label}.json", headers)
    assert status == 200 and body["status"] == "FINISHED" and body["downloadLinks"]
    assert all(link.startswith(cluster.base + "/") for link in body["downloadLinks"])
    rows = [r for link in body["downloadLinks"] for r in rows_of(fetch(link))]
    assert Counter(r["visitUserId"] for r in rows) == Counter(acked)  # each event once
    # v1 of the same hour, through nginx too (its jobs may still be running).
    cluster.wait_finished(f"/insights/{ai}/{label}.json")
    status, v1 = get_json(f"{cluster.base}/insights/{ai}/{label}.json", headers)
    assert status == 200 and v1["status"] == "FINISHED", v1
    page_links = [u for u in v1["downlinks"] if f"_{ai}_page_" in u]
    v1_rows = [r for link in page_links for r in rows_of(fetch(link))]
    assert len(v1_rows) == len(acked)


def test_killing_the_scheduler_node_hands_planning_to_the_other(cluster: Cluster) -> None:
    marker = "this node now runs the scheduler"
    holders = [name for name in cluster.nodes if marker in cluster.current_log(name)]
    assert len(holders) == 1, holders  # exactly one node plans
    leader = holders[0]
    other = "b" if leader == "a" else "a"
    cluster.kill(leader)
    # A project whose export starts two hours back: only a scheduler plans its hours.
    since = beijing_hour_label(cluster.hour - 2 * HOUR_MS)
    created = run_cli(
        ["project", "create", "--name", "late", "--export-since", since, "--no-v1"],
        cluster.env,
    )
    deadline = time.monotonic() + 30
    jobs: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not jobs:
        jobs = run_cli(["jobs", "list", "--project", str(created["ai"])], cluster.env)
        time.sleep(0.5)
    assert len({j["hour"] for j in jobs}) >= 2, jobs  # its closed hours were planned
    assert marker in cluster.current_log(other)
    cluster.start(leader)  # back for the next test


def test_killing_a_node_during_ingest_loses_no_acknowledged_event(cluster: Cluster) -> None:
    hour = cluster.next_hour()
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        seq = 0
        while not stop.is_set():
            ids = [f"k{n}-{seq}-{i}" for i in range(100)]
            seq += 1
            if cluster.post_events(ids):
                with lock:
                    acked.extend(ids)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(3)
        cluster.kill("b")  # mid-stream: in-flight requests on b are not acked
        time.sleep(3)
        cluster.start("b")
        time.sleep(2)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert len(acked) > 1000
    ai, label = cluster.creds["ai"], beijing_hour_label(hour)
    body = cluster.wait_finished(f"/v2/insights/hour/page/{ai}/{label}.json")
    counts = Counter(
        r["visitUserId"] for link in body["downloadLinks"] for r in rows_of(fetch(link))
    )
    assert [v for v, n in counts.items() if n > 1] == []  # nothing twice
    assert set(acked) <= set(counts)  # every acknowledged event


def test_the_rate_limit_holds_per_credential_across_both_nodes(cluster: Cluster) -> None:
    """nginx alternates the nodes; each allows half the rate, so a credential that fires
    requests back to back is paced at rate_limit in all, and none is refused."""
    ai, label = cluster.creds["ai"], beijing_hour_label(cluster.hour)
    url = f"{cluster.base}/v2/insights/hour/page/{ai}/{label}.json"
    key = run_cli(["token", "create", "--project", ai], cluster.env)["token"]  # a fresh bucket
    started = time.monotonic()
    statuses = []
    for _ in range(30):
        req = urllib.request.Request(url, headers={"Authorization": str(key)})
        with urllib.request.urlopen(req, timeout=60) as r:
            statuses.append(r.status)
    elapsed = time.monotonic() - started
    assert statuses == [200] * 30
    # 2 at once (1 per node), then 2 per second overall: at least 28 / 2 s, with slack.
    assert elapsed >= 28 / 2 * 0.9, elapsed


def v2_files(env: dict[str, str], rows: list[dict[str, Any]]) -> list[tuple[int, int, str]]:
    """(part, rows, sha256) of the v2 revision a rerun report names."""
    (job,) = [r for r in rows if r["version"] == "v2"]
    assert job["status"] == "finished", job
    shown = run_cli(["jobs", "show", str(job["id"])], env)
    return [(f["part"], f["rows"], f["sha256"]) for f in shown["files"]]


def test_killing_a_dask_worker_mid_export_commits_the_same_bytes(cluster: Cluster) -> None:
    """A ranged export on Dask, with a worker killed while it runs a range group: the
    revision commits with the parts of a clean Dask run and of an in-process run."""
    env = cluster.env
    since = beijing_hour_label(cluster.hour - 6 * HOUR_MS)
    created = run_cli(["project", "create", "--name", "big", "--export-since", since], env)
    ai = str(created["ai"])
    label = beijing_hour_label(cluster.hour - 3 * HOUR_MS)
    run_cli(
        ["generate", "--project", ai, "--start", label, "--hours", "1"]
        + ["--events-per-hour", "120000", "--data-type", "page", "--seed", "9"],
        env,
    )
    rerun = ["export", "rerun", "--project", ai, "--hour", label, "--data-type", "page"]
    clean = v2_files(env, run_cli(rerun, env, timeout=300))
    numbers = [part for part, _, _ in clean]
    jumps = [b for a, b in zip(numbers, numbers[1:], strict=False) if b != a + 1]
    assert len(jumps) >= 2  # several range groups, each numbered from group x stride
    assert sum(rows for _, rows, _ in clean) == 120_000
    assert {"split_task", "group_task"} <= cluster.dask.task_prefixes()

    # Again, killing the worker that runs the first range group it is seen running.
    pids = cluster.dask.worker_pids()
    proc = subprocess.Popen(
        [*RAWEXPORT, *rerun], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    killed = ""
    deadline = time.monotonic() + 240
    while not killed and proc.poll() is None and time.monotonic() < deadline:
        for worker, keys in cluster.dask.processing().items():
            if any(k.startswith("group_task") for k in keys):
                os.kill(pids[worker], signal.SIGKILL)
                killed = worker
                break
        time.sleep(0.05)
    out, err = proc.communicate(timeout=300)
    assert killed, f"no range group seen running: {err.decode()[-2000:]}"
    assert proc.returncode == 0, err.decode()[-2000:]
    assert v2_files(env, json.loads(out)) == clean
    cluster.dask.add_worker()  # back to two workers for the other tests
    cluster.dask.wait_workers(2)

    # And in one process (no Dask): the same bytes.
    local = env | {"RAWEXPORT_DASK_ADDRESS": ""}
    assert v2_files(local, run_cli(rerun, local, timeout=300)) == clean
