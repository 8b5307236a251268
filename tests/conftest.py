"""Factory fixtures: a catalog, a local blob store, projects with credentials, an API app."""

from __future__ import annotations

import gzip
import hashlib
import inspect
import math
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    # Starlette 1.x prefers httpx2 for its TestClient; httpx (our dependency) still works.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from rawexport.api.app import create_app
from rawexport.api.auth import sign_auth
from rawexport.api.ratelimit import RateLimiter
from rawexport.blobs import BlobStore
from rawexport.blobs.local import LocalBlobStore
from rawexport.catalog import Catalog, Job, KeyPair, Project
from rawexport.settings import Settings
from rawexport.timeutil import DAY_MS, HOUR_MS, parse_export_date, utc_key_stamp
from rawexport.types import ExportResult, PartInfo

# "Now" in the tests: 2025-01-10 12:30 Beijing. The current (open) hour is 12:00.
NOW = parse_export_date("hour", "2025011012").start_ms + 30 * 60_000
CURRENT_HOUR = NOW - NOW % HOUR_MS
ENABLED_SINCE = NOW - 5 * DAY_MS - 20 * 60_000  # 2025-01-05 12:10 Beijing
BASE_URL = "http://testserver"


def local_path(blobs: BlobStore, key: str) -> Path:
    """The file holding key in a local blob store (what the tests run on unless they pick S3)."""
    assert isinstance(blobs, LocalBlobStore), blobs
    return blobs.path(key)


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now
        self.slept: list[float] = []  # the waits of requests the rate limit delayed

    def __call__(self) -> int:
        return self.now


def csv_gz(text: str) -> bytes:
    return gzip.compress(text.encode(), mtime=0)


@dataclass
class World:
    """One catalog + blob store + app, and a project with a key pair and an API token."""

    settings: Settings
    catalog: Catalog
    blobs: LocalBlobStore
    clock: Clock
    project: Project
    key: KeyPair
    token: str
    client: TestClient
    limiter: RateLimiter
    auth_limiter: RateLimiter
    _owner: int = field(default=0)
    _last_owner: str = ""

    def add_project(self, name: str, **kw: Any) -> tuple[Project, KeyPair, str]:
        kw.setdefault("export_since_ms", ENABLED_SINCE)
        p = self.catalog.create_project(name, **kw)
        return p, self.catalog.create_key_pair(p.id), self.catalog.create_api_token(p.id)

    def auth_params(self, key: KeyPair | None = None, tm: int | None = None) -> dict[str, str]:
        key = key or self.key
        project = self.catalog.project_by_id(key.project_id)
        t = str(self.clock.now if tm is None else tm)
        auth = sign_auth(key.private_key, project.uid, project.ai, t)
        return {"project": project.uid, "ai": project.ai, "tm": t, "auth": auth}

    def code(self, key: KeyPair | None = None) -> str:
        key = key or self.key
        r = self.client.post(
            "/auth/token", params=self.auth_params(key), headers={"X-Client-Id": key.public_key}
        )
        assert r.status_code == 200, r.text
        return str(r.json()["code"])

    def headers(self, key: KeyPair | None = None) -> dict[str, str]:
        key = key or self.key
        return {"X-Client-Id": key.public_key, "Authorization": self.code(key)}

    def token_headers(self) -> dict[str, str]:
        return {"Authorization": self.token}

    def key_for(self, data_type: str, hour_ms: int, version: str = "v2") -> str:
        suffix = "_v2" if version == "v2" else ""
        prefix = f"{uuid.uuid4().hex[:4]}_{self.project.ai}_{data_type}{suffix}"
        return f"{prefix}_{utc_key_stamp(hour_ms)}"

    def finish(
        self,
        data_type: str,
        hour_ms: int,
        parts: list[bytes] | None = None,
        *,
        version: str = "v2",
        project: Project | None = None,
        preview: bool = False,
    ) -> tuple[Job, list[str]]:
        """Write real part files and a manifest, and commit them as a finished revision."""
        project = project or self.project
        parts = [csv_gz("a,b\n1,2\n")] if parts is None else parts
        prefix = self.key_for(data_type, hour_ms, version)
        infos = []
        for i, data in enumerate(parts):
            key = f"{prefix}/part-{i:05d}-{uuid.uuid4()}-c000.csv.gz"
            self.blobs.put_bytes(key, data)
            md5 = hashlib.md5(data).hexdigest()
            infos.append(PartInfo(i, key, 1, len(data), md5, hashlib.sha256(data).hexdigest()))
        manifest = f"{prefix}/_manifest.json"
        self.blobs.put_bytes(manifest, b'{"parts":[]}')
        job = self.run(project, version, data_type, hour_ms, preview)
        result = ExportResult(prefix, manifest, infos, len(infos), sum(len(d) for d in parts))
        self.catalog.complete(job, self._last_owner, result, hour_ms + HOUR_MS)
        return self.catalog.job(job.id), [p.key for p in infos]

    def fail(self, data_type: str, hour_ms: int, error: str, version: str = "v2") -> Job:
        job = self.run(self.project, version, data_type, hour_ms, False)
        self.catalog.fail(job, self._last_owner, error, retry_at=None, now=hour_ms + HOUR_MS)
        return self.catalog.job(job.id)

    def queue(self, data_type: str, hour_ms: int, version: str = "v2") -> Job:
        return self.catalog.new_revision(
            self.project.id, version, data_type, hour_ms, preview=False, now=self.clock.now
        )

    def run(self, project: Project, version: str, data_type: str, hour: int, preview: bool) -> Job:
        # Created and claimed at the hour's close, before any job queued at "now".
        at = hour + HOUR_MS
        job = self.catalog.new_revision(
            project.id, version, data_type, hour, preview=preview, now=at
        )
        self._owner += 1
        self._last_owner = f"test-{self._owner}"
        claimed = self.catalog.claim(self._last_owner, at, 60_000)
        assert claimed is not None and claimed.id == job.id
        return claimed


