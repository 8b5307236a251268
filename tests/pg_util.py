"""A throwaway PostgreSQL cluster on a loopback port, for tests: initdb, pg_ctl, stop by pid.

Uses the machine's PostgreSQL (`initdb`, `pg_ctl` on PATH, or Debian's
/usr/lib/postgresql/*/bin). initdb refuses to run as root, so as root the cluster is made
and run by the `postgres` user (runuser).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True):
        return candidate
    return None


def available() -> bool:
    return _bin("initdb") is not None and _bin("pg_ctl") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresCluster:
    """`with PostgresCluster() as pg: pg.url` — a fresh cluster, stopped and removed at exit.

    It lives in its own directory under the system temp dir: pytest's tmp dirs are private
    to root, where the `postgres` user cannot reach.
    """

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="rawexport-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.as_postgres = os.geteuid() == 0
        self.pid: int | None = None

    def _run(self, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = ["runuser", "-u", "postgres", "--", *args] if self.as_postgres else args
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)

    def start(self) -> None:
        initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
        if not initdb or not pg_ctl:
            raise RuntimeError("PostgreSQL's initdb/pg_ctl are not installed")
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self._run([initdb, "-D", str(self.data), "-U", "rawexport", "-A", "trust", "-E", "UTF8"])
        self.resume()

    def resume(self) -> None:
        """Start the server of the cluster (again, after `pause`), on the same port."""
        pg_ctl = _bin("pg_ctl")
        assert pg_ctl is not None
        opts = f"-c listen_addresses=127.0.0.1 -c port={self.port} -k {self.root} -c fsync=off"
        self._run([pg_ctl, "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"), "-w",
                   "start"], timeout=60)  # fmt: skip
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("PostgreSQL did not start")

    @property
    def url(self) -> str:
        return f"postgresql://rawexport@127.0.0.1:{self.port}/postgres"

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://rawexport@127.0.0.1:{self.port}/{name}"

    def pause(self) -> None:
        """Stop the server (fast shutdown: connections are closed), keeping the cluster."""
        pg_ctl = _bin("pg_ctl")
        assert pg_ctl is not None and self.pid is not None
        self._run([pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"], timeout=60)
        self.pid = None

    def stop(self) -> None:
        pg_ctl = _bin("pg_ctl")
        if self.pid is not None and pg_ctl:  # else not running (never started, or paused)
            try:
                self._run([pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"], timeout=60)
            except (subprocess.SubprocessError, OSError):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, 9)
        self.pid = None
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
