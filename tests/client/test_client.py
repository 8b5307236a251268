"""ExportClient against scripted HTTP answers: auth, pacing, 429, polling, exceptions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import click
import httpx
import pytest
from click.testing import CliRunner

from rawexport.api.auth import sign_auth
from rawexport.cli.pull import credentials, pull
from rawexport.client.client import (
    AuthError,
    ClientError,
    ExportClient,
    ExportFailed,
    NotExists,
    WaitTimeout,
)

BASE = "http://gio.test"
AI, UID, PUB, PRIV = "0123456789abcdef", "abcd1234", "P" * 32, "S" * 32


class FakeTime:
    """A clock that only moves when the client sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def envelope(status: str, links: list[str] | None = None, error: str = "") -> dict[str, object]:
    return {
        "status": status,
        "downloadLinks": links or [],
        "exportType": "day",
        "dataType": "page",
        "exportDate": "20250101",
        "exportVersion": "v2",
        "requestTime": "2025-01-02 10:00",
        "errorMsg": error,
    }


def make(
    handler: Callable[[httpx.Request], httpx.Response], t: FakeTime, **kw: Any
) -> ExportClient:
    http = httpx.Client(transport=httpx.MockTransport(handler))
    creds: dict[str, Any] = (
        {"token": kw.pop("token")}
        if "token" in kw
        else {"project_uid": UID, "public_key": PUB, "private_key": PRIV}
    )
    return ExportClient(
        BASE,
        AI,
        http=http,
        sleep=t.sleep,
        clock=t.clock,
        wall_ms=lambda: 1_700_000_000_000,
        **creds,
        **kw,
    )


def test_auth_code_is_signed_as_documented_and_sent_on_data_calls() -> None:
    seen: list[httpx.Request] = []

    def handler(r: httpx.Request) -> httpx.Response:
        seen.append(r)
        if r.url.path == "/auth/token":
            return httpx.Response(200, json={"status": "success", "code": "C" * 64})
        return httpx.Response(200, json=envelope("FINISHED", ["http://x/k"]))

    t = FakeTime()
    answer = make(handler, t).export("day", "page", "20250101")
    assert answer.status == "FINISHED" and answer.links == {"page": ["http://x/k"]}
    token_req, data_req = seen
    fields = dict(parse_qsl(token_req.content.decode()))
    assert token_req.headers["x-client-id"] == PUB
    assert fields == {
        "project": UID,
        "ai": AI,
        "tm": "1700000000000",
        "auth": sign_auth(PRIV, UID, AI, "1700000000000"),
    }
    assert data_req.url.path == f"/v2/insights/day/page/{AI}/20250101.json"
    assert data_req.headers["authorization"] == "C" * 64
    assert data_req.headers["x-client-id"] == PUB


def test_calls_are_paced_to_two_per_second() -> None:
    def handler(r: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=envelope("RUNNING"))

    t = FakeTime()
    client = make(handler, t, token="tok")
    for _ in range(5):
        client.export("day", "page", "20250101")
    assert t.sleeps == pytest.approx([0.5, 0.5, 0.5, 0.5])


def test_429_retry_after_is_honoured() -> None:
    answers = iter(
        [
            httpx.Response(429, headers={"retry-after": "3"}, json={"message": "x", "errors": []}),
            httpx.Response(429, headers={"retry-after": "1"}, json={"message": "x", "errors": []}),
            httpx.Response(200, json=envelope("FINISHED")),
        ]
    )
    t = FakeTime()
    client = make(lambda r: next(answers), t, token="tok", rate=1000.0)
    assert client.export("day", "page", "20250101").status == "FINISHED"
    assert [s for s in t.sleeps if s >= 1] == [3.0, 1.0]


def test_a_401_renews_the_auth_code_once() -> None:
    codes = iter(["old" * 16, "new" * 16])

    def handler(r: httpx.Request) -> httpx.Response:
        if r.url.path == "/auth/token":
            return httpx.Response(200, json={"status": "success", "code": next(codes)})
        if r.headers["authorization"] == "old" * 16:
            return httpx.Response(401, json={"message": "Unauthorized", "errors": []})
        return httpx.Response(200, json=envelope("FINISHED"))

    client = make(handler, FakeTime())
    assert client.export("day", "page", "20250101").status == "FINISHED"
    assert client.auth_code() == "new" * 16


def test_refused_credentials_raise_auth_error() -> None:
    def handler(r: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"message": "Unauthorized", "errors": []})

    with pytest.raises(AuthError, match="/auth/token"):
        make(handler, FakeTime()).export("day", "page", "20250101")
    with pytest.raises(AuthError, match="refused"):
        make(handler, FakeTime(), token="bad").export("day", "page", "20250101")
    assert AuthError.exit_code == 3


