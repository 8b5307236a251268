"""Generated garbage at every collector and at /auth/token: never a 5xx (issue 13).

Hypothesis builds bodies (bytes, JSON values, gzip / snappy / XOR-encrypted versions of
them) and headers (encodings, codecs, content types, stm values), 1000 cases per
endpoint; an in-process app without the generic 500 guard, so a server error is a failure
here, not a hidden 500.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cramjam
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import World
from tests.ingest.test_collectors import Site, make_site

CASES = 1000

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
event_keys = st.sampled_from(
    ["eventType", "deviceId", "userId", "eventName", "attributes", "timestamp", "type",
     "visitUserId", "sessionId", "t", "tm", "u", "s", "n", "e", "cs1", "ai", "page", "time"]
)  # fmt: skip
events = st.dictionaries(event_keys, json_values, max_size=8)
json_bodies = st.one_of(
    st.lists(events, max_size=5).map(lambda v: json.dumps(v).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.lists(events, max_size=5).map(lambda v: "\n".join(json.dumps(e) for e in v).encode()),
)
raw_bodies = st.one_of(json_bodies, st.binary(max_size=300))


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str], str]:
    body = draw(raw_bodies)
    headers: dict[str, str] = {}
    query = ""
    if draw(st.booleans()):
        body = bytes(cramjam.snappy.compress_raw(body)) if draw(st.booleans()) else body
        headers["x-compress-codec"] = draw(st.sampled_from(["2", "1", "x"]))
    if draw(st.booleans()):
        headers["x-crypt-codec"] = "1"
        query = "?stm=" + draw(st.sampled_from(["1700000000123", "", "²", "-1", "9" * 40, "x"]))
    if draw(st.booleans()):
        body = gzip.compress(body) if draw(st.booleans()) else body
        headers["content-encoding"] = draw(st.sampled_from(["gzip", "identity", "br", "x-gzip"]))
    headers["content-type"] = draw(
        st.sampled_from(["application/json", "application/protobuf", "text/plain", ""])
    )
    return body, headers, query


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = make_site(tmp_path, max_batch_events=50)
    yield s
    s.ingestor.stop()
    s.client.close()
    s.catalog.close()


@pytest.mark.parametrize(
    "path",
    ["/v3/projects/{ai}/collect", "/custom/{ai}/events", "/api/v1/projects/{ai}/events"],
    ids=["tracker", "saas", "native"],
)
def test_collectors_never_answer_5xx(site: Site, path: str) -> None:
    @given(request=requests())
    @settings(
        max_examples=CASES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(request: tuple[bytes, dict[str, str], str]) -> None:
        body, headers, query = request
        r = site.post(path + query, body, **{k.replace("-", "_"): v for k, v in headers.items()})
        assert r.status_code < 500, (path, headers, body[:200], r.text)

    check()


auth_fields = st.dictionaries(
    st.sampled_from(["project", "ai", "tm", "auth", "x"]),
    st.one_of(st.text(max_size=70), st.integers().map(str), st.just("")),
    max_size=5,
)


def test_auth_token_never_answers_5xx(world: World) -> None:
    real = world.auth_params()

    @given(
        fields=auth_fields,
        keep=st.booleans(),
        where=st.sampled_from(["query", "form", "text", "json", "raw"]),
        raw=st.binary(max_size=200),
        client_id=st.sampled_from([world.key.public_key, "", "junk", None]),
    )
    @settings(
        max_examples=CASES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(
        fields: dict[str, str], keep: bool, where: str, raw: bytes, client_id: str | None
    ) -> None:
        params: dict[str, Any] = {**real, **fields} if keep else fields
        headers = {"X-Client-Id": client_id} if client_id is not None else {}
        if where == "query":
            r = world.client.post("/auth/token", params=params, headers=headers)
        elif where == "form":
            r = world.client.post("/auth/token", data=params, headers=headers)
        elif where == "json":
            r = world.client.post("/auth/token", content=json.dumps(params), headers=headers)
        elif where == "text":
            body = "&".join(f"{k}={v}" for k, v in params.items())
            r = world.client.post(
                "/auth/token", content=body, headers={**headers, "Content-Type": "text/plain"}
            )
        else:
            r = world.client.post("/auth/token", content=raw, headers=headers)
        assert r.status_code < 500, (where, params, r.text)
        assert r.status_code in (200, 401, 413, 429)

    check()
