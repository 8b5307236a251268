"""A real Dask cluster for tests: `dask scheduler` and `dask worker` processes on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from distributed import Client, LocalCluster

from tests.e2e_util import free_port

DASK = str(Path(sys.executable).with_name("dask"))


@contextmanager
def threads_cluster(workers: int = 2) -> Iterator[str]:
    """The address of a Dask cluster of single-threaded workers in this process, on loopback
    (the e2e cluster test runs processes: DaskCluster)."""
    with LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=workers,
        threads_per_worker=1,
        processes=False,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address=None,
    ) as c:
        yield str(c.scheduler_address)


class DaskCluster:
    """A scheduler and `workers` single-threaded workers without nannies (so a killed worker
    stays dead and its tasks move), each its own process group, stopped by pid."""

    def __init__(self, log_dir: Path, env: Mapping[str, str], workers: int = 2) -> None:
        self.log_dir = log_dir
        self.env = dict(env)
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.workers = workers

    def _spawn(self, args: list[str], name: str) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"dask-{name}.log").open("ab")
        proc = subprocess.Popen(
            [DASK, *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def __enter__(self) -> DaskCluster:
        self._spawn(
            ["scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"],
            "scheduler",
        )
        for _ in range(self.workers):
            self.add_worker()
        self.wait_workers(self.workers)
        return self

    def add_worker(self) -> None:
        n = len(self.procs)
        self._spawn(
            [
                "worker",
                self.address,
                "--host",
                "127.0.0.1",
                "--nthreads",
                "1",
                "--no-nanny",
                "--no-dashboard",
                "--memory-limit",
                "4GB",
                "--local-directory",
                str(self.log_dir / f"worker-{n}"),
            ],
            f"worker-{n}",
        )

    def client(self) -> Client:
        return Client(self.address, timeout=30, set_as_default=False)  # type: ignore[no-untyped-call]

    def worker_pids(self) -> dict[str, int]:
        with self.client() as c:
            return dict(c.run(os.getpid))

    def processing(self) -> dict[str, list[str]]:
        """{worker address: keys of the tasks it is running}."""
        with self.client() as c:
            got: dict[str, Any] = c.processing()
            return {w: [str(k) for k in keys] for w, keys in got.items()}

    def task_prefixes(self) -> set[str]:
        """Names of every kind of task the scheduler has seen (whole_task, group_task...)."""

        def prefixes(dask_scheduler: Any) -> list[str]:
            return list(dask_scheduler.task_prefixes)

        with self.client() as c:
            return set(c.run_on_scheduler(prefixes))

    def wait_workers(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if len(self.worker_pids()) >= n:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"{n} dask workers not up after {timeout} s")

    def __exit__(
        self,
        typ: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
