"""Fixtures for blob store tests: moto's S3 server, started once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.s3_util import FAKE_AWS_ENV, UNSET_AWS_ENV, MotoServer


@pytest.fixture(scope="session")
def fake_aws_env() -> Iterator[None]:
    """Fake AWS credentials and no config files, so boto3 can only reach the test endpoint."""
    with pytest.MonkeyPatch.context() as mp:
        for name in UNSET_AWS_ENV:
            mp.delenv(name, raising=False)
        for name, value in FAKE_AWS_ENV.items():
            mp.setenv(name, value)
        yield


@pytest.fixture(scope="session")
def moto_s3(
    fake_aws_env: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(endpoint_url, bucket) of a moto S3 server process with one bucket."""
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with MotoServer(log) as server:
        yield server.endpoint_url, server.create_bucket("rawexport-test")
