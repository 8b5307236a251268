"""Helpers for end-to-end tests: real `rawexport` processes on 127.0.0.1."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

RAWEXPORT = [sys.executable, "-m", "rawexport.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_for(home: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAWEXPORT_")}
    env.update(
        RAWEXPORT_HOME=str(home),
        RAWEXPORT_HOST="127.0.0.1",
        RAWEXPORT_PORT=str(port),
        RAWEXPORT_LOG_LEVEL="warning",
    )
    env.update(extra)
    return env


def run_cli(args: list[str], env: Mapping[str, str], timeout: float = 120) -> Any:
    out = subprocess.run(
        [*RAWEXPORT, *args], env=dict(env), capture_output=True, text=True, timeout=timeout
    )
    if out.returncode != 0:
        raise AssertionError(f"rawexport {' '.join(args)} failed: {out.stderr}")
    return json.loads(out.stdout)


class Server:
    """A real rawexport process; stopped (and waited for) on exit."""

    def __init__(self, args: list[str], env: Mapping[str, str], port: int, log: Path) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            [*RAWEXPORT, *args], env=dict(env), stdout=self.log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("server did not become ready")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill() if exc[0] is not None else self.stop()
        if not self.log.closed:
            self.log.close()


def auth_code(base: str, ai: str, uid: str, public_key: str, private_key: str) -> str:
    """GrowingIO's documented flow, as a plain script does it: raw text/plain body."""
    tm = str(int(time.time() * 1000))
    message = f"POST\n/auth/token\nproject={uid}&ai={ai}&tm={tm}"
    sign = hmac.new(private_key.encode(), message.encode(), hashlib.sha256).hexdigest()
    body = f"project={uid}&ai={ai}&tm={tm}&auth={sign}".encode()
    req = urllib.request.Request(
        base + "/auth/token",
        data=body,
        method="POST",
        headers={"X-Client-Id": public_key, "Content-Type": "text/plain,text/plain"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        answer = json.loads(r.read())
    assert answer["status"] == "success"
    return str(answer["code"])


def get_json(url: str, headers: Mapping[str, str], tries: int = 20) -> tuple[int, Any]:
    """GET a JSON answer; a 429 is honoured by sleeping its Retry-After, like a polite script."""
    req = urllib.request.Request(url, headers=dict(headers))
    for _ in range(tries):
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            body = json.loads(e.read() or b"null")
            if e.code != 429:
                return e.code, body
            time.sleep(float(e.headers.get("Retry-After", "1")))
    raise AssertionError(f"still rate limited after {tries} tries: {url}")


def download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as r:
        data: bytes = r.read()
        assert int(r.headers["Content-Length"]) == len(data)
        return data


@contextlib.contextmanager
def serve_in_thread(app: Any, port: int) -> Iterator[None]:
    """An ASGI app on uvicorn in a thread of this process, on 127.0.0.1:port, until exit."""
    import threading

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(10)