def test_polling_backs_off_with_a_cap_until_finished() -> None:
    statuses = iter(["RUNNING"] * 7 + ["FINISHED"])

    def handler(r: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=envelope(next(statuses)))

    t = FakeTime()
    client = make(handler, t, token="tok", rate=1000.0)
    assert client.wait("day", "page", "20250101", timeout=3600, max_poll=10).status == "FINISHED"
    polls = [s for s in t.sleeps if s > 0.01]
    assert len(polls) == 7
    assert polls[0] == pytest.approx(2, rel=0.11) and polls[1] == pytest.approx(4, rel=0.11)
    assert max(polls) <= 10 * 1.1 and polls[-1] == pytest.approx(10, rel=0.11)


def test_running_past_the_timeout_raises() -> None:
    def handler(r: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=envelope("RUNNING"))

    t = FakeTime()
    with pytest.raises(WaitTimeout, match="still RUNNING after 30 s") as e:
        make(handler, t, token="tok").wait("day", "page", "20250101", timeout=30)
    assert e.value.exit_code == 7
    assert 30 <= t.now - 1000.0 <= 31


def test_not_exists_and_error_are_distinct_exceptions() -> None:
    t = FakeTime()
    gone = make(lambda r: httpx.Response(200, json=envelope("NOT_EXISTS")), t, token="t")
    with pytest.raises(NotExists, match="NOT_EXISTS") as e1:
        gone.wait("day", "page", "20250101")
    failed = make(
        lambda r: httpx.Response(200, json=envelope("ERROR", error="disk full")), t, token="t"
    )
    with pytest.raises(ExportFailed, match="ERROR: disk full") as e2:
        failed.wait("day", "page", "20250101")
    assert (e1.value.exit_code, e2.value.exit_code) == (4, 5)


def test_connection_errors_and_5xx_are_retried_then_reported() -> None:
    calls = {"n": 0}

    def flaky(r: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            raise httpx.ConnectError("refused")
        if calls["n"] == 2:
            return httpx.Response(503, json={"message": "x", "errors": []})
        return httpx.Response(200, json=envelope("FINISHED"))

    assert make(flaky, FakeTime(), token="t").export("day", "page", "20250101").status == "FINISHED"

    def down(r: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    t = FakeTime()
    with pytest.raises(ClientError, match="refused"):
        make(down, t, token="t", retries=3).export("day", "page", "20250101")
    assert [s for s in t.sleeps if s > 0.01] == [0.5, 1.0, 2.0]


def test_all_types_answer_keeps_links_and_manifests_by_type() -> None:
    body = envelope("FINISHED")
    body.pop("dataType")
    body["downloadLinks"] = {"page": ["http://x/a"], "visit": []}
    body["manifest"] = {"page": ["http://x/m"], "visit": ["http://x/n"]}
    client = make(lambda r: httpx.Response(200, json=body), FakeTime(), token="t")
    answer = client.export("day", None, "20250101")
    assert answer.links == {"page": ["http://x/a"], "visit": []}
    assert answer.manifests == {"page": ["http://x/m"], "visit": ["http://x/n"]}


def test_credentials_come_from_flags_over_env_over_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "client.toml"
    config.write_text(
        '[profiles.shop]\nai = "aaaaaaaaaaaaaaaa"\nproject_uid = "uid00001"\n'
        'public_key = "pub"\nprivate_key = "priv"\nbase_url = "http://profile"\n'
    )
    monkeypatch.setenv("RAWEXPORT_CLIENT_CONFIG", str(config))
    for name in ("BASE_URL", "AI", "PROJECT_UID", "PUBLIC_KEY", "PRIVATE_KEY", "TOKEN"):
        monkeypatch.delenv(f"RAWEXPORT_CLIENT_{name}", raising=False)
    got = credentials("shop", {})
    assert (got["base_url"], got["ai"], got["private_key"]) == ("http://profile", "a" * 16, "priv")
    monkeypatch.setenv("RAWEXPORT_CLIENT_BASE_URL", "http://env")
    monkeypatch.setenv("RAWEXPORT_CLIENT_AI", "b" * 16)
    got = credentials("shop", {"ai": "c" * 16, "base_url": None})
    assert (got["base_url"], got["ai"], got["public_key"]) == ("http://env", "c" * 16, "pub")
    monkeypatch.delenv("RAWEXPORT_CLIENT_BASE_URL")
    assert credentials(None, {"token": "t"})["base_url"] == "https://www.growingio.com"
    with pytest.raises(click.UsageError, match="no credentials"):
        credentials(None, {"public_key": "p"})
    with pytest.raises(click.UsageError, match=r"no \[profiles.other\]"):
        credentials("other", {})


def test_cli_usage_errors_exit_2() -> None:
    runner = CliRunner()
    bad_date = runner.invoke(pull, ["--type", "hour", "--date", "20250101", "--token", "t"])
    assert bad_date.exit_code == 2 and "10-digit" in bad_date.output
    no_creds = runner.invoke(pull, ["--type", "day", "--date", "20250101"], env={
        f"RAWEXPORT_CLIENT_{n}": "" for n in ("AI", "TOKEN", "PROJECT_UID")
    })  # fmt: skip
    assert no_creds.exit_code == 2 and "no project ai" in no_creds.output
