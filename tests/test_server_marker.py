"""`make check` leaves out the tests that start a server and the slow sweeps: tests/conftest.py
marks them."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import _starts_a_server
from tests.e2e_util import serve_in_thread

ROOT = Path(__file__).parent.parent


def _helper_that_serves() -> None:
    with serve_in_thread(None, 0):
        pass


def _helper_that_does_not() -> int:
    return sum(range(3))


def _calls_a_serving_helper() -> None:
    _helper_that_serves()


def _nests_a_serving_helper() -> None:
    def inner() -> None:
        _helper_that_serves()

    inner()


def _plain() -> None:
    _helper_that_does_not()


class _Holder:
    def run(self) -> None:
        _helper_that_serves()


def _uses_a_class_that_serves() -> None:
    _Holder().run()


@pytest.mark.parametrize(
    "func",
    [
        _helper_that_serves,
        _calls_a_serving_helper,
        _nests_a_serving_helper,
        _uses_a_class_that_serves,
    ],
)
def test_a_call_to_a_server_starter_is_found_through_helpers(func: Callable[..., Any]) -> None:
    assert _starts_a_server(func, set())


def test_a_plain_test_starts_none() -> None:
    assert not _starts_a_server(_plain, set())


def test_the_markers_split_modules_and_parameters() -> None:
    """One collection of a few modules, as `make check` deselects them."""
    files = [
        "tests/store/test_stores.py",
        "tests/catalog/test_sessions.py",
        "tests/api/test_limits.py",
        "tests/ingest/test_sdk_fuzz.py",
    ]
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:randomly"]
        + ["-m", "not server and not slow", *files],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    kept = {line for line in out.stdout.splitlines() if "::" in line}
    assert any(t.endswith("[local]") for t in kept), kept
    assert not any("[s3]" in t or "[postgresql]" in t for t in kept), kept
    assert "tests/catalog/test_sessions.py::test_a_session_lives_until_it_ends[sqlite]" in kept
    # uvicorn on a port is a server; the protocol fed bytes in process is not
    limits = "tests/api/test_limits.py::"
    assert limits + "test_connections_are_sized_from_the_descriptor_limit" in kept
    assert limits + "test_a_body_that_stops_coming_gets_408_and_the_connection_closes" not in kept
    assert not any("test_sdk_fuzz.py" in t for t in kept)  # a slow sweep