@pytest.fixture
def make_world(tmp_path: Path) -> Iterator[Callable[..., World]]:
    made: list[World] = []

    def make(**settings: Any) -> World:
        home = tmp_path / f"w{len(made)}"
        values: dict[str, Any] = {
            "home": home,
            "public_url": BASE_URL,
            "rate_limit": 1e6,
            "rate_burst": 1_000_000,
        }
        values.update(settings)
        s = Settings(**values)
        catalog = Catalog(s.database_url)
        blobs = LocalBlobStore(s.exports_dir)
        clock = Clock(NOW)
        limiter = RateLimiter(
            s.rate_limit,
            s.rate_burst,
            s.rate_queue,
            s.rate_max_delay,
            clock=lambda: clock.now / 1000,
        )

        async def sleep(seconds: float) -> None:  # a delayed request waits on the test clock
            clock.now += math.ceil(seconds * 1000)
            clock.slept.append(seconds)

        auth_limiter = RateLimiter(
            s.auth_rate_limit,
            s.auth_rate_burst,
            queue=20,
            max_delay=30.0,
            clock=lambda: clock.now / 1000,
        )
        app = create_app(
            s,
            catalog,
            blobs,
            clock=clock,
            limiter=limiter,
            sleep=sleep,
            auth_limiter=auth_limiter,
        )
        p = catalog.create_project("main", export_since_ms=ENABLED_SINCE)
        key = catalog.create_key_pair(p.id)
        token = catalog.create_api_token(p.id, "tests")
        client = TestClient(app)
        world = World(s, catalog, blobs, clock, p, key, token, client, limiter, auth_limiter)
        made.append(world)
        return world

    yield make
    for w in made:
        w.client.close()
        w.catalog.close()


@pytest.fixture
def world(make_world: Callable[..., World]) -> World:
    return make_world()


# `make check` runs the tests that start no server and are no long sweep
# (`pytest -m "not server and not slow"`); `make test` runs them all. A test starts a
# server when it is an e2e test (real rawexport processes), asks for a fixture that starts
# one, runs on a server backend's parameter, or calls a server starter: in its own code, in
# a fixture's, or in a helper of the tests they call.
SERVER_FIXTURES = frozenset({"moto_s3", "postgres"})
SERVER_PARAMS = frozenset({"postgresql", "s3"})
SERVER_STARTERS = frozenset(
    {
        "Server",  # tests.e2e_util.Server (`rawexport serve`), uvicorn.Server
        "serve_in_thread",
        "MotoServer",
        "PostgresCluster",
        "DaskCluster",
        "LocalCluster",
        "sync_playwright",
    }
)


def _calls_a_starter(code: CodeType, scope: dict[str, Any], seen: set[CodeType]) -> bool:
    if code in seen:
        return False
    seen.add(code)
    if SERVER_STARTERS.intersection(code.co_names):
        return True
    for const in code.co_consts:
        if isinstance(const, CodeType) and _calls_a_starter(const, scope, seen):
            return True
    for name in code.co_names:
        target = scope.get(name)
        if not getattr(target, "__module__", "").startswith("tests"):
            continue
        if inspect.isfunction(target) and _starts_a_server(target, seen):
            return True
        if inspect.isclass(target):
            for member in vars(target).values():
                if inspect.isfunction(member) and _starts_a_server(member, seen):
                    return True
    return False


def _starts_a_server(func: Callable[..., Any], seen: set[CodeType]) -> bool:
    func = inspect.unwrap(func)
    return _calls_a_starter(func.__code__, func.__globals__, seen)


def starts_a_server(item: pytest.Item) -> bool:
    fixtures = getattr(item, "fixturenames", ())
    if item.get_closest_marker("e2e") or SERVER_FIXTURES.intersection(fixtures):
        return True
    callspec = getattr(item, "callspec", None)
    if callspec is not None and SERVER_PARAMS.intersection(map(str, callspec.params.values())):
        return True
    seen: set[CodeType] = set()
    funcs = [getattr(item, "function", None)]
    info = getattr(item, "_fixtureinfo", None)
    for defs in info.name2fixturedefs.values() if info else ():
        funcs += [d.func for d in defs if d.func.__module__.startswith("tests")]
    return any(callable(f) and _starts_a_server(f, seen) for f in funcs)


# The robustness sweeps (fuzzing, decompression bombs): about half the time of the tests
# that start no server, for inputs the edit-test loop rarely changes.
SLOW_MODULES = frozenset(
    {
        "tests/api/test_openapi_fuzz.py",
        "tests/ingest/test_sdk_fuzz.py",
        "tests/security/test_fuzz_inputs.py",
        "tests/security/test_parse_bombs.py",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if starts_a_server(item):
            item.add_marker(pytest.mark.server)
        if item.nodeid.partition("::")[0] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
