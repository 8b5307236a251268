"""A throwaway S3 endpoint for tests: moto's server mode in its own process on a loopback port.

A separate process is closer to a real endpoint than moto's in-process mocks: requests go
through boto3's whole HTTP stack, and presigned URLs can be fetched with any HTTP client.
Credentials are fake (FAKE_AWS_ENV); nothing here ever talks to AWS.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

# Set by the fixtures (monkeypatch) so boto3's default chain finds these and nothing else.
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/nonexistent/rawexport-tests/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/rawexport-tests/aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}
UNSET_AWS_ENV = (
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def closed_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    return free_port()


class MotoServer:
    """`with MotoServer() as s3: s3.endpoint_url` — moto's S3 on 127.0.0.1, killed at exit.

    extra_env goes to the server process, e.g. INITIAL_NO_AUTH_ACTION_COUNT=0 to make it
    check credentials (moto accepts any by default).
    """

    def __init__(self, log: Path | None = None, extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(FAKE_AWS_ENV, **self.extra_env)
        out = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        finally:
            if not isinstance(out, int):
                out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.proc.returncode}")
            try:
                # Any HTTP answer (an auth-checking server says 403) means it is serving.
                with urllib.request.urlopen(self.endpoint_url + "/moto-api/", timeout=2):
                    return
            except urllib.error.HTTPError:
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto server did not start")

    def client(self, **kwargs: Any) -> Any:
        """A boto3 S3 client of this endpoint (fake credentials unless given)."""
        import boto3

        opts = {
            "aws_access_key_id": FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            "region_name": FAKE_AWS_ENV["AWS_DEFAULT_REGION"],
            **kwargs,
        }
        return boto3.session.Session().client("s3", endpoint_url=self.endpoint_url, **opts)

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> MotoServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
