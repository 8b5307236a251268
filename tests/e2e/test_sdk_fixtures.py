"""Every captured request of GrowingIO's SDKs (shared/fixtures/sdk-requests) replayed against
a real `rawexport serve` on defaults: each answered with the status its SDK takes as
success, then each event found in the export exactly once, in its type and columns."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rawexport.timeutil import HOUR_MS, now_ms
from tests.e2e.test_ingest import export_rows
from tests.e2e_util import Server, env_for, free_port, run_cli
from tests.sdk_util import (
    TYPE_OF,
    capture_ai,
    check_rows,
    expected_status,
    fixture_files,
    replay,
    requests_of,
    unique_events,
)

pytestmark = pytest.mark.e2e


@dataclass
class Replayed:
    env: dict[str, str]
    home: Path
    projects: dict[str, str]  # fixture file name -> project ai
    statuses: dict[str, list[tuple[int, int]]]  # file -> (expected, got) per request
    hours: set[int]


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replayed]:
    tmp = tmp_path_factory.mktemp("sdk-fixtures")
    home, port = tmp / "home", free_port()
    env = env_for(home, port)
    projects: dict[str, str] = {}
    for path in fixture_files():
        args = ["project", "create", "--name", path.stem]
        ai = capture_ai(path)  # the bodies of some name it (GrowingIOSDK's is checked)
        if ai is not None and ai not in projects.values():
            args += ["--ai", ai]
        projects[path.name] = str(run_cli(args, env)["ai"])
    statuses: dict[str, list[tuple[int, int]]] = {}
    with Server(["serve"], env, port, tmp / "serve.log") as server:
        server.wait_ready()
        start = now_ms()
        for path in fixture_files():
            statuses[path.name] = [
                (expected_status(r), replay(server.base, projects[path.name], r).status)
                for r in requests_of(path)
            ]
        end = now_ms()
    yield Replayed(env, home, projects, statuses, {start - start % HOUR_MS, end - end % HOUR_MS})


@pytest.mark.parametrize("name", [p.name for p in fixture_files()])
def test_fixture_replays_into_the_export(replayed: Replayed, name: str) -> None:
    path = next(p for p in fixture_files() if p.name == name)
    assert [got for _, got in replayed.statuses[name]] == [
        want for want, _ in replayed.statuses[name]
    ]
    events = unique_events(path)
    types = sorted({TYPE_OF[e["event_type"]] for e in events})
    ai = replayed.projects[name]
    rows = {t: export_rows(replayed.env, replayed.home, ai, t, replayed.hours) for t in types}
    check_rows(events, rows)
